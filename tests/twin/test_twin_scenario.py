"""The demo scenario, run much faster than real time: the utility fails at 20 s and returns at 120
s, and the events come in the order the demo tells; the real-time runner paces against a clock."""

import time

import pytest

from gridtwin.site import example_site_path, load_site
from gridtwin.twin import DEMO_SEQUENCE, Action, Scenario, Twin, demo_scenario, run_realtime
from gridtwin.twin.topology import transfer_time_s


@pytest.fixture(scope="module")
def site():
    return load_site(example_site_path())


def test_demo_scenario_sequence_faster_than_real_time(site):
    tw = Twin.from_site(site)
    sc = demo_scenario(tw)
    tw.schedule(sc)
    wall = time.perf_counter()
    tw.run_until(sc.duration_s)
    wall = time.perf_counter() - wall
    assert wall < sc.duration_s / 20  # 180 s of plant in well under 9 s
    kinds = {t for t, _ in DEMO_SEQUENCE}
    seen = [(e.type, e.state) for e in tw.events if e.type in kinds]
    assert seen == DEMO_SEQUENCE
    at = {(e.type, e.state): e.t for e in tw.events}
    gen = sum(transfer_time_s(tw.topo.by_id["sw_a"], tw.topo.by_id["gen_a"], tw.dt))
    sw = tw.topo.by_id["sw_a"].params["retransfer_delay_s"]
    assert at[("utility_lost", "start")] == 20.0 and at[("utility_lost", "clear")] == 120.0
    # The switch detects the loss, the generator starts, the switch transfers: within NFPA 110 Type
    # 10.
    assert (
        at[("transfer_to_generator", "start")] == pytest.approx(20.0 + gen, abs=1e-9)
        and gen <= 10.0
    )
    assert 120.0 + sw <= at[("transfer_to_generator", "clear")] <= 120.0 + sw + 3 * tw.dt
    # The UPS bridged only the generator's start and the load never dropped.
    assert at[("ups_on_battery", "clear")] == at[("transfer_to_generator", "start")]
    assert not [e for e in tw.events if e.type == "load_dropped"]
    assert 99.0 < tw.state_of("ups_a")["m"]["soc_pct"] <= 100.0
    # The grid part of the story: a 50 MW unit trips at 60 s and is replaced at 150 s.
    f = [(e.t, e.state) for e in tw.events if e.type == "frequency_deviation"]
    assert (
        f[0][1] == "start" and 60.0 <= f[0][0] < 62.0 and f[-1][1] == "clear" and f[-1][0] > 150.0
    )
    assert not tw.active_events()
    # Drained events are the same stream, once.
    drained = tw.drain_events()
    assert drained == tw.events and tw.drain_events() == []


def test_scenario_from_rows_and_realtime_pacing(site):
    tw = Twin.from_site(site)
    sc = Scenario.from_list(
        "x", [{"t": 1.0, "component": "srv_a", "command": "set_load", "args": {"kw": 3.0}}], 3.0
    )
    assert sc.actions == [Action(1.0, "srv_a", "set_load", {"kw": 3.0})]
    tw.schedule(sc)
    now = [0.0]
    slept = []

    def clock():
        return now[0]

    def sleep(s):
        slept.append(s)
        now[0] += s

    run_realtime(tw, 3.0, speed=2.0, clock=clock, sleep=sleep)
    assert tw.t == pytest.approx(3.0)
    assert now[0] == pytest.approx(1.5)  # 3 simulated seconds at 2x take 1.5 s
    assert tw.ac.base_kw[0] == 3.0
    # Behind schedule (the machine stalled 100 s during a step), it catches up without sleeping.
    n = len(slept)

    def stall(twin):
        if len(slept) == n and twin.t < 3.15:
            now[0] += 100.0

    run_realtime(tw, 4.0, speed=1.0, clock=clock, sleep=sleep, on_step=stall)
    assert tw.t == pytest.approx(4.0) and len(slept) == n
