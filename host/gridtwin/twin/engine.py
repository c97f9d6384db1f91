"""The twin engine: a fixed-step, seeded simulation of the whole site.

API (what the daemon, `gridtwin demo` and the virtual fleet use)::

    from gridtwin.twin import Twin, demo_scenario

    twin = Twin.from_site(site, seed=7)        # seed defaults to [twin].seed
    twin.schedule(demo_scenario(twin))         # timed actions, applied inside step()
    twin.step()                                # advance one [twin].step_s
    twin.run_until(60.0)                       # as fast as the CPU allows
    twin.t                                     # simulated seconds since start
    twin.state()    # {component id: {"kind", "status", "m": {metric: value}, "units", ...}}
    twin.drain_events()  # new Events since the last drain: (t, component, type, state, detail)
    twin.active_events() # conditions still open (alerts to keep retained)
    twin.apply("util_a", "set_fault", {"on": True})   # set_fault, set_load, set_supply, reset
    twin.override("srv_a", "p_kw", 4.2)        # hardware in the loop: a node's reading wins
    twin.override("srv_a", "p_kw", None)       # ... and hands back to the model
    twin.inject(Fault("load_spike", "srv_a", 60, 120))   # labelled ground truth (twin.faults)

Determinism: every random draw comes from one numpy Generator seeded from the seed, drawn in the
same order every step, so two twins with the same site and seed produce identical states.
Real time: `gridtwin.twin.scenario.run_realtime` paces `step()` against a clock at [twin].speed.

Order inside a step (at time t, to t + dt):
  due scheduled actions -> sources, generators and transfer switches (they see the chain as it was
  at the end of the previous step: the relays' one-step detection delay) -> AC power flow ->
  UPS and load events -> plants (PV, stacks, tanks) -> grid buses -> t += dt.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gridtwin.errors import GridTwinError
from gridtwin.twin import assets as assets_mod
from gridtwin.twin import plant as plant_mod
from gridtwin.twin.events import EventLog
from gridtwin.twin.grid import GridBus
from gridtwin.twin.powerflow import ACNetwork
from gridtwin.twin.topology import KINDS, Topology, build

AC_KINDS = {
    "utility",
    "generator",
    "transfer_switch",
    "transformer",
    "distribution",
    "ups",
    "pdu",
    "server",
}

UNITS = {
    "_kw": "kW",
    "_pct": "%",
    "_v": "V",
    "_a": "A",
    "_c": "°C",
    "_hz": "Hz",
    "_bar": "bar",
    "_kg": "kg",
    "_nm3h": "Nm³/h",
    "_wm2": "W/m²",
    "_acm2": "A/cm²",
    "_mw": "MW",
    "_s": "s",
    "_hzs": "Hz/s",
    "_kwh": "kWh",
    "_mol": "mol",
    "_kvar": "kvar",
}


def unit_of(metric: str) -> str:
    for suffix, unit in UNITS.items():
        if metric.endswith(suffix):
            return unit
    return ""


class TwinCommandError(GridTwinError):
    """A command or override the twin cannot carry out (unknown component, command or argument)."""

    exit_code = 2


# Metrics that feed the model when overridden (the rest replace only the reported value).
INPUT_METRICS = {
    "server": {"p_kw"},
    "ups": {"soc_pct"},
    "utility": {"on"},
    "pv_array": {"ghi_wm2", "t_cell_c"},
    "electrolyser": {"t_c"},
    "h2_tank": {"p_bar"},
}


class _Generator:
    def __init__(self, i: int, p: dict):
        self.i, self.p = i, p
        self.state = "off"  # off | starting | running | cooldown
        self.timer = 0.0
        self.failed = False


class _Switch:
    def __init__(self, i: int, p: dict, parents: list[int]):
        self.i, self.p, self.parents = i, p, parents
        self.position = 0  # index into parents; -1 = open
        self.normal_ok_for = 0.0
        self.normal_lost_for = 0.0  # how long the normal source has been seen dead (detection)
        self.standby_ok_for = 0.0  # how long a standby source has been seen live (transfer)
        # when the switch's output lost power (NFPA 110 clock)
        self.out_lost_at: float | None = None


class Twin:
    def __init__(self, topo: Topology, seed: int | None = None):
        self.topo = topo
        cfg = topo.twin
        self.seed = cfg.seed if seed is None else seed
        self.dt = cfg.step_s
        self.speed = cfg.speed
        self.rng = np.random.default_rng(self.seed)
        self.t = 0.0
        self.steps = 0
        self.log = EventLog()
        self.overrides: dict[tuple[str, str], float] = {}
        self._actions: list = []
        self.faults = None  # gridtwin.twin.faults.FaultInjector, made by the first inject()
        comps = topo.components
        by = topo.by_id
        # The AC chain: AC kinds and the meters hanging in it.
        ac_ids: set[str] = set()
        for c in comps:
            if c.kind in AC_KINDS or (c.kind == "meter" and all(p in ac_ids for p in c.parents)):
                ac_ids.add(c.id)
        self.ac = ACNetwork([c for c in comps if c.id in ac_ids])
        self.ac_ids = ac_ids
        ac = self.ac
        self.utilities = [ac.pos[c.id] for c in comps if c.kind == "utility"]
        self.util_on = {i: True for i in self.utilities}
        self.generators = {
            ac.pos[c.id]: _Generator(ac.pos[c.id], c.params) for c in comps if c.kind == "generator"
        }
        self.switches = [
            _Switch(ac.pos[c.id], c.params, [ac.pos[p] for p in c.parents])
            for c in comps
            if c.kind == "transfer_switch"
        ]
        ac.avail[self.utilities] = True
        # A generator that no transfer switch starts is prime power: it runs from t = 0.
        standby = {p for sw in self.switches for p in sw.parents[1:]}
        self.prime = [i for i in self.generators if i not in standby]
        for i in self.prime:
            self.generators[i].state = "running"
        self._prev_en = ac.en.copy()
        self._prev_in_ok = ac.in_ok.copy()
        self._low = np.zeros(len(ac.ups_idx), dtype=bool)
        self._low_th = np.array([by[ac.ids[i]].params["low_soc_pct"] for i in ac.ups_idx])
        start = topo.start_datetime()
        self.plants = [
            plant_mod.Plant(c, topo, self.rng, cfg, start) for c in comps if c.kind == "pv_array"
        ]
        self.plant_of = {}
        for pl in self.plants:
            for cid in (
                [pl.array.id, *(pl.stacks), *(pl.separators), *(pl.tanks)]
                + ([pl.converter.id] if pl.converter else [])
                + ([pl.battery.id] if pl.battery else [])
            ):
                self.plant_of[cid] = pl
        # NFPA 110: switches with a standby generator must restore power within the declared type's
        # seconds.
        self.nfpa110_type = cfg.get("nfpa110_type", 0)
        self._nfpa = (
            [
                sw
                for sw in self.switches
                if any(by[ac.ids[g]].kind == "generator" for g in sw.parents[1:])
            ]
            if self.nfpa110_type
            else []
        )
        self.grids = {c.id: GridBus(c.params, self.rng) for c in comps if c.kind == "grid_bus"}
        self.microgrids = assets_mod.build(topo, self.seed, cfg, start)  # issue #16's energy assets
        self.asset_of = {cid: mg for mg in self.microgrids for cid in mg.ids}
        self._grid_alarm = {g: False for g in self.grids}
        self._restoring = False
        # Settle the chain at t=0 without advancing time, so state() is meaningful before step().
        ac.step(self.dt, np.random.default_rng(0))
        self._prev_en = ac.en.copy()
        self._prev_in_ok = ac.in_ok.copy()
        if len(ac.ups_idx):
            ac.soc[:] = np.array([by[ac.ids[i]].params["soc0_pct"] / 100.0 for i in ac.ups_idx])

    @classmethod
    def from_site(cls, site, seed: int | None = None) -> "Twin":
        return cls(build(site), seed)

    # --- running -------------------------------------------------------------------------------

    def schedule(self, actions) -> None:
        """Add timed actions (a Scenario or a list of Action); each is applied once t reaches it.
        A Scenario's faults are injected (gridtwin.twin.faults)."""
        self._actions.extend(getattr(actions, "actions", actions))
        self._actions.sort(key=lambda a: a.t)
        for f in getattr(actions, "faults", ()):
            self.inject(f)

    def inject(self, fault) -> dict:
        """Inject a gridtwin.twin.faults.Fault; returns its label (node, metric, start, end)."""
        if self.faults is None:
            from gridtwin.twin.faults import FaultInjector

            self.faults = FaultInjector(self)
        return self.faults.add(fault)

    def run_until(self, t_end: float) -> None:
        while self.t < t_end - 1e-9:
            self.step()

    def step(self) -> None:
        dt, t = self.dt, self.t
        while self._actions and self._actions[0].t <= t + 1e-9:
            a = self._actions.pop(0)
            self.apply(a.component, a.command, a.args)
        if self.faults is not None:
            self.faults.before_step(t, dt)
        ev = self.log
        ac = self.ac
        ids = ac.ids
        # Sources.
        for i in self.utilities:
            on = self.util_on[i]
            o = self.overrides.get((ids[i], "on"))
            if o is not None:
                on = bool(o)
            if on != bool(ac.avail[i]):
                ev.set(t, ids[i], "utility_lost", not on)
                self._restoring = True
            ac.avail[i] = on
        # Transfer switches decide on the chain as last seen.
        want_gen: set[int] = set()
        for sw in self.switches:
            normal = sw.parents[0]
            normal_ok = bool(ac.en[normal])
            standby = sw.parents[1:]
            sid = ids[sw.i]
            sw.normal_ok_for = sw.normal_ok_for + dt if normal_ok else 0.0
            sw.normal_lost_for = 0.0 if normal_ok else sw.normal_lost_for + dt
            pos = sw.position
            # Detection: the normal source must stay dead detect_s (at least the one step the relay
            # needs to see it) before the switch opens and signals its standby generator.
            if pos == 0 and not normal_ok and sw.normal_lost_for >= sw.p["detect_s"] - 1e-9:
                pos = -1
            if pos < 0 and not normal_ok:
                want_gen.update(standby)
                live = [s for s in standby if ac.en[s]]
                # Transfer: the standby must be ready transfer_s (at least one step) before the
                # switch closes.
                sw.standby_ok_for = sw.standby_ok_for + dt if live else 0.0
                if live and sw.standby_ok_for >= sw.p["transfer_s"] - 1e-9:
                    pos = sw.parents.index(live[0])
            elif pos > 0:
                if normal_ok and sw.normal_ok_for >= sw.p["retransfer_delay_s"]:
                    pos = 0
                elif not ac.en[sw.parents[pos]]:
                    pos = -1
                    want_gen.update(standby)
                else:
                    want_gen.add(sw.parents[pos])
            elif pos == -1 and normal_ok:
                pos = 0
            if pos >= 0:
                sw.standby_ok_for = 0.0
            if pos != sw.position:
                if pos > 0:
                    ev.start(t, sid, "transfer_to_generator", source=ids[sw.parents[pos]])
                elif sw.position > 0:
                    ev.clear(t, sid, "transfer_to_generator", source=ids[normal])
                    self._restoring = True
                sw.position = pos
                ac.select(sw.i, pos)
        want_gen.update(self.prime)
        for i, g in self.generators.items():
            want = i in want_gen and not g.failed
            if g.failed:
                g.state = "off"
            elif want and g.state in ("off", "cooldown"):
                if g.state == "off":
                    g.state, g.timer = "starting", g.p["start_delay_s"]
                    ev.info(t, ids[i], "generator_start")
                else:
                    g.state = "running"
            elif g.state == "starting":
                g.timer -= dt
                if g.timer <= 1e-9:
                    g.state = "running"
            elif g.state == "running" and not want:
                g.state, g.timer = "cooldown", g.p["cooldown_s"]
            elif g.state == "cooldown":
                g.timer -= dt
                if g.timer <= 1e-9:
                    g.state = "off"
            ac.avail[i] = g.state in ("running", "cooldown")
        # HIL: a UPS's measured state of charge replaces the counted one.
        for k, i in enumerate(ac.ups_idx):
            o = self.overrides.get((ids[i], "soc_pct"))
            if o is not None:
                ac.soc[k] = o / 100.0
        ac.step(dt, self.rng)
        self._ac_events(t)
        if self._nfpa:
            self._nfpa110(t)
        for pl in self.plants:
            pl.step(t, dt, ev)
        for mg in self.microgrids:
            mg.step(t, dt, ev)
        for gid, g in self.grids.items():
            g.step(dt)
            dev = abs(g.f_hz - g.p["f_nom_hz"])
            alarm = self._grid_alarm[gid]
            on = dev > g.p["alarm_hz"] if not alarm else dev > 0.8 * g.p["alarm_hz"]
            if on != alarm:
                self._grid_alarm[gid] = on
                ev.set(t, gid, "frequency_deviation", on, f_hz=round(g.f_hz, 4))
        self.t = round(t + dt, 9)
        self.steps += 1

    def _ac_events(self, t: float) -> None:
        ac, ev, ids = self.ac, self.log, self.ac.ids
        for i in ac.new_trips:
            ev.start(
                t,
                ids[i],
                "trip:overload",
                p_kw=round(float(ac.p_out[i]), 2),
                capacity_kw=float(ac.cap[i]),
            )
        changed = np.nonzero((ac.en != self._prev_en) | (ac.in_ok != self._prev_in_ok))[0]
        for i in changed:
            cid = ids[i]
            code = ac.code[i]
            if code == 5:  # server
                ev.set(t, cid, "load_dropped", not ac.en[i])
            elif code == 4:  # UPS
                k = ac.ups_of[i]
                ev.set(
                    t,
                    cid,
                    "ups_on_battery",
                    bool(ac.en[i] and not ac.in_ok[i]),
                    soc_pct=round(float(ac.soc[k]) * 100, 2),
                )
                ev.set(t, cid, "supply_lost", not ac.en[i])
            elif code not in (1, 2):
                ev.set(t, cid, "supply_lost", not ac.en[i])
        if len(ac.ups_idx):
            soc = ac.soc * 100.0
            low_th = self._low_th
            low = np.where(self._low, soc < low_th + 5.0, soc < low_th)  # 5 % hysteresis
            for k in np.nonzero(low != self._low)[0]:
                ev.set(
                    t,
                    ids[ac.ups_idx[k]],
                    "battery_low",
                    bool(low[k]),
                    soc_pct=round(float(soc[k]), 2),
                )
            self._low = low
        self._prev_en = ac.en.copy()
        self._prev_in_ok = ac.in_ok.copy()
        if self._restoring:
            # Restored: every utility back, every switch on its normal source, every load fed again.
            if (
                all(sw.position == 0 for sw in self.switches)
                and bool(ac.en[ac.load_idx].all())
                and bool(ac.avail[self.utilities].all())
            ):
                ev.info(t, "site", "restored")
                self._restoring = False

    def _nfpa110(self, t: float) -> None:
        """Time each outage at the switches' outputs; `nfpa110_missed` starts when one outlasts the
        type."""
        ac, ev, limit = self.ac, self.log, self.nfpa110_type
        for sw in self._nfpa:
            sid = self.ac.ids[sw.i]
            if ac.en[sw.i]:
                if sw.out_lost_at is not None:
                    after = round(t - sw.out_lost_at, 9)
                    ev.clear(t, sid, "nfpa110_missed", restored_after_s=after, type_s=limit)
                    sw.out_lost_at = None
            elif sw.out_lost_at is None:
                sw.out_lost_at = t  # the output went dark in this step
            elif t - sw.out_lost_at >= limit - 1e-9:
                ev.start(
                    t, sid, "nfpa110_missed", type_s=limit, outage_s=round(t - sw.out_lost_at, 9)
                )

    # --- commands and overrides ------------------------------------------------------------------

    def _component(self, cid: str):
        c = self.topo.by_id.get(cid)
        if c is None:
            raise TwinCommandError(
                f"the twin has no component '{cid}'",
                hint=f"known: {', '.join(list(self.topo.by_id)[:20])}",
            )
        return c

    def apply(self, component_id: str, command: str, args: dict | None = None) -> dict:
        """Carry out a command on a component; returns a small result dict. Raises
        TwinCommandError."""
        args = dict(args or {})
        c = self._component(component_id)
        kind, t = c.kind, self.t
        if (
            kind in ("electrolyser", "h2_tank", "gas_separator", "battery", "buck_converter")
            and component_id not in self.plant_of
        ):
            raise TwinCommandError(
                f"'{component_id}' ({kind}) is not connected to a PV plant",
                hint="give it a parent chain up to a pv_array in site.toml",
            )
        on = bool(args.get("on", True))
        ac = self.ac
        i = ac.pos.get(component_id)
        if command == "set_supply":
            if kind == "utility":
                self.util_on[i] = bool(args.get("on", True))
            elif kind == "pv_array":
                self.plant_of[component_id].on = bool(args.get("on", True))
            else:
                raise TwinCommandError(
                    f"set_supply does not apply to a {kind}",
                    hint="use it on a utility or a pv_array",
                )
            return {"ok": True}
        if command == "set_fault":
            if kind == "utility":
                self.util_on[i] = not on
            elif kind == "generator":
                self.generators[i].failed = on
            elif kind == "grid_bus":
                self.grids[component_id].lost_mw = (
                    float(args.get("gen_loss_mw", 0.0)) if on else 0.0
                )
            elif kind == "electrolyser":
                s = self.plant_of[component_id].stacks[component_id]
                if args.get("what") == "cooling":
                    s.cooling_ok = not on
                elif on and not s.tripped:
                    s.tripped, s.clear_for = "fault", -math.inf
                    self.log.start(t, component_id, "trip:fault")
                elif not on and s.tripped == "fault":
                    s.tripped = None
                    self.log.clear(t, component_id, "trip:fault")
            elif kind == "pv_array":
                self.plant_of[component_id].on = not on
            elif i is not None:
                ac.fault[i] = on
                self.log.set(t, component_id, "trip:fault", on)
            else:
                raise TwinCommandError(f"set_fault does not apply to a {kind}")
            return {"ok": True}
        if command == "set_load":
            if kind == "server":
                k = int(np.searchsorted(ac.load_idx, i))
                ac.base_kw[k] = float(args["kw"])
            elif kind == "grid_bus":
                self.grids[component_id].load_mw = float(args["mw"])
            elif kind == "h2_tank":
                self.plant_of[component_id].tanks[component_id][1].p["offtake_nm3h"] = float(
                    args["nm3h"]
                )
            elif kind == "load_panel":
                self.asset_of[component_id].set_load(component_id, float(args["kw"]))
            else:
                raise TwinCommandError(
                    f"set_load does not apply to a {kind}",
                    hint="servers (kw), load panels (kw), grid buses (mw), tanks (nm3h)",
                )
            return {"ok": True}
        if command == "reset":
            if i is not None and ac.tripped[i]:
                ac.tripped[i] = False
                ac.over_s[i] = 0.0
                self.log.clear(t, component_id, "trip:overload")
            if kind == "electrolyser":
                s = self.plant_of[component_id].stacks[component_id]
                if s.tripped:
                    self.log.clear(t, component_id, f"trip:{s.tripped}")
                    s.tripped = None
            return {"ok": True}
        raise TwinCommandError(
            f"unknown command '{command}'", hint="use set_fault, set_load, set_supply or reset"
        )

    def override(self, component_id: str, metric: str, value: float | None) -> None:
        """Hardware in the loop: `value` replaces the simulated `metric` (None hands it back)."""
        c = self._component(component_id)
        key = (component_id, metric)
        if value is None:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = float(value)
        if c.kind == "server" and metric == "p_kw":
            k = int(np.searchsorted(self.ac.load_idx, self.ac.pos[component_id]))
            self.ac.demand_override[k] = np.nan if value is None else float(value)
        pl = self.plant_of.get(component_id)
        if pl is not None:
            if value is None:
                pl.overrides.pop(key, None)
            else:
                pl.overrides[key] = float(value)

    # --- events and state ----------------------------------------------------------------------

    @property
    def events(self):
        """Every event since start (a list of Event, oldest first)."""
        return self.log.all

    def drain_events(self):
        return self.log.drain()

    def active_events(self):
        return self.log.active()

    def _metrics(self, c) -> tuple[str, dict[str, Any]]:
        cid, kind = c.id, c.kind
        ac = self.ac
        if cid in self.ac_ids:
            i = ac.pos[cid]
            en = bool(ac.en[i])
            m: dict[str, Any] = {"p_kw": float(ac.p_out[i]), "energized": int(en)}
            status = "ok" if en else "off"
            if ac.tripped[i] or ac.fault[i]:
                status = "tripped" if ac.tripped[i] else "fault"
            if kind not in ("server", "utility", "generator", "meter"):
                m["p_in_kw"] = float(ac.p_in[i])
                m["loss_kw"] = float(ac.loss[i])
            if math.isfinite(ac.cap[i]):
                m["load_pct"] = float(100.0 * ac.p_out[i] / ac.cap[i])
            if kind == "server":
                m["i_a"] = float(ac.p_out[i] * 1000.0 / c.params["voltage_v"])
            elif kind == "utility":
                m["on"] = int(bool(ac.avail[i]))
                status = "ok" if ac.avail[i] else "lost"
            elif kind == "generator":
                g = self.generators[i]
                m["running"] = int(g.state in ("running", "cooldown"))
                status = "failed" if g.failed else g.state
            elif kind == "transfer_switch":
                sw = next(s for s in self.switches if s.i == i)
                m["position"] = sw.position
                status = {0: "normal", -1: "open"}.get(sw.position, "standby")
            elif kind == "ups":
                k = ac.ups_of[i]
                m.update(
                    soc_pct=float(ac.soc[k] * 100.0),
                    batt_kw=float(ac.batt_kw[k]),
                    batt_a=float(ac.batt_a[k]),
                    on_battery=int(en and not ac.in_ok[i]),
                )
                draw = -ac.batt_kw[k]
                e_kwh = ac.soc[k] * ac.batt_v[k] * ac.batt_ah[k] / 1000.0
                m["runtime_s"] = float(e_kwh / draw * 3600.0) if draw > 1e-9 else -1.0
                if m["on_battery"]:
                    status = "on_battery"
            return status, m
        pl = self.plant_of.get(cid)
        if pl is not None:
            if kind == "pv_array":
                return ("ok" if pl.p_pv > 0 else "idle"), {
                    "ghi_wm2": pl.ghi,
                    "ghi_clear_wm2": pl.ghi_cs,
                    "cloud_pct": pl.cover * 100.0,
                    "t_cell_c": pl.t_cell,
                    "v_v": pl.v,
                    "i_a": pl.i,
                    "p_kw": pl.p_pv / 1000.0,
                    "p_mp_kw": pl.curve.p_mp / 1000.0,
                }
            if kind == "buck_converter":
                v_out = max((s.p["cells"] * s.u_cell for s in pl.stacks.values()), default=0.0)
                return ("ok" if pl.p_out > 0 else "idle"), {
                    "p_in_kw": pl.p_pv / 1000.0,
                    "p_kw": pl.p_out / 1000.0,
                    "loss_kw": pl.p_loss / 1000.0,
                    "v_in_v": pl.v,
                    "v_out_v": v_out,
                    "duty_pct": 100.0 * v_out / pl.v if pl.v > 0 else 0.0,
                }
            if kind == "electrolyser":
                s = pl.stacks[cid]
                return (f"tripped:{s.tripped}" if s.tripped else "ok" if s.i_a > 0 else "idle"), {
                    "i_a": s.i_a,
                    "j_acm2": s.i_a / s.p["area_m2"] / 1e4,
                    "u_cell_v": s.u_cell,
                    "u_stack_v": s.u_cell * s.p["cells"],
                    "p_kw": s.p_w / 1000.0,
                    "t_c": s.t_c,
                    "eta_f_pct": s.eta_f * 100.0,
                    "h2_nm3h": plant_mod.nm3h(s.n_h2),
                    "o2_nm3h": plant_mod.nm3h(s.n_o2),
                    "hto_pct": s.hto_pct,
                    "h2_total_kg": s.h2_total_mol * 2.01588e-3,
                    "tripped": int(bool(s.tripped)),
                }
            if kind == "gas_separator":
                return "ok", {"hto_pct": pl.separators[cid][1].hto_pct}
            if kind == "h2_tank":
                tank = pl.tanks[cid][1]
                return ("over_pressure" if pl.tank_over[cid] else "ok"), {
                    "p_bar": tank.p_bar,
                    "h2_kg": tank.n_mol * 2.01588e-3,
                    "fill_pct": 100.0 * tank.p_bar / tank.p["p_max_bar"],
                }
            if kind == "battery":
                return "ok", {"soc_pct": pl.soc * 100.0, "p_kw": pl.batt_kw}
        mg = self.asset_of.get(cid)
        if mg is not None:
            return mg.metrics(cid)
        if kind == "grid_bus":
            g = self.grids[cid]
            return ("alarm" if self._grid_alarm[cid] else "ok"), {
                "f_hz": g.f_hz,
                "df_hz": g.f_hz - g.p["f_nom_hz"],
                "rocof_hzs": g.rocof,
                "p_mech_mw": g.p_mech_mw,
                "load_mw": g.load_mw + g.noise_mw,
                "lost_mw": g.lost_mw,
            }
        if kind != "meter":
            return "unconnected", {"p_kw": 0.0}  # e.g. a stack node with no PV plant above it
        # A meter outside the AC chain reports its parent's power.
        par = self.state_of(c.parents[0])["m"].get("p_kw", 0.0) if c.parents else 0.0
        return "ok", {"p_kw": par}

    def state_of(self, component_id: str) -> dict[str, Any]:
        c = self._component(component_id)
        status, m = self._metrics(c)
        if self.faults is not None:
            self.faults.report(component_id, m, self.t)
        over = []
        for (cid, metric), v in self.overrides.items():
            if cid == component_id:
                m[metric] = v
                over.append(metric)
        m = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}
        return {
            "kind": c.kind,
            "node": c.node,
            "status": status,
            "m": m,
            "units": {k: unit_of(k) for k in m if unit_of(k)},
            "overridden": sorted(over),
        }

    def state(self) -> dict[str, dict[str, Any]]:
        """A JSON-able snapshot: {component id: {kind, node, status, m: {metric: value}, units,
        overridden}}."""
        return {c.id: self.state_of(c.id) for c in self.topo.components}

    def summary(self) -> dict[str, Any]:
        """Site-wide figures for a dashboard line: time, IT load, hydrogen made, grid frequency."""
        ac = self.ac
        h2 = sum(s.h2_total_mol for pl in self.plants for s in pl.stacks.values()) * 2.01588e-3
        return {
            "t_s": self.t,
            "it_load_kw": float(ac.demand[ac.load_idx].sum()),
            "source_kw": float(ac.p_out[ac.sources].sum()) if len(ac.sources) else 0.0,
            "pv_kw": sum(pl.p_pv for pl in self.plants) / 1000.0,
            "h2_total_kg": h2,
            "f_hz": {g: b.f_hz for g, b in self.grids.items()},
            "active_events": len(self.log.active()),
        }


__all__ = ["Twin", "TwinCommandError", "KINDS", "unit_of"]
