"""Energy assets at a grid connection: the seed system of issue #16, as twin kinds.

A ``grid_meter`` is the point of common coupling (a source: the public grid behind it); its children
are ``pv_inverter`` (grid-tied, DC from its own array, an efficiency curve, three-phase output),
``bess`` (SoC, charge and discharge energy, self-consumption dispatch) and ``load_panel``
(a feeder with a power factor). Each step, in this order: the panels draw, the inverters convert,
the stores take the surplus or cover the deficit within their limits, and the meter books the rest
as import or export. Signs at the meter: ``p_kw`` > 0 imports. Every energy counter integrates the
same per-step powers, so the balance

    import_kwh - export_kwh = load_kwh + charge_kwh - discharge_kwh - pv_kwh

holds to rounding (tests/twin/test_twin_assets.py), and a store's stored energy changes by
``charge_kwh * efficiency - discharge_kwh / efficiency``.

Inverter efficiency (Schmidt and Sauer's loss model, the one behind the CEC and EN 50530 curves):
losses in per unit of the rating are ``l0 + l1 x + l2 x^2`` with x = P_ac / rated, so
``P_dc = P_ac + rated (l0 + l1 x + l2 x^2)`` is solved for P_ac each step; below ``l0`` of DC the
inverter stands by (no output), above the rating it clips.
"""

from __future__ import annotations

import math

import numpy as np

from gridtwin.twin import pv

SQRT3 = math.sqrt(3.0)


def inverter_ac_pu(p_dc_pu: float, l0: float, l1: float, l2: float) -> float:
    """AC output in per unit of the rating for a DC input in per unit (the loss model solved for
    x)."""
    if p_dc_pu <= l0:
        return 0.0
    if l2 <= 0.0:
        return (p_dc_pu - l0) / (1.0 + l1)
    b = 1.0 + l1
    return (-b + math.sqrt(b * b + 4.0 * l2 * (p_dc_pu - l0))) / (2.0 * l2)


def inverter_efficiency(x: float, l0: float, l1: float, l2: float) -> float:
    """Efficiency at AC output x (per unit): x / (x + losses)."""
    return x / (x + l0 + l1 * x + l2 * x * x) if x > 0 else 0.0


def _phases(p_kw: float, q_kvar: float, v_ll: float, out: dict) -> None:
    """Three balanced phases from P, Q and the line voltage (the phase values a meter shows)."""
    v_ln = v_ll / SQRT3
    s_kva = math.hypot(p_kw, q_kvar)
    i = s_kva * 1000.0 / (3.0 * v_ln) if v_ln > 0 else 0.0
    for ph in ("l1", "l2", "l3"):
        out[f"v_{ph}_v"] = v_ln
        out[f"i_{ph}_a"] = i


class Microgrid:
    """One grid connection and the assets below it; stepped by the Twin after the plants."""

    def __init__(self, meter, topo, seed: int, twin_cfg, start):
        self.meter = meter
        by = topo.by_id
        kids = [by[c] for c in meter.children]
        self.inverters = [c for c in kids if c.kind == "pv_inverter"]
        self.stores = [c for c in kids if c.kind == "bess"]
        self.panels = [c for c in kids if c.kind == "load_panel"]
        self.ids = [meter.id] + [c.id for c in kids]
        # its own random stream: a site without these kinds draws exactly as before
        self.rng = np.random.default_rng([seed, 16, meter.index])
        self.lat, self.lon, self.t_air = (
            twin_cfg.latitude,
            twin_cfg.longitude,
            twin_cfg.get("t_air_c", 20.0),
        )
        self.sky = pv.ClearSky(
            twin_cfg.get("clear_sky", "haurwitz"),
            twin_cfg.get("linke_turbidity", 3.0),
            twin_cfg.get("altitude_m", 0.0),
        )
        self.start = start
        self.clouds = {
            c.id: pv.Clouds(
                self.rng, c.params["cloud_cover"], c.params["cloud_sigma"], c.params["cloud_tau_s"]
            )
            for c in self.inverters
        }
        self.m: dict[str, dict] = {cid: {} for cid in self.ids}
        self.status: dict[str, str] = {cid: "ok" for cid in self.ids}
        self.soc = {c.id: c.params["soc0_pct"] / 100.0 for c in self.stores}
        self.energy = {cid: {} for cid in self.ids}
        self.f_hz = meter.params["f_nom_hz"]
        self.noise = {c.id: 0.0 for c in self.panels}
        self.load_kw = {c.id: c.params["load_kw"] for c in self.panels}
        self.step(0.0, 0.0, None)

    def _add(self, cid: str, key: str, kwh: float) -> float:
        e = self.energy[cid]
        e[key] = e.get(key, 0.0) + kwh
        return e[key]

    def step(self, t: float, dt: float, ev) -> None:
        h = dt / 3600.0
        mp = self.meter.params
        # Panels: mean demand with first-order (Ornstein-Uhlenbeck) noise around it.
        load_p = load_q = 0.0
        for c in self.panels:
            p = c.params
            tau = p["noise_tau_s"]
            if dt > 0 and p["noise_pct"] > 0:
                a = math.exp(-dt / tau)
                self.noise[c.id] = a * self.noise[c.id] + math.sqrt(1 - a * a) * float(
                    self.rng.standard_normal()
                )
            kw = max(0.0, self.load_kw[c.id] * (1.0 + p["noise_pct"] / 100.0 * self.noise[c.id]))
            kvar = kw * math.tan(math.acos(p["pf"]))
            load_p += kw
            load_q += kvar
            m = {
                "p_kw": kw,
                "q_kvar": kvar,
                "pf": p["pf"],
                "e_total_kwh": self._add(c.id, "e", kw * h),
            }
            _phases(kw, kvar, mp["voltage_v"], m)
            self.m[c.id] = m
        # Inverters: irradiance -> DC (PVWatts) -> AC through the loss curve.
        pv_p = 0.0
        when = pv.utc_at(self.start, t)
        zen = pv.solar_zenith_deg(when, self.lat, self.lon)
        ghi_cs = self.sky.ghi(zen, when)
        for c in self.inverters:
            p = c.params
            cover = self.clouds[c.id].step(dt) if dt > 0 else p["cloud_cover"]
            ghi = pv.kasten_czeplak(ghi_cs, cover)
            t_cell = pv.faiman_cell_temp(ghi, self.t_air)
            p_dc = pv.pvwatts_dc(ghi, t_cell, p["p_dc0_kw"], p["gamma_pdc"])
            rated = p["rated_kw"]
            l0, l1, l2 = p["loss_nl_pct"] / 100.0, p["loss_v_pct"] / 100.0, p["loss_r_pct"] / 100.0
            x = min(inverter_ac_pu(p_dc / rated, l0, l1, l2), 1.0)  # clipping: the MPPT backs off
            p_ac = x * rated
            used_dc = p_ac + rated * (l0 + l1 * x + l2 * x * x) if x > 0 else 0.0
            pv_p += p_ac
            eff = inverter_efficiency(x, l0, l1, l2)
            m = {
                "p_kw": p_ac,
                "q_kvar": 0.0,
                "p_dc_kw": used_dc,
                "irr_wm2": ghi,
                "eff_pct": 100.0 * eff,
                "t_c": self.t_air + p["t_rise_c"] * x,
                "f_hz": self.f_hz,
                "e_total_kwh": self._add(c.id, "e", p_ac * h),
                "state": 1 if x > 0 else 0,
            }
            _phases(p_ac, 0.0, mp["voltage_v"], m)
            self.m[c.id] = m
            self.status[c.id] = (
                ("clipping" if x >= 1.0 and p_dc > used_dc else "mppt") if x > 0 else "standby"
            )
        # Stores: self-consumption; the surplus charges them, the deficit discharges them, each
        # within its limits.
        net = load_p - pv_p  # what the site needs from the grid before the stores act
        bat_p = 0.0
        for c in self.stores:
            p = c.params
            cap, eff = p["capacity_kwh"], p["efficiency"]
            soc = self.soc[c.id]
            kw = 0.0
            if dt > 0 and net < 0:  # charge (AC side), limited by room left
                room = max(0.0, p["soc_max_pct"] / 100.0 - soc) * cap
                kw = -min(-net, p["max_kw"], room / (eff * h))
                soc += -kw * eff * h / cap
            elif dt > 0 and net > 0:  # discharge, limited by energy above the floor
                avail = max(0.0, soc - p["soc_min_pct"] / 100.0) * cap
                kw = min(net, p["max_kw"], avail * eff / h)
                soc -= kw / eff * h / cap
            self.soc[c.id] = soc
            net -= kw
            bat_p += kw
            m = {
                "p_kw": kw,
                "soc_pct": 100.0 * soc,
                "e_stored_kwh": soc * cap,
                "e_charge_kwh": self._add(c.id, "c", max(0.0, -kw) * h),
                "e_discharge_kwh": self._add(c.id, "d", max(0.0, kw) * h),
            }
            _phases(kw, 0.0, mp["voltage_v"], m)
            self.m[c.id] = m
            self.status[c.id] = "charging" if kw < 0 else "discharging" if kw > 0 else "idle"
        # Meter: what is left is the grid's.
        if dt > 0 and mp["f_noise_hz"] > 0:
            self.f_hz = mp["f_nom_hz"] + mp["f_noise_hz"] * float(self.rng.standard_normal())
        grid_p = load_p - pv_p - bat_p
        s = math.hypot(grid_p, load_q)
        m = {
            "p_kw": grid_p,
            "q_kvar": load_q,
            "pf": abs(grid_p) / s if s > 0 else 1.0,
            "f_hz": self.f_hz,
            "p_import_kw": max(0.0, grid_p),
            "p_export_kw": max(0.0, -grid_p),
            "e_import_kwh": self._add(self.meter.id, "i", max(0.0, grid_p) * h),
            "e_export_kwh": self._add(self.meter.id, "x", max(0.0, -grid_p) * h),
        }
        _phases(grid_p, load_q, mp["voltage_v"], m)
        self.m[self.meter.id] = m
        self.status[self.meter.id] = (
            "importing" if grid_p > 1e-9 else "exporting" if grid_p < -1e-9 else "balanced"
        )

    def metrics(self, cid: str) -> tuple[str, dict]:
        return self.status[cid], dict(self.m[cid])

    def set_load(self, cid: str, kw: float) -> None:
        self.load_kw[cid] = float(kw)


def build(topo, seed: int, twin_cfg, start) -> list[Microgrid]:
    return [
        Microgrid(c, topo, seed, twin_cfg, start) for c in topo.components if c.kind == "grid_meter"
    ]
