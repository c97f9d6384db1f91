"""The daemon runs analytics in a child process (gridtwin.analytics.process): readings reach it,
its alerts come back to the daemon's store and the broker, a killed child is reported and started
again, and the child stops with the daemon. Real broker, real daemon, a real spawned process."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from gridtwin.analytics.process import AnalyticsProcess


def _tel(node, seq, ts, **m):
    return json.dumps({"v": 1, "node": node, "boot": 1, "seq": seq, "ts": ts, "m": m}).encode()


def _daemon(broker, site, tmp_path):
    """The site's daemon, in this process, not started."""
    from fixtures.daemon_fleet import endpoint
    from gridtwin.daemon.service import Daemon

    return Daemon(
        endpoint=endpoint(broker),
        db_path=tmp_path / "gt.db",
        known_nodes=site.node_ids,
        metrics_port=None,
        site=site,
    )


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.scandir(f"/proc/{pid}/task"):
        try:
            with open(f"{task.path}/children") as f:
                out += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue  # a thread that ended while they were listed (a CI run failed on one)
    return sorted(out)


def test_analytics_runs_in_a_child_that_is_restarted_and_stopped(
    broker, site_pki, mqtt_client, tmp_path
):
    from fixtures.daemon_fleet import NodeClient, wait_for

    site = site_pki.site
    root = site.topic_root
    watcher = mqtt_client("telegraf")
    watcher.subscribe(f"{root}/_host/alerts/#")
    d = _daemon(broker, site, tmp_path)
    assert isinstance(d.analytics, AnalyticsProcess)
    grid = NodeClient(broker, "grid1")
    start = int(time.time() * 1000) - 600_000
    child = None
    before = _children(os.getpid())  # the broker's
    try:
        d.start()
        wait_for(lambda: d.bus.subscribed, 10, "the daemon to subscribe")
        child = d.analytics.proc
        assert child.pid != os.getpid() and child.poll() is None
        # the analytics process is the daemon's one child (no multiprocessing resource tracker)
        assert sorted(set(_children(os.getpid())) - set(before)) == [child.pid]
        # at a lower priority than the daemon (ingest gets the CPU first)
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(mine + 10, 19)
        # and so is its session (Linux's autogroups share a core between sessions first: the
        # process's nice alone counted only within its own session)
        if os.path.exists("/proc/self/autogroup"):
            with open(f"/proc/{child.pid}/autogroup") as f:
                assert f.read().split()[-1] == str(min(mine + 10, 19))
        # out of range for the site's min_duration_s (10 s of reading time): an alert
        for k, dt in enumerate((0, 5_000, 11_000)):
            grid.publish(_tel("grid1", k, start + dt, mains_v=262.0))
        wait_for(lambda: "grid1/limit/mains_v" in d.alerts.active, 20, "the limit alert")
        alert = json.loads(
            watcher.wait_for(f"{root}/_host/alerts/grid1/limit/mains_v", timeout=10).payload
        )
        assert (alert["node"], alert["metric"], alert["value"]) == ("grid1", "mains_v", 262.0)
        assert "grid1/limit/mains_v" in [r["key"] for r in d.store.alerts()]  # the daemon's
        grid.publish(_tel("grid1", 3, start + 20_000, mains_v=230.0))  # back in range: cleared
        wait_for(lambda: "grid1/limit/mains_v" not in d.alerts.active, 20, "the alert to clear")
        watcher.wait_for(
            f"{root}/_host/alerts/grid1/limit/mains_v", timeout=10, where=lambda m: m.payload == b""
        )
        wait_for(lambda: d.analytics.stats["analysed"] >= 4, 10, "the child's counters")

        os.kill(child.pid, signal.SIGKILL)  # a crash: reported, started again, ingest goes on
        wait_for(lambda: d.analytics.restarts == 1, 20, "the child to be started again")
        health = d.metrics.health()[1]["analytics"]
        assert health["restarts"] == 1 and health["pid"] != child.pid
        wait_for(lambda: d.analytics.health()["alive"], 10, "the new child")
        assert d.metrics.dead_threads() == []
        # the new child analyses what comes next: the alert is raised again
        for k, dt in enumerate((30_000, 35_000, 41_000)):
            grid.publish(_tel("grid1", 4 + k, start + dt, mains_v=262.0))
        wait_for(lambda: "grid1/limit/mains_v" in d.alerts.active, 30, "the alert, once more")
        assert d.metrics.stored == 7
        child = d.analytics.proc
    finally:
        d.stop()
        grid.close()
    assert child.returncode == 0  # stopped in order with the daemon
    assert _children(os.getpid()) == before
    assert d.store  # (closed by stop)


def test_a_killed_daemon_leaves_no_analytics_process(tmp_path):
    """The child dies with the daemon (the kernel's parent-death signal) and also watches it (its
    pipe's end): a daemon that is killed (no stop) does not leave analytics running."""
    import subprocess
    import sys

    from fixtures.daemon_fleet import wait_for

    code = (
        "import sys, time\n"
        "from gridtwin.analytics import process\n"
        "c = process.Child({'site': sys.argv[1], 'db': sys.argv[2], 'active': [],"
        " 'influx': None, 'log': (None, 0)})\n"
        "print(c.proc.pid, flush=True); time.sleep(600)\n"
    )
    from gridtwin.site import example_site_path

    site = tmp_path / "site.toml"
    site.write_text(example_site_path().read_text())
    db = tmp_path / "gt.db"
    from gridtwin.daemon.store_sqlite import SqliteStore

    SqliteStore(db).close()
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(site), str(db)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)

        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{pid}/stat") as f:  # a zombie until init reaps it
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"

        wait_for(gone, 20, "the orphaned analytics process to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_gridtwin_daemon_stops_its_analytics_process(site_pki_copy, broker, tmp_path, sig):
    """`gridtwin daemon` as users run it: /healthz names its analytics process; the signal sent to
    the whole group (a terminal's Ctrl-C) or the daemon alone stops both, in order."""
    import re
    import subprocess
    import sys
    import urllib.request

    from fixtures.broker import free_port
    from fixtures.daemon_fleet import wait_for

    site = site_pki_copy.path
    port = free_port()
    text = re.sub(r"(?m)^port = \d+", f"port = {broker.port}", site.read_text())
    site.write_text(text + f"\n[daemon]\nmetrics_port = {port}\n")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridtwin", "--site", str(site), "daemon"],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:

        def analytics():
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    part = json.loads(r.read())["analytics"]
            except OSError:
                return None
            return part if part["alive"] else None

        pid = wait_for(analytics, 20, "the daemon and its analytics process")["pid"]
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == proc.pid  # the daemon's child
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        assert proc.wait(30) == 0, log.read_text()
        assert not os.path.exists(f"/proc/{pid}"), "the analytics process outlived the daemon"
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _small_queue_daemon(broker, site, tmp_path):
    """The site's daemon (not started) with an analytics queue of 10 readings (site.toml allows
    1,000 and up): a commit of more than 10 messages of one reading goes as rowids."""
    d = _daemon(broker, site, tmp_path)
    d.analytics.queue_max = 10
    return d


def test_what_analytics_has_no_room_for_it_reads_back_from_the_store(
    broker, site_pki, mqtt_client, tmp_path
):
    """A child that falls behind (stopped here) misses nothing: the commits its queue has no room
    for go as their rowids, it reads those rows back in order once it gets there, the alert they
    hold is raised, nothing is counted dropped, and compaction leaves the rows until they are
    read."""
    from fixtures.daemon_fleet import NodeClient, wait_for

    d = _small_queue_daemon(broker, site_pki.site, tmp_path)
    grid = NodeClient(broker, "grid1")
    start = int(time.time() * 1000) - 600_000  # older than compaction's 5 min: it would move them
    child = None
    try:
        d.start()
        wait_for(lambda: d.bus.subscribed, 10, "the daemon to subscribe")
        child = d.analytics.proc
        os.kill(child.pid, signal.SIGSTOP)  # analytics takes nothing for a while
        # 30 readings in range, then out of range for the site's min_duration_s (10 s): an alert
        # that only the rows read back can raise
        for k in range(30):
            grid.publish(_tel("grid1", k, start + k * 1000, mains_v=230.0))
        for k, dt in enumerate((30_000, 35_000, 41_000)):
            grid.publish(_tel("grid1", 30 + k, start + dt, mains_v=262.0))
        wait_for(lambda: d.metrics.stored == 33, 20, "ingest to store them all")
        floor = d.analytics.replay_floor()
        assert floor is not None  # some commits went as rowids
        assert d.store.compact(keep_from=floor) < 33  # their rows stay rows meanwhile
        assert (
            d.store.conn.execute(
                "SELECT count(*) FROM readings WHERE rowid >= ?", (floor,)
            ).fetchone()[0]
            == 33 - floor + 1
        )
        os.kill(child.pid, signal.SIGCONT)
        wait_for(lambda: "grid1/limit/mains_v" in d.alerts.active, 30, "the limit alert")
        wait_for(lambda: d.analytics.stats["analysed"] >= 33, 20, "the child's counters")
        assert d.analytics.stats["replayed"] >= 33 - 10
        assert d.analytics.stats["dropped"] == 0 and d.analytics.dropped == 0
        wait_for(lambda: d.analytics.replay_floor() is None, 10, "the rows to be let go")
        text = d.metrics.prometheus()
        assert "gridtwin_analytics_dropped_total 0" in text
        assert f"gridtwin_analytics_replayed_total {d.analytics.stats['replayed']}" in text
    finally:
        if child is not None and child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
        d.stop()
        grid.close()
    assert child.returncode == 0


def test_a_stopping_daemon_leaves_what_analytics_had_to_read_back_for_its_next_start(
    broker, site_pki, tmp_path, capfd
):
    """The daemon's stop tells the child (SIGUSR1) to read nothing back: the frames it was sent
    before are analysed, the first replay and all after it are left (said, saved as the rowid to
    resume from) and it exits at once; the next start reads them back first, in order."""
    from fixtures.daemon_fleet import NodeClient, wait_for
    from gridtwin.analytics.process import RESUME_STATE

    d = _small_queue_daemon(broker, site_pki.site, tmp_path)
    grid = NodeClient(broker, "grid1")
    start = int(time.time() * 1000) - 60_000
    child = None
    try:
        d.start()
        wait_for(lambda: d.bus.subscribed, 10, "the daemon to subscribe")
        child = d.analytics.proc
        grid.publish(_tel("grid1", 0, start, mains_v=230.0))
        # analysed: the child is up (its signal handlers in place)
        wait_for(lambda: d.analytics.stats["analysed"] == 1, 20, "the child's first reading")
        os.kill(child.pid, signal.SIGSTOP)
        for k in range(1, 26):
            grid.publish(_tel("grid1", k, start + k * 1000, mains_v=230.0))
        wait_for(lambda: d.metrics.stored == 26, 20, "ingest to store them all")
        floor = d.analytics.replay_floor()
        assert floor is not None
        d.analytics.child.close()  # what d.stop() does first: the signal waits for SIGCONT
        os.kill(child.pid, signal.SIGCONT)
        wait_for(lambda: child.poll() is not None, 30, "the child to exit")
        assert child.returncode == 0
        stats = d.analytics.stats
        # (a commit of more than 10 readings goes as rowids whole: here all 25 did, as a rule)
        assert stats["replayed"] == 0 and stats["dropped"] == 0 and stats["deferred"] >= 15
        assert stats["analysed"] + stats["deferred"] == 26  # the frames before were analysed
        # said on the child's stderr (the daemon's: its journal)
        assert "left for the daemon's next start" in capfd.readouterr().err
    finally:
        if child is not None and child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
        d.stop()
    left = d.store.__class__(tmp_path / "gt.db")
    try:
        assert left.load_state(RESUME_STATE)["rowid"] == floor
    finally:
        left.close()
    d2 = _daemon(broker, site_pki.site, tmp_path)  # the next start, on the same database
    try:
        d2.start()
        wait_for(lambda: d2.analytics.stats["replayed"] == stats["deferred"], 30, "the read-back")
        assert d2.analytics.stats["dropped"] == 0 and d2.analytics.replay_floor() is None
        assert d2.store.load_state(RESUME_STATE) == {}  # once
    finally:
        d2.stop()
        grid.close()


def test_a_replay_reached_too_late_is_dropped_and_said(tmp_path, capfd):
    """The analytics process reads a replay's rows back in commit order; one it reaches more
    than REPLAY_MAX_AGE_S after its commit (analytics that cannot keep up at all: the daemon lets
    compaction have those rows again) is counted dropped and said instead. A real child process,
    fed as the daemon feeds it."""
    import marshal

    from gridtwin.analytics import process
    from gridtwin.daemon import validate
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.site import example_site_path

    site = tmp_path / "site.toml"
    site.write_text(example_site_path().read_text())
    store = SqliteStore(tmp_path / "gt.db")
    now = int(time.time() * 1000)
    res = store.write_batch(
        [
            validate.telemetry("grid1", _tel("grid1", k, now - 5000 + k, mains_v=230.0))
            for k in range(5)
        ]
    )
    store.close()
    first, last = res.rows
    child = process.Child(
        {
            "site": str(site),
            "db": str(tmp_path / "gt.db"),
            "active": [],
            "influx": None,
            "log": (None, 30),
        }
    )
    late = now - int((process.REPLAY_MAX_AGE_S + 60) * 1000)
    child.put(marshal.dumps(("replay", first, last, 5, late)))  # too late: dropped
    child.put(marshal.dumps(("replay", first, last, 5, now)))  # read back
    child.close()
    got, stats = [], None
    while True:
        msg = child.get(30)
        assert msg is not None, "the analytics process said nothing for 30 s"
        if msg is process.EOF or msg[0] == "bye":
            break
        if msg[0] == "stats":
            stats = msg[1]
        elif msg[0] == "replayed":
            got.append(msg[1])
    child.end(30)
    assert child.proc.returncode == 0
    assert got == [last, last]  # both ranges are done with (the floor goes)
    assert (stats["dropped"], stats["replayed"], stats["analysed"]) == (5, 5, 5)
    assert (
        "5 reading(s) stored while it was behind are not analysed (reached"
        in capfd.readouterr().err
    )
