"""The hydrogen plant: PV array -> buck converter (P&O MPPT) -> electrolyser stacks (+ battery) ->
separators -> tanks.

One `Plant` per PV array. Each step:

1. irradiance: the site's clear sky (Haurwitz, or Ineichen with its Linke turbidity) at the sun's
   zenith, dimmed by Kasten-Czeplak clouds; cell
   temperature by Faiman; the I-V curve scaled so its maximum is the PVWatts power (pv.py);
2. the converter's P&O sets the array voltage, limited to what the stacks and the battery can take;
3. the converter output (efficiency, no-load loss) is split equally between the running stacks; a
   battery on the converter takes the surplus and tops the stacks up to their minimum current;
4. each stack turns power into current (Ulleberg's U(I,T), solved for I), hydrogen (Faraday) and
heat;
5. separators lag the purity, tanks integrate the hydrogen, and the safety trips latch.

The array delivers what the converter passes on (P_pv = (P_stacks + P_battery + P_no_load) / eff),
so energy balances exactly every step; docs/twin-models.md has the equations.
"""

from __future__ import annotations

from gridtwin.twin import electrolyser as el
from gridtwin.twin import pv
from gridtwin.twin.topology import KINDS, Component


def _defaults(kind: str, **over) -> dict:
    p = {k: v.default for k, v in KINDS[kind].params.items()}
    p.update(over)
    return p


class Plant:
    def __init__(self, array: Component, topo, rng, twin_cfg, start):
        self.array = array
        self.rng = rng
        self.start = start
        self.lat, self.lon = twin_cfg.latitude, twin_cfg.longitude
        self.t_air = twin_cfg.t_air_c
        self.sky = pv.ClearSky(
            twin_cfg.get("clear_sky", "haurwitz"),
            twin_cfg.get("linke_turbidity", 3.0),
            twin_cfg.get("altitude_m", 0.0),
        )
        ap = array.params
        self.curve = pv.IVCurve(
            ap["vmp_v"], ap["voc_ratio"], ap["p_dc0_kw"] * 1000.0, ap["gamma_pdc"]
        )
        self.clouds = pv.Clouds(rng, ap["cloud_cover"], ap["cloud_sigma"], ap["cloud_tau_s"])
        by = topo.by_id
        kids = [by[c] for c in array.children]
        bucks = [c for c in kids if c.kind == "buck_converter"]
        # Stacks fed directly by the array get a built-in converter with default parameters,
        # sized to the array.
        self.converter = bucks[0] if bucks else None
        self.cp = (
            dict(self.converter.params)
            if self.converter
            else _defaults("buck_converter", rated_kw=ap["p_dc0_kw"])
        )
        under = [by[c] for c in (self.converter.children if self.converter else [])] + kids
        self.stacks = {
            c.id: el.Stack(c.params, self.t_air) for c in under if c.kind == "electrolyser"
        }
        bat = [c for c in under if c.kind == "battery"]
        self.battery = bat[0] if bat else None
        self.soc = self.battery.params["soc0_pct"] / 100.0 if self.battery else 0.0
        self.batt_kw = 0.0
        self.separators: dict[str, tuple[str, el.Separator]] = {}
        self.tanks: dict[str, tuple[list[str], el.Tank]] = {}
        for sid in self.stacks:
            for cid in by[sid].children:
                c = by[cid]
                if c.kind == "gas_separator":
                    self.separators[cid] = (sid, el.Separator(c.params))
        for c in topo.of_kind("h2_tank"):
            feeders = []
            for p in c.parents:
                feeders.append(p if p in self.stacks else self.separators.get(p, (None,))[0])
            feeders = [f for f in feeders if f in self.stacks]
            if feeders:
                self.tanks[c.id] = (feeders, el.Tank(c.params))
        self.mppt = pv.PerturbObserve(0.9 * self.curve.vmp_stc, self.cp["mppt_dv_v"])
        self.on = True
        self.ghi = self.ghi_cs = self.t_cell = self.cover = 0.0
        self.v = self.i = self.p_pv = self.p_out = self.p_loss = 0.0
        self.overrides: dict[tuple[str, str], float] = {}
        self.tank_over: dict[str, bool] = {t: False for t in self.tanks}

    def _stack_limits(self) -> tuple[float, float]:
        """Most and least power the running stacks can take now (W)."""
        hi = lo = 0.0
        for s in self.stacks.values():
            if s.tripped:
                continue
            p = s.p
            hi += p["cells"] * el.cell_voltage(p["i_max_a"], s.t_c, p) * p["i_max_a"]
            if p["min_current_a"] > 0:
                lo += (
                    p["cells"] * el.cell_voltage(p["min_current_a"], s.t_c, p) * p["min_current_a"]
                )
        return hi, lo

    def step(self, t: float, dt: float, events) -> None:
        ov = self.overrides
        aid = self.array.id
        ap = self.array.params
        when = pv.utc_at(self.start, t)
        zen = pv.solar_zenith_deg(when, self.lat, self.lon)
        self.ghi_cs = self.sky.ghi(zen, when)
        self.cover = self.clouds.step(dt)
        self.ghi = ov.get((aid, "ghi_wm2"), pv.kasten_czeplak(self.ghi_cs, self.cover))
        if not self.on:
            self.ghi = 0.0
        self.t_cell = ov.get(
            (aid, "t_cell_c"),
            pv.faiman_cell_temp(self.ghi, self.t_air, ap["wind_ms"], ap["u0"], ap["u1"]),
        )
        self.curve.set_conditions(self.ghi, self.t_cell)
        # What downstream can absorb, referred to the converter input.
        cp = self.cp
        hi, lo = self._stack_limits()
        bp = self.battery.params if self.battery else None
        batt_room = 0.0
        if bp and self.soc < 1.0:
            batt_room = min(
                bp["max_kw"] * 1000.0, (1.0 - self.soc) * bp["capacity_kwh"] * 3.6e6 / dt
            )
        limit_out = min(cp["rated_kw"] * 1000.0, hi + batt_room)
        limit_in = (limit_out + cp["no_load_kw"] * 1000.0) / cp["efficiency"]
        self.v = self.mppt.update(self.curve, limit_in)
        p_avail = self.curve.power(self.v)
        p_out = (
            max(0.0, p_avail * cp["efficiency"] - cp["no_load_kw"] * 1000.0) if p_avail > 0 else 0.0
        )
        p_out = min(p_out, limit_out)
        # Battery: surplus above the stacks' maximum charges it; below their minimum it tops up.
        to_stacks = min(p_out, hi)
        batt_w = 0.0
        if bp:
            if p_out > hi:
                batt_w = min(p_out - hi, batt_room)
            elif to_stacks < lo and self.soc > 0.05:
                avail_dis = min(bp["max_kw"] * 1000.0, self.soc * bp["capacity_kwh"] * 3.6e6 / dt)
                batt_w = -min(lo - to_stacks, avail_dis)
                to_stacks = to_stacks - batt_w
        running = [s for s in self.stacks.values() if not s.tripped]
        drawn = 0.0
        for sid, s in self.stacks.items():
            if (sid, "t_c") in ov:
                s.t_c = ov[(sid, "t_c")]
            share = to_stacks / len(running) if (running and not s.tripped) else 0.0
            drawn += s.operate(share, dt)
        # The stacks may take slightly less than offered (current below minimum, solver cap): the
        # converter then passes less on and the array sits off its set point for this step.
        if bp and batt_w < 0:
            batt_w = -min(-batt_w, max(0.0, drawn - min(p_out, hi)))
            if drawn <= 0:
                batt_w = 0.0
        from_conv = drawn + batt_w
        if from_conv > 0:
            self.p_out = from_conv
            self.p_pv = (from_conv + cp["no_load_kw"] * 1000.0) / cp["efficiency"]
        else:
            # Nothing to deliver: the converter idles and the battery alone feeds the stacks.
            self.p_out = 0.0
            self.p_pv = 0.0
        self.p_loss = self.p_pv - self.p_out
        self.batt_kw = batt_w / 1000.0
        if bp:
            # Coulomb counting at the nominal voltage; losses on the way in and out.
            i_batt = (batt_w * bp["efficiency"] if batt_w > 0 else batt_w / bp["efficiency"]) / bp[
                "voltage_v"
            ]
            ah = bp["capacity_kwh"] * 1000.0 / bp["voltage_v"]
            self.soc = min(1.0, max(0.0, self.soc + i_batt * dt / 3600.0 / ah))
        self.i = self.curve.current(self.v) if self.p_pv > 0 else 0.0
        if self.i > 0:
            self.v = self.p_pv / self.i
        # Gas path and trips.
        hto_seen: dict[str, float] = {sid: s.hto_pct for sid, s in self.stacks.items()}
        for sep_id, (sid, sep) in self.separators.items():
            hto_seen[sid] = sep.update(self.stacks[sid].hto_pct, dt)
        for tid, (feeders, tank) in self.tanks.items():
            if (tid, "p_bar") in ov:
                tank.n_mol = ov[(tid, "p_bar")] * 1e5 * tank.v / (el.R_GAS * tank.t_k)
            tank.update(sum(self.stacks[f].n_h2 for f in feeders), dt)
            p_max = tank.p["p_max_bar"]
            over = tank.p_bar > p_max if not self.tank_over[tid] else tank.p_bar > 0.95 * p_max
            if over != self.tank_over[tid]:
                self.tank_over[tid] = over
                events.set(t, tid, "trip:over_pressure", over, p_bar=round(tank.p_bar, 2))
        for sid, s in self.stacks.items():
            tank_over = any(self.tank_over[tid] for tid, (f, _) in self.tanks.items() if sid in f)
            started, cleared = s.check_trips(hto_seen[sid], tank_over, dt)
            if started:
                events.start(
                    t,
                    sid,
                    f"trip:{started}",
                    u_cell_v=round(s.u_cell, 3),
                    t_c=round(s.t_c, 2),
                    hto_pct=round(hto_seen[sid], 3),
                )
            if cleared:
                events.clear(t, sid, f"trip:{cleared}")

    def energy_terms(self) -> dict[str, float]:
        """Instantaneous power terms (W) for the balance P_pv = loss + stacks + battery."""
        return {
            "pv": self.p_pv,
            "converter_loss": self.p_loss,
            "stacks": sum(s.p_w for s in self.stacks.values()),
            "battery": self.batt_kw * 1000.0,
        }

    def hto(self, sid: str) -> float:
        for sep_id, (s, sep) in self.separators.items():
            if s == sid:
                return sep.hto_pct
        return self.stacks[sid].hto_pct


def nm3h(mol_s: float) -> float:
    return mol_s * el.NM3_PER_MOL * 3600.0
