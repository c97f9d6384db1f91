"""The twin's fault injector (gridtwin.twin.faults): each kind does what it says on the example
site's twin, every injection is labelled (node, metric, start, end), and the rest of the twin runs
exactly as it would without the fault (the same seed, the same values)."""

from pathlib import Path

import pytest

from gridtwin.site import load_site
from gridtwin.twin import Twin, demo_scenario
from gridtwin.twin.engine import TwinCommandError
from gridtwin.twin.faults import Fault

EXAMPLE = Path(__file__).resolve().parents[2] / "host/gridtwin/examples/site.toml"


@pytest.fixture(scope="module")
def site():
    return load_site(EXAMPLE)


def _run(site, faults, until, probe):
    twin = Twin.from_site(site)
    for f in faults:
        twin.inject(f)
    out = []
    while twin.t < until - 1e-9:
        twin.step()
        if round(twin.t * 10) % 10 == 0:
            out.append((twin.t, probe(twin)))
    return twin, out


def test_each_kind_changes_what_it_says(site):
    def at(series, t):
        return next(v for s, v in series if s >= t)

    # a server's load spike: its demand 1.6x while it lasts (2.5x would trip its 22 kW PDU), back
    # after
    _, base = _run(site, [], 40, lambda tw: tw.state_of("srv_a")["m"]["p_kw"])
    twin, spiked = _run(
        site,
        [Fault("load_spike", "srv_a", 10, 20, {"factor": 1.6})],
        40,
        lambda tw: tw.state_of("srv_a")["m"]["p_kw"],
    )
    assert at(spiked, 15) == pytest.approx(1.6 * at(base, 15), rel=1e-6)
    assert at(spiked, 30) == pytest.approx(at(base, 30), rel=1e-9)
    # the UPS's state of charge collapses by 40 % over 10 s
    _, soc = _run(
        site,
        [Fault("soc_collapse", "ups_a", 5, 25, {"drop_pct": 40, "ramp_s": 10})],
        30,
        lambda tw: tw.state_of("ups_a")["m"]["soc_pct"],
    )
    assert at(soc, 4) == pytest.approx(100.0) and at(soc, 16) == pytest.approx(60.0, abs=0.5)
    # the electrolyser's cells lose efficiency: more stack volts at the same moment
    _, u0 = _run(site, [], 30, lambda tw: tw.state_of("EL1")["m"]["u_stack_v"])
    _, u1 = _run(
        site,
        [Fault("efficiency_loss", "EL1", 5, 60, {"factor": 3, "ramp_s": 10})],
        30,
        lambda tw: tw.state_of("EL1")["m"]["u_stack_v"],
    )
    assert at(u1, 20) > at(u0, 20) + 1.0
    # sensor faults: a sag, a rise, a stuck reading, spikes
    _, sag = _run(
        site,
        [Fault("voltage_sag", "pv1", 5, 10, {"depth": 0.2})],
        12,
        lambda tw: tw.state_of("pv1")["m"]["v_v"],
    )
    _, v = _run(site, [], 12, lambda tw: tw.state_of("pv1")["m"]["v_v"])
    assert at(sag, 7) == pytest.approx(0.8 * at(v, 7), rel=1e-4) and at(sag, 11) == pytest.approx(
        at(v, 11)
    )
    _, temp = _run(
        site,
        [Fault("temp_rise", "srv_a", 10, 20, {"rate_c_per_h": 3600, "base_c": 40})],
        25,
        lambda tw: tw.state_of("srv_a")["m"]["t_c"],
    )
    assert (
        at(temp, 5) == 40.0
        and at(temp, 15) == pytest.approx(45.0, abs=0.2)
        and at(temp, 22) == 40.0
    )
    _, stuck = _run(
        site,
        [Fault("stuck_sensor", "srv_a", 5, 15)],
        20,
        lambda tw: tw.state_of("srv_a")["m"]["p_kw"],
    )
    assert (
        len({v for t, v in stuck if 5 < t < 15}) == 1 and len({v for t, v in stuck if t > 15}) > 1
    )
    _, spikes = _run(
        site,
        [Fault("spike_sensor", "srv_a", 0, 100, {"amplitude": 1.0, "rate": 0.2})],
        100,
        lambda tw: tw.state_of("srv_a")["m"]["p_kw"],
    )
    assert 5 <= sum(v > 1.8 * at(base, 1) for _t, v in spikes) <= 40


def test_labels_and_the_rest_of_the_twin_unchanged(site):
    probe = lambda tw: (tw.state_of("EL1")["m"]["u_stack_v"], tw.state_of("grid1")["m"]["f_hz"])  # noqa: E731
    _, clean = _run(site, [], 30, probe)
    twin, faulty = _run(
        site, [Fault("spike_sensor", "srv_a", 0, 30), Fault("temp_rise", "srv_a", 5, 25)], 30, probe
    )
    assert faulty == clean  # the faults' draws are their own: every other value is as without them
    labels = twin.faults.labels()
    start = twin.topo.start_datetime().timestamp() * 1000
    assert [
        (lb["kind"], lb["node"], lb["metric"], lb["start_s"], lb["end_s"]) for lb in labels
    ] == [("spike_sensor", "srv_a", "p_kw", 0, 30), ("temp_rise", "srv_a", "t_c", 5, 25)]
    assert labels[1]["start_ms"] == int(start + 5000) and labels[1]["end_ms"] == int(start + 25000)


def test_bad_faults_are_refused(site):
    twin = Twin.from_site(site)
    with pytest.raises(TwinCommandError, match="does not apply"):
        twin.inject(Fault("load_spike", "EL1", 0, 10))
    with pytest.raises(TwinCommandError, match="unknown fault kind"):
        twin.inject(Fault("meltdown", "srv_a", 0, 10))
    with pytest.raises(TwinCommandError, match="no component"):
        twin.inject(Fault("stuck_sensor", "nope", 0, 10))


def test_demo_scenario_carries_its_fault(site):
    twin = Twin.from_site(site)
    sc = demo_scenario(twin)
    assert [(f.kind, f.component, f.metric) for f in sc.faults] == [("temp_rise", "EL1", "t_c")]
    twin.schedule(sc)
    twin.run_until(100)
    assert (
        twin.state_of("EL1")["m"]["t_c"] > 88.0
    )  # past the stack thermometers' limit: the demo's analytics alert
    twin.run_until(135)
    assert twin.state_of("EL1")["m"]["t_c"] < 70.0
    assert not any(
        e.component == "EL1" for e in twin.events
    )  # a sensor's fault: the stack model never tripped
