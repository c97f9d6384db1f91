"""Faults the twin injects, each labelled with its node, metric, start and end: the ground truth the
analytics bench (tools/bench_analytics.py) scores detectors against.

    from gridtwin.twin.faults import Fault
    twin.inject(Fault("load_spike", "srv_a", start=3600, end=4200, args={"factor": 1.6}))
    # [{"kind", "component", "node", "metric", "start_s", "end_s", "start_ms", "end_ms"}]:
    twin.faults.labels()

A scenario carries its faults (``Scenario.faults``); ``Twin.schedule`` injects them. Kinds:

- ``soc_collapse`` (ups, battery): the state of charge drains ``drop_pct`` (40) over ``ramp_s``
(300): a
  failing cell string;
- ``load_spike`` (server): its demand is ``factor`` (1.6) times its base load (more may trip its
PDU);
- ``efficiency_loss`` (electrolyser): its cells' ohmic resistance grows to ``factor`` (3) times over
  ``ramp_s`` (600): more volts, and power, for the same hydrogen;
- ``voltage_sag`` (a component with a ``*_v`` metric): the voltage (``metric``, else the first)
reads
  ``depth`` (0.15) lower;
- ``temp_rise`` (any): a temperature (``metric``, t_c) climbs ``rate_c_per_h`` (2); a component the
twin
  gives none (a server) reads ``base_c`` (45) all along, plus the rise during the fault;
- ``stuck_sensor`` (any): a metric (p_kw) keeps the value it had at the start;
- ``spike_sensor`` (any): a metric (p_kw) jumps by ``amplitude`` (0.5) x its value on a share
``rate``
  (0.05) of the reports.

The first three change the simulation (the model runs on the faulty plant); the others change what
the component reports (the twin's state, hence what its node reads and stores): a sensor's fault, or
a quantity the twin does not model (a server's temperature). A fault's random draws come from a
generator of its own (seeded by the twin's seed and the fault's place), so the twin's own sequence,
and with it every other value, is the same with or without faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridtwin.twin.engine import TwinCommandError

PHYSICAL = {"soc_collapse", "load_spike", "efficiency_loss"}
KINDS = PHYSICAL | {"voltage_sag", "temp_rise", "stuck_sensor", "spike_sensor"}
ON_KINDS = {
    "soc_collapse": {"ups", "battery"},
    "load_spike": {"server"},
    "efficiency_loss": {"electrolyser"},
}
DEFAULT_METRIC = {
    "soc_collapse": "soc_pct",
    "load_spike": "p_kw",
    "efficiency_loss": "u_stack_v",
    "temp_rise": "t_c",
    "stuck_sensor": "p_kw",
    "spike_sensor": "p_kw",
}


@dataclass(frozen=True)
class Fault:
    kind: str
    component: str
    start: float  # simulation time, s
    end: float
    args: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def metric(self) -> str:
        return self.args.get("metric") or DEFAULT_METRIC.get(self.kind, "")


class _Active:
    __slots__ = ("f", "started", "ended", "saved", "rng", "metric", "stuck")

    def __init__(self, f: Fault, rng: np.random.Generator, metric: str):
        self.f, self.rng, self.metric = f, rng, metric
        self.started = self.ended = False
        self.saved: Any = None
        self.stuck: float | None = None


class FaultInjector:
    def __init__(self, twin):
        self.twin = twin
        self.faults: list[_Active] = []
        self.by_component: dict[str, list[_Active]] = {}

    def add(self, f: Fault) -> dict:
        twin = self.twin
        c = twin._component(f.component)
        if f.kind not in KINDS:
            raise TwinCommandError(
                f"unknown fault kind '{f.kind}'", hint=f"use one of {', '.join(sorted(KINDS))}"
            )
        if f.kind in ON_KINDS and c.kind not in ON_KINDS[f.kind]:
            raise TwinCommandError(
                f"a {f.kind} fault does not apply to '{f.component}' ({c.kind})",
                hint=f"use it on a {' or '.join(sorted(ON_KINDS[f.kind]))}",
            )
        if not f.end > f.start:
            raise TwinCommandError(
                f"fault {f.kind} on {f.component}: end {f.end} is not after start {f.start}"
            )
        metric = f.metric
        if f.kind == "voltage_sag" and not metric:
            metric = next((m for m in twin.state_of(f.component)["m"] if m.endswith("_v")), "")
            if not metric:
                raise TwinCommandError(
                    f"'{f.component}' ({c.kind}) has no voltage to sag",
                    hint="name one with args = {metric = ...}",
                )
        a = _Active(f, np.random.default_rng([int(twin.seed), len(self.faults), 0xFA]), metric)
        self.faults.append(a)
        self.by_component.setdefault(f.component, []).append(a)
        return self.label(a)

    def label(self, a: _Active) -> dict:
        c = self.twin.topo.by_id[a.f.component]
        t0 = self.twin.topo.start_datetime().timestamp()
        return {
            "kind": a.f.kind,
            "component": a.f.component,
            "node": c.node or a.f.component,
            "metric": a.metric,
            "start_s": a.f.start,
            "end_s": a.f.end,
            "start_ms": int((t0 + a.f.start) * 1000),
            "end_ms": int((t0 + a.f.end) * 1000),
            "args": dict(a.f.args),
        }

    def labels(self) -> list[dict]:
        """Every injection: kind, component, node (the component's node, else its id), metric,
        start, end."""
        return [self.label(a) for a in self.faults]

    # --- the simulation: physical faults, before each step --------------------------------------

    def before_step(self, t: float, dt: float) -> None:
        for a in self.faults:
            f = a.f
            if a.ended or f.kind not in PHYSICAL:
                continue
            if not a.started and t >= f.start - 1e-9:
                a.started = True
                self._begin(a)
            if a.started and t >= f.end - 1e-9:
                a.ended = True
                self._finish(a)
                continue
            if a.started:
                self._during(a, t, dt)

    def _begin(self, a: _Active) -> None:
        twin, f = self.twin, a.f
        if f.kind == "load_spike":
            k = int(np.searchsorted(twin.ac.load_idx, twin.ac.pos[f.component]))
            a.saved = (k, float(twin.ac.base_kw[k]))
            twin.ac.base_kw[k] = a.saved[1] * float(f.args.get("factor", 1.6))
        elif f.kind == "efficiency_loss":
            s = twin.plant_of[f.component].stacks[f.component]
            s.p = dict(
                s.p
            )  # its own copy: the site's parameters (and other stacks) stay as they are
            a.saved = s.p["r1"]

    def _during(self, a: _Active, t: float, dt: float) -> None:
        twin, f = self.twin, a.f
        if f.kind == "soc_collapse":
            rate = float(f.args.get("drop_pct", 40.0)) / 100.0 / float(f.args.get("ramp_s", 300.0))
            if t - f.start > float(f.args.get("ramp_s", 300.0)):
                return
            kind = twin.topo.by_id[f.component].kind
            if kind == "ups":
                k = twin.ac.ups_of[twin.ac.pos[f.component]]
                twin.ac.soc[k] = max(0.0, twin.ac.soc[k] - rate * dt)
            else:
                pl = twin.plant_of[f.component]
                pl.soc = max(0.0, pl.soc - rate * dt)
        elif f.kind == "efficiency_loss":
            s = twin.plant_of[f.component].stacks[f.component]
            ramp = max(float(f.args.get("ramp_s", 600.0)), 1e-9)
            share = min(1.0, (t - f.start) / ramp)
            s.p["r1"] = a.saved * (1.0 + (float(f.args.get("factor", 3.0)) - 1.0) * share)

    def _finish(self, a: _Active) -> None:
        twin, f = self.twin, a.f
        if f.kind == "load_spike":
            k, base = a.saved
            twin.ac.base_kw[k] = base
        elif f.kind == "efficiency_loss":
            twin.plant_of[f.component].stacks[f.component].p["r1"] = a.saved

    # --- what the component reports ---------------------------------------------------------------

    def report(self, cid: str, m: dict, t: float) -> None:
        """Change a component's reported metrics in place for the sensor faults active at t."""
        for a in self.by_component.get(cid, ()):
            f = a.f
            if f.kind in PHYSICAL:
                continue
            metric = a.metric
            if not f.start - 1e-9 <= t < f.end - 1e-9:
                # a component the twin gives no such temperature (a server) reads the fault's base
                # all along
                if f.kind == "temp_rise" and metric not in m:
                    m[metric] = float(f.args.get("base_c", 45.0))
                continue
            if f.kind == "voltage_sag":
                if metric in m:
                    m[metric] = m[metric] * (1.0 - float(f.args.get("depth", 0.15)))
            elif f.kind == "temp_rise":
                base = m.get(metric, float(f.args.get("base_c", 45.0)))
                m[metric] = base + float(f.args.get("rate_c_per_h", 2.0)) * (t - f.start) / 3600.0
            elif f.kind == "stuck_sensor":
                if a.stuck is None:
                    a.stuck = m.get(metric)
                if a.stuck is not None:
                    m[metric] = a.stuck
            elif f.kind == "spike_sensor" and metric in m:
                # one draw per report, from the fault's own generator: the twin's sequence is
                # untouched
                if a.rng.random() < float(f.args.get("rate", 0.05)):
                    m[metric] = m[metric] * (1.0 + float(f.args.get("amplitude", 0.5)))
