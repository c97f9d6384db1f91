"""`make demo`, faster than real time: the scenario runs end to end on the real firmware, the real
broker and the real daemon, and every virtual node's readings reach storage."""

import json
import sqlite3
import time

from gridtwin.daemon.validate import Limits
from gridtwin.demo.runner import Demo
from gridtwin.site import load_site
from gridtwin.twin.scenario import DEMO_SEQUENCE

from fixtures.broker import free_port

SPEED = 10.0


def test_demo_scenario_end_to_end(site_pki_copy, micropython):
    site = load_site(site_pki_copy.path)
    # The nodes' clocks run SPEED x real time too, so their timestamps run ahead of the daemon's
    # clock: widen its future-skew window for this run (the real demo runs at 1x).
    limits = Limits(max_future_ms=3_600_000)
    demo = Demo(site, speed=SPEED, port=free_port(), daemon_overrides={"metrics_port": None, "limits": limits})
    demo.start()
    try:
        demo.run(until=150.0)
        # every node ran clean: no reset, no crash boot, no MemoryError on any console
        sick = {n: [ln for ln in v.board.lines if "MemoryError" in ln or "Traceback" in ln][:2]
                for n, v in demo.fleet.nodes.items()}
        assert not any(sick.values()) and all(v.board.boots == 1 for v in demo.fleet.nodes.values()), sick
        # the twin told the story in order (other events, e.g. the grid unit trip, interleave)
        wanted = {t for t, _ in DEMO_SEQUENCE}
        seen = [(e.type, e.state) for e in demo.link.events if e.type in wanted]
        assert seen[: len(DEMO_SEQUENCE)] == DEMO_SEQUENCE
        # every virtual node's readings reached storage
        store = demo.daemon.store
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            counts = {n: store.count_readings(n) for n in demo.node_ids}
            if all(counts.values()):
                break
            time.sleep(0.2)
        assert all(counts.values()), f"nodes with no stored readings: {[n for n, c in counts.items() if not c]}"
        # the nodes were told what the twin knows, and each acknowledged: the distribution board
        # lost its supply and got it back, the generator started (commands oldest first)
        told = lambda node, cmd: [(json.loads(c["args"]), c["ok"]) for c in reversed(store.commands(node, 50))
                                  if c["cmd"] == cmd]
        supply = told("dist_a", "set_supply")
        assert ({"on": False}, 1) in supply and supply[-1] == ({"on": True}, 1), supply
        assert told("gen_a", "start")[:1] == [({}, 1)]
        # the twin's alerts were stored, and the utility's cleared when it came back
        with sqlite3.connect(store.path) as db:
            rows = db.execute("SELECT kind, node, active FROM alerts WHERE kind = 'utility_lost'").fetchall()
        assert rows == [("utility_lost", "util_a", 0)]
        # `gridtwin nodes` knows every node from its birth: online, firmware, free heap
        from gridtwin.daemon.registry import fleet

        views = {v.id: v for v in fleet(store, site)}
        bad = {n: (views[n].state, views[n].fw, views[n].heap) for n in demo.node_ids
               if not (views[n].state == "online" and views[n].fw and (views[n].heap or 0) > 0)}
        assert not bad, bad
    finally:
        demo.stop()


def test_a_busy_broker_port_is_one_clear_error(site_pki_copy, micropython):
    import socket

    import pytest

    from gridtwin.errors import BrokerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = Demo(load_site(site_pki_copy.path), port=port, daemon_overrides={"metrics_port": None})
        with pytest.raises(BrokerError, match=rf"cannot start the demo's broker on 127.0.0.1:{port}.*"
                                              r"another broker on that port\? stop it or pass --port"):
            demo.start()
    assert demo.daemon is None and not demo.broker.running  # nothing left behind


def test_gridtwin_vnode_runs_one_node_against_the_broker(site_pki_copy, broker_factory, micropython):
    # `gridtwin vnode NODE` prints the board's console as it comes and stops cleanly on Ctrl-C
    import signal
    import subprocess
    import sys
    from pathlib import Path

    brk = broker_factory(site_pki_copy)
    cmd = [str(Path(sys.executable).parent / "gridtwin"), "--site", str(site_pki_copy.path), "vnode",
           "srv_a", "--broker", f"127.0.0.1:{brk.port}"]
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
