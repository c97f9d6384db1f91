"""`make demo`, faster than real time: the scenario runs end to end on the real firmware, the real
broker and the real daemon, and every virtual node's readings reach storage; the twin is served
over OPC UA and the daemon collects it."""

import bisect
import json
import shutil
import sqlite3
import time

import pytest

from gridtwin.daemon.validate import Limits
from gridtwin.demo.runner import Demo
from gridtwin.site import load_site
from gridtwin.twin.scenario import DEMO_SEQUENCE
from gridtwin.twin.sensorfeed import PLANT_ROLES, sensor_readings
from gridtwin.vworld import plant_tolerance, tolerance

from fixtures.broker import free_port

SPEED = 10.0
UNTIL = 150.0
# How far from its reading's ts a board may sample, in host seconds, either way: at SPEED x on a
# loaded machine a board waits for the CPU between taking its time and reading its chips (or the
# other way round), and its clock counts that wait SPEED times over (at 1x it is a few ms of the
# node's time). Measured on 2 cores: up to 0.08 s alone, 0.15 s late with the load average at 12,
# 0.09-0.24 s early with the load at 5-6 and the demo serving OPC UA (the failure message shows
# when the twin did say what a reading says).
LATE_S = 0.25


@pytest.fixture(scope="module")
def demo(site_pki, micropython, tmp_path_factory):
    """One demo run for the module: the scenario to UNTIL at SPEED x real time, every node's
    readings stored; the system keeps running while the tests look at it."""
    folder = tmp_path_factory.mktemp("demo") / "site"
    shutil.copytree(site_pki.dir, folder, ignore=shutil.ignore_patterns("var"))
    site = load_site(folder / "site.toml")
    # The nodes' clocks run SPEED x real time too, so their timestamps run ahead of the daemon's
    # clock: widen its future-skew window for this run (the real demo runs at 1x).
    limits = Limits(max_future_ms=3_600_000)
    d = Demo(
        site,
        speed=SPEED,
        port=free_port(),
        daemon_overrides={"metrics_port": None, "limits": limits},
        opcua_port=free_port(),
    )
    d.start()
    try:
        d.run(until=UNTIL)
        d.ran_until = time.time()  # host time the twin stopped: later readings hold its last feed
        store = d.daemon.store
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(store.count_readings(n) for n in d.node_ids):
                break
            time.sleep(0.2)
        yield d
    finally:
        d.stop()


def test_demo_scenario_end_to_end(demo):
    site = demo.site
    # every node ran clean: no reset, no crash boot, no MemoryError on any console
    sick = {
        n: [ln for ln in v.board.lines if "MemoryError" in ln or "Traceback" in ln][:2]
        for n, v in demo.fleet.nodes.items()
    }
    assert not any(sick.values()) and all(v.board.boots == 1 for v in demo.fleet.nodes.values()), (
        sick
    )
    # the twin told the story in order (other events, e.g. the grid unit trip, interleave)
    wanted = {t for t, _ in DEMO_SEQUENCE}
    seen = [(e.type, e.state) for e in demo.link.events if e.type in wanted]
    assert seen[: len(DEMO_SEQUENCE)] == DEMO_SEQUENCE
    # every virtual node's readings reached storage
    store = demo.daemon.store
    counts = {n: store.count_readings(n) for n in demo.node_ids}
    assert all(counts.values()), (
        f"nodes with no stored readings: {[n for n, c in counts.items() if not c]}"
    )
    # the plant nodes are wired to the twin's HIL inputs: no commands needed to tell them
    assert demo.link.hil == {n for n in demo.node_ids if demo.roles[n] in PLANT_ROLES}
    assert demo.link.command_errors == 0
    # the twin's alerts were stored, and the utility's cleared when it came back
    with sqlite3.connect(store.path) as db:
        rows = db.execute(
            "SELECT kind, node, active FROM alerts WHERE kind = 'utility_lost'"
        ).fetchall()
    assert rows == [("utility_lost", "util_a", 0)]
    # `gridtwin nodes` knows every node from its birth: online, firmware, free heap
    from gridtwin.daemon.registry import fleet

    views = {v.id: v for v in fleet(store, site)}
    bad = {
        n: (views[n].state, views[n].fw, views[n].heap)
        for n in demo.node_ids
        if not (views[n].state == "online" and views[n].fw and (views[n].heap or 0) > 0)
    }
    assert not bad, bad


def test_the_demo_serves_its_twin_over_opcua_and_its_daemon_collects_it(demo):
    # both paths side by side: the nodes over MQTT, the twin over OPC UA (encrypted, the site PKI),
    # collected by the demo's daemon from its [[opcua.sources]] into the same store
    from gridtwin.opcua import model

    served, store = demo.opcua, demo.daemon.store
    assert served.published >= UNTIL / SPEED / 2, served.published  # one a second of wall time
    comps = {c.id for c in demo.twin.topo.components}
    want = {}
    for p in model.points(demo.twin, demo.site.id, demo.site.opcua.enterprise):
        st = served.last[p.path[-1]]
        if model.quality(st["status"]) == "GOOD" and not p.text:
            want[(p.path[-1], p.tag)] = bool(st["m"][p.metric]) if p.flag else st["m"][p.metric]

    def newest():
        out = {}
        for *_p, m, tag, _ts, v, _text, _unit, q in store.opcua_points():
            out[(m, tag)] = v
        return out

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the last publish reaches the store within a commit
        got = newest()
        if all(got.get(k) == pytest.approx(v, rel=1e-9) for k, v in want.items()):
            break
        time.sleep(0.2)
    off = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != pytest.approx(v, rel=1e-9)}
    assert not off, off
    assert {k[0] for k in got} == comps  # every component of the twin, by its id as machine
    health = demo.daemon.opcua.health()
    assert health[0]["connected"] and health[0]["stored"] > len(want)


def _stored(store, node):
    with sqlite3.connect(store.path) as db:
        return [
            (ts, json.loads(msg))
            for ts, msg in db.execute(
                "SELECT ts, msg FROM readings WHERE node = ? ORDER BY ts", (node,)
            )
        ]


def test_stored_readings_agree_with_the_twin(demo):
    # Every stored reading of every metric that has a twin counterpart (gridtwin.twin.sensorfeed.
    # readings: sensors the site maps, plant quantities, derived ones) lies within what the twin
    # said over the sample interval before it was taken, give or take the chip's resolution and
    # noise bound (gridtwin.vworld.CHIPS). A reading's ts is the boards' clock, one for the fleet
    # (fleet.host_time), so each is compared with the twin's states of its own moment.
    fleet, link, site = demo.fleet, demo.link, demo.site
    hist = list(link.history)
    assert hist and hist[-1][1] >= UNTIL - 1
    bad, checked = {}, {}
    for n in demo.node_ids:
        feeds = [(h, e[n]) for h, _t, e in hist if n in e]
        times = [h for h, _ in feeds]
        cfg = fleet.nodes[n].config
        lag = cfg["sample_ms"] / 1000 / SPEED  # one sample interval, in host seconds
        sensors = {s["id"]: s for s in cfg["sensors"]}
        node = site.node(n)
        for ts, m in _stored(demo.daemon.store, n):
            at = fleet.host_time(ts)
            if at > demo.ran_until or at < times[0]:
                continue
            lo = max(0, bisect.bisect_right(times, at - lag - LATE_S) - 1)
            hi = bisect.bisect_right(times, at + LATE_S)
            window = [e for _, e in feeds[lo:hi]] or [feeds[lo][1]]
            for metric, value in m.items():
                want = [e[metric] for e in window if metric in e]
                if not want:
                    continue
                fed = {
                    k: v[2]
                    for k, v in sensor_readings(node, {**_twin_of(node, window[-1])}).items()
                }
                tol = _tol(n, metric, max(want, key=abs), sensors, node, cfg, window[-1], fed)
                checked[(n, metric)] = checked.get((n, metric), 0) + 1
                if not min(want) - tol <= value <= max(want) + tol:
                    # when (host s from the reading) the twin did say that: the reading's true lag
                    said = [
                        round(h - at, 3)
                        for h, e in feeds
                        if abs(e.get(metric, 1e18) - value) <= tol
                    ]
                    bad.setdefault((n, metric), []).append(
                        (round(at - fleet.epoch, 2), value, min(want), max(want), said[:3])
                    )
    summary = {k: (len(v), checked[k], v[:3]) for k, v in bad.items()}
    assert not bad, (
        "(node, metric): (readings off, checked, first (host s, read, twin min, twin max, "
        f"twin said it at)): {summary}"
    )
    # every node's counterparts were checked: the chain, the PV array, both stacks, the grid
    for n in demo.node_ids:
        assert any(k[0] == n for k in checked), f"{n}: no reading compared"
    for k in [
        ("ups_a", "on_batt"),
        ("ups_a", "batt_pct"),
        ("srv_a", "load_kw"),
        ("pv1", "array_w"),
        ("EL1", "stack_w"),
        ("EL2", "stack_a"),
        ("grid1", "mains_hz"),
        ("pv1", "t_cell"),
    ]:
        assert checked.get(k, 0) >= 10, (k, checked.get(k))


def _twin_of(node, expect):
    # the twin metrics behind a node's sensor readings, from what the node should read
    out = {}
    for s in node.get("sensors") or ():
        for suffix, metric in (s.get("twin") or {}).items():
            name = s["id"] + ("_" + suffix if suffix else "")
            if name in expect:
                out[metric] = expect[name]
    return out


def _tol(n, metric, value, sensors, node, cfg, expect, fed):
    if metric in ("load_kw", "batt_pct"):
        return plant_tolerance(cfg["params"]["hil"], metric)
    if metric == "h2_nlh":
        # Faraday's law with eta_F(j) rises at most twice as fast as the current, relatively;
        # the role rounds to 1 mL/h
        stack = next(s for s in sensors.values() if s["type"] in ("ina219", "ina226"))
        i = abs(fed.get("stack_a", 0.0)) or 1.0
        return abs(value) * 3 * tolerance(stack, "a", i) / i + 0.001
    if metric == "f_dev":
        mains = next(s for s in sensors.values() if s["type"] == "ade7953")
        return tolerance(mains, "hz", 50 + value)
    for s in node.get("sensors") or ():
        for suffix in ("", "v", "a", "w", "hz", "pf", "t", "rh", "p"):
            if s["id"] + ("_" + suffix if suffix else "") == metric:
                mine = {
                    k.rsplit("_", 1)[-1]: v for k, v in fed.items() if k.startswith(s["id"] + "_")
                }
                return tolerance(sensors[s["id"]], suffix, value, mine)
    return 0.0  # flags and states: exact


def test_a_busy_broker_port_is_one_clear_error(site_pki_copy, micropython):
    import socket

    import pytest

    from gridtwin.errors import BrokerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = Demo(
            load_site(site_pki_copy.path), port=port, daemon_overrides={"metrics_port": None}
        )
        with pytest.raises(
            BrokerError,
            match=rf"cannot start the demo's broker on 127.0.0.1:{port}.*"
            r"another broker on that port\? stop it or pass --port",
        ):
            demo.start()
    assert demo.daemon is None and not demo.broker.running  # nothing left behind


def test_gridtwin_vnode_runs_one_node_against_the_broker(
    site_pki_copy, broker_factory, micropython
):
    # `gridtwin vnode NODE` prints the board's console as it comes and stops cleanly on Ctrl-C
    import signal
    import subprocess
    import sys
    from pathlib import Path

    brk = broker_factory(site_pki_copy)
    cmd = [
        str(Path(sys.executable).parent / "gridtwin"),
        "--site",
        str(site_pki_copy.path),
        "vnode",
        "srv_a",
        "--broker",
        f"127.0.0.1:{brk.port}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:  # the console, line by line, while the node runs
            seen.append(line)
            if "mqtt: connected" in line:
                break
        assert any("app: running node=srv_a role=server" in ln for ln in seen), seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in proc.stderr.read()


def test_a_site_mistake_is_reported_before_anything_starts(site_pki_copy):
    import pytest

    from gridtwin.errors import ConfigError

    demo = Demo(load_site(site_pki_copy.path), nodes=["srv_a", "nosuch"], port=free_port())
    with pytest.raises(ConfigError, match=r"no node 'nosuch' \(known nodes: util_a"):
        demo.start()
    assert demo.broker is None and demo.daemon is None  # no broker, daemon or board was started
