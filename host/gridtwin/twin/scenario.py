"""Scenarios: timed actions on the twin, the demo scenario, and a real-time runner.

    from gridtwin.twin import Twin, Action, Scenario, demo_scenario, run_realtime

    twin = Twin.from_site(site)
    twin.schedule(demo_scenario(twin))   # utility out from t=20 s to 120 s; EL1's stack heats
    twin.run_until(180)                  # faster than real time (tests)
    run_realtime(twin, 180)              # paced at [twin].speed (the demo)

The expected event sequence of the demo scenario (with the example site's parameters) is
`DEMO_SEQUENCE`; tests/twin/test_scenario.py checks it. A scenario also carries faults
(gridtwin.twin.faults), injected by `schedule`: the demo's is `DEMO_FAULT`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gridtwin.errors import ConfigError


@dataclass(frozen=True)
class Action:
    t: float  # simulation time, s
    component: str
    command: str  # set_fault, set_load, set_supply, reset
    args: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Scenario:
    name: str
    actions: list[Action]
    duration_s: float
    faults: list = field(default_factory=list)  # gridtwin.twin.faults.Fault, labelled ground truth

    @classmethod
    def from_list(cls, name: str, rows: list[dict], duration_s: float) -> "Scenario":
        """Rows like {"t": 20, "component": "util_a", "command": "set_fault", "args": {"on":
        true}}."""
        return cls(
            name,
            [
                Action(
                    float(r["t"]),
                    r["component"],
                    r["command"],
                    dict(r.get("args", {})),
                    r.get("note", ""),
                )
                for r in rows
            ],
            duration_s,
        )


# What the demo shows, in order (component kinds in brackets are found in the site).
DEMO_SEQUENCE = [
    ("utility_lost", "start"),  # t = 20: the utility fails
    ("ups_on_battery", "start"),  # the UPS bridges at once
    ("generator_start", "info"),  # the transfer switch signals the generator
    (
        "transfer_to_generator",
        "start",
    ),  # after detection, the generator's start and the transfer (9.5 s)
    ("ups_on_battery", "clear"),  # the UPS is back on (generator) mains
    ("utility_lost", "clear"),  # t = 120: the utility returns
    ("transfer_to_generator", "clear"),  # after the retransfer delay
    ("restored", "info"),  # every load fed from the normal source again
]


# The demo's analytics story: the first electrolyser with a node reads its stack temperature
# climbing 0.3 degC/s from t = 40 s (its cooling loop failing, as its thermometer sees it) past the
# thermometers' 80 degC limit (gridtwin.analytics.config) at ~90 s, and back at 130 s: a limit alert
# raised, then cleared.
DEMO_FAULT = {
    "kind": "temp_rise",
    "start": 40.0,
    "end": 130.0,
    "args": {"metric": "t_c", "rate_c_per_h": 1440.0},
}


def demo_scenario(
    twin, fail_at: float = 20.0, back_at: float = 120.0, duration_s: float = 180.0
) -> Scenario:
    """The demo's story: the (first) utility fails at `fail_at` and returns at `back_at`.

    On a site with a grid bus the largest unit trips at 60 s and is re-dispatched at 150 s, so the
    frequency display has something to show too; on a site with an electrolyser node, DEMO_FAULT.
    """
    from gridtwin.twin.faults import Fault

    utilities = [c.id for c in twin.topo.components if c.kind == "utility"]
    if not utilities:
        raise ConfigError(
            twin.topo.path,
            "nodes",
            "the demo scenario needs a utility component",
            'add a node with role = "utility" feeding the data-centre chain',
        )
    u = utilities[0]
    actions = [
        Action(fail_at, u, "set_fault", {"on": True}, "utility fails"),
        Action(back_at, u, "set_fault", {"on": False}, "utility returns"),
    ]
    for c in twin.topo.components:
        if c.kind == "grid_bus":
            loss = round(0.05 * c.params["s_base_mw"], 3)
            actions += [
                Action(
                    60.0, c.id, "set_fault", {"on": True, "gen_loss_mw": loss}, "a large unit trips"
                ),
                Action(150.0, c.id, "set_fault", {"on": False}, "replacement dispatched"),
            ]
    faults = [
        Fault(
            DEMO_FAULT["kind"],
            c.id,
            DEMO_FAULT["start"],
            DEMO_FAULT["end"],
            dict(DEMO_FAULT["args"]),
            "the stack's cooling fails",
        )
        for c in twin.topo.components
        if c.kind == "electrolyser" and c.node
    ][:1]
    return Scenario("demo", sorted(actions, key=lambda a: a.t), duration_s, faults)


def run_realtime(
    twin,
    until: float,
    speed: float | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_step: Callable[[Any], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Step the twin until `until`, keeping simulated time at `speed` x wall time (0: no pacing).

    If the machine falls behind, the twin catches up without sleeping rather than drifting.
    `clock` and `sleep` are injectable so tests can drive it without waiting.
    """
    speed = twin.speed if speed is None else speed
    t0_wall, t0_sim = clock(), twin.t
    while twin.t < until - 1e-9:
        if stop is not None and stop():
            return
        twin.step()
        if on_step is not None:
            on_step(twin)
        if speed > 0:
            ahead = (twin.t - t0_sim) / speed - (clock() - t0_wall)
            if ahead > 0:
                sleep(ahead)
