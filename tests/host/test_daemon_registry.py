"""Registry states, the metrics endpoint, retention in the daemon, and the systemd unit."""

import json
import logging
import types
import time
import urllib.error
import urllib.request

from gridtwin.daemon import validate
from gridtwin.daemon.metrics import Metrics, MetricsServer
from gridtwin.daemon.registry import fleet, node_state
from gridtwin.daemon.store_sqlite import SqliteStore

NOW = 1_800_000_000_000


class _Node:
    def __init__(self, id, interval_ms=1000, board="esp32s3"):
        self.id, self.interval_ms, self.board = id, interval_ms, board


class _Site:
    nodes = [_Node("a"), _Node("b", interval_ms=200), _Node("c"), _Node("d")]


def test_node_states_from_birth_will_and_silence():
    assert node_state({}, 1000, NOW) == "unknown"
    assert node_state({"state": "online", "last_seen": NOW - 2500}, 1000, NOW) == "online"
    assert (
        node_state({"state": "online", "last_seen": NOW - 3500}, 1000, NOW) == "stale"
    )  # 3 intervals missed
    assert (
        node_state({"state": "online", "last_seen": NOW - 3500}, 1000, NOW, stale_intervals=5)
        == "online"
    )
    assert node_state({"state": "offline", "last_seen": NOW}, 1000, NOW) == "offline"
    assert (
        node_state({"state": None, "last_seen": NOW - 10}, 1000, NOW) == "online"
    )  # readings, no birth seen yet


def test_fleet_view_uses_each_nodes_interval(tmp_path):
    store = SqliteStore(tmp_path / "db")
    store.ensure_nodes(["a", "b", "c", "d"])
    store.write_batch(
        [],
        statuses=[
            ("a", {"state": "online", "fw": "1.0", "rssi": -50}),
            ("b", {"state": "online"}),
            ("c", {"state": "offline"}),
            ("ghost", {"state": "online"}),
        ],
    )
    now = int(time.time() * 1000)
    views = {v.id: v for v in fleet(store, _Site(), now_ms=now + 700)}
    # b samples every 200 ms: 700 ms of silence is more than three of its intervals
    assert (views["a"].state, views["b"].state, views["c"].state, views["d"].state) == (
        "online",
        "stale",
        "offline",
        "unknown",
    )
    assert views["a"].fw == "1.0" and views["a"].rssi == -50 and views["d"].board == "esp32s3"
    assert views["ghost"].in_site is False and list(views)[:4] == ["a", "b", "c", "d"]
    store.close()


def test_metrics_and_healthz_endpoints():
    m = Metrics()
    srv = MetricsServer(
        m,
        "127.0.0.1",
        0,
        routes={("GET", "/secret"): lambda h, q, b: (200, "text/plain", b"x")},
        token="t0k",
        private={"/secret"},
    )
    srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        with __import__("pytest").raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(base + "/healthz")
        assert exc.value.code == 503 and json.loads(exc.value.read())["subscribed"] is False
        m.link = types.SimpleNamespace(connected=True, subscribed=True)  # the bus's link state
        m.received, m.stored, m.duplicates = 10, 7, 1
        m.rejected["node_mismatch"] += 2
        assert urllib.request.urlopen(base + "/healthz").status == 200
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "gridtwin_received_total 10" in text and "gridtwin_stored_total 7" in text
        assert (
            'gridtwin_rejected_total{reason="node_mismatch"} 2' in text
            and "gridtwin_duplicates_total 1" in text
        )
        with __import__("pytest").raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(base + "/secret")
        assert exc.value.code == 401
        req = urllib.request.Request(base + "/secret", headers={"Authorization": "Bearer t0k"})
        assert urllib.request.urlopen(req).read() == b"x"
    finally:
        srv.stop()


def test_daemon_retention_folds_old_readings(tmp_path):
    from gridtwin.daemon.connection import Endpoint
    from gridtwin.daemon.service import Daemon

    ep = Endpoint("127.0.0.1", 1, tmp_path / "ca", tmp_path / "c", tmp_path / "k", "gridtwin/t")
    d = Daemon(
        endpoint=ep, db_path=tmp_path / "db", metrics_port=None, raw_days=1
    )  # not started: no broker needed
    now = int(time.time() * 1000)
    old = [
        validate.telemetry(
            "n1",
            json.dumps(
                {
                    "v": 1,
                    "node": "n1",
                    "boot": 1,
                    "seq": i,
                    "ts": now - 2 * 86400_000 + i,
                    "m": {"t": 1.0},
                }
            ).encode(),
            validate.Limits(max_past_ms=3 * 86400_000),
        )
        for i in range(3)
    ]
    d.store.write_batch(
        old
        + [
            validate.telemetry(
                "n1",
                json.dumps(
                    {"v": 1, "node": "n1", "boot": 1, "seq": 3, "ts": now, "m": {"t": 2.0}}
                ).encode(),
            )
        ]
    )
    assert d.maintain(now) == 3
    assert [v for _t, v in d.store.query("n1", "t", since_ms=0)] == [1.0, 2.0]
    d.store.close()


def test_systemd_unit_restarts_and_confines(tmp_path):
    from gridtwin.daemon.systemd import render_unit

    class S:
        id, path, var_dir = "demo", tmp_path / "site.toml", tmp_path / "var"

    unit = render_unit(S(), user="gridtwin", exe="/opt/gt/bin/gridtwin")
    sections = {}
    current = None
    for line in unit.splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            current[k] = v
    assert sections["Service"]["Restart"] == "always" and sections["Service"]["User"] == "gridtwin"
    assert sections["Service"]["ExecStart"].startswith("/opt/gt/bin/gridtwin --site ")
    assert sections["Service"]["ReadWritePaths"] == str((tmp_path / "var").resolve())
    assert (
        "StartLimitBurst" in sections["Unit"]
        and sections["Install"]["WantedBy"] == "multi-user.target"
    )


def test_registry_changes_and_alerts_go_on_the_bus(fleet_broker, tmp_path, mqtt_client):
    """A node that goes silent raises an alert (stored, retained on _host/alerts) that clears
    when it is back; every state change is published on _host/nodes/<id>, retained."""
    from fixtures.daemon_fleet import NodeClient, endpoint, telemetry_payload, wait_for
    from gridtwin.daemon.service import Daemon

    root = fleet_broker.site.topic_root
    watcher = mqtt_client("telegraf", broker=fleet_broker)  # a read-only service, as Grafana's feed
    watcher.subscribe(f"{root}/_host/#")
    d = Daemon(
        endpoint=endpoint(fleet_broker),
        db_path=tmp_path / "db",
        metrics_port=None,
        stale_intervals=3,
        watch_interval=3600,
    )  # the test drives watch_registry itself
    delivered = []  # every topic the broker hands the daemon
    inner = d.bus.sink
    d.bus.sink = lambda messages: (
        delivered.extend(m[3] for m in messages),
        inner(messages),
    )
    d.start()
    node = NodeClient(fleet_broker, "node07")
    try:
        assert d.ingest.wait_connected()
        assert json.loads(watcher.wait_for(f"{root}/_host/daemon/+").payload)["state"] == "online"
        node.publish(
            json.dumps({"state": "online", "fw": "1.0", "interval": 100}).encode(),
            "status",
            retain=True,
        )
        node.publish(telemetry_payload("node07", 1, 0))
        wait_for(lambda: d.metrics.stored == 1, 10, "the first reading")
        now = int(time.time() * 1000)
        assert d.watch_registry(now) == {"node07": "online"}
        msg = watcher.wait_for(f"{root}/_host/nodes/node07")
        assert json.loads(msg.payload)["state"] == "online"
        assert d.watch_registry(now + 1000) == {"node07": "stale"}  # 1 s > 3 x 100 ms
        alert = json.loads(watcher.wait_for(f"{root}/_host/alerts/node07/node_stale").payload)
        assert alert["kind"] == "node_stale" and alert["node"] == "node07"
        assert count_alerts(tmp_path / "db", active=1) == 1
        node.publish(telemetry_payload("node07", 1, 1))
        # the watch hears of it after the commit's listeners ran (a moment after `stored` counts it)
        wait_for(lambda: d.watch_registry().get("node07") == "online", 10, "node07 online again")
        cleared = watcher.wait_for(
            f"{root}/_host/alerts/node07/node_stale", where=lambda m: m.payload == b""
        )
        assert cleared.payload == b"" and count_alerts(tmp_path / "db", active=1) == 0
        # what the daemon published (node states, alerts) is not sent back to it (MQTT 5 No
        # Local): node07's later reading came after all of it and was delivered, they were not.
        # (Its own status it published as it connected comes back as the retained message its
        # subscription starts with.)
        assert f"{root}/node07/telemetry" in delivered
        assert [t for t in delivered if "/_host/" in t] == [f"{root}/_host/daemon/gridtwin-daemon"]
    finally:
        node.close()
        d.stop()
    assert (
        json.loads(
            watcher.wait_for(
                f"{root}/_host/daemon/+", where=lambda m: b"offline" in m.payload
            ).payload
        )["state"]
        == "offline"
    )


def count_alerts(db, active):
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM alerts WHERE active=?", (active,)).fetchone()[0]
    finally:
        conn.close()


def test_one_daemon_per_database_and_client_id(tmp_path, site_pki):
    import pytest
    from gridtwin.daemon.connection import Endpoint
    from gridtwin.daemon.service import Daemon
    from gridtwin.errors import GridTwinError
    from gridtwin.pki import HOST_IDENTITY

    pki = site_pki.pki
    # a broker port nobody listens on: the first daemon just keeps retrying in the background
    ep = Endpoint(
        "127.0.0.1",
        9,
        pki.ca_cert_path,
        pki.cert_path(HOST_IDENTITY),
        pki.key_path(HOST_IDENTITY),
        "gt/x",
    )
    first = Daemon(endpoint=ep, db_path=tmp_path / "db", metrics_port=None).start()
    try:
        second = Daemon(endpoint=ep, db_path=tmp_path / "db", metrics_port=None)
        with pytest.raises(GridTwinError, match="another daemon is running") as exc:
            second.start()
        assert "client_id" in exc.value.hint
        second.store.close()
        other = Daemon(
            endpoint=ep, db_path=tmp_path / "db", client_id="gridtwin-daemon-2", metrics_port=None
        ).start()
        other.stop()
    finally:
        first.stop()
    Daemon(
        endpoint=ep, db_path=tmp_path / "db", metrics_port=None
    ).start().stop()  # the lock went with it


def test_the_node_watch_is_kept_by_events_not_by_walking_the_fleet(tmp_path):
    """Issue #20: an idle daemon with 10,000 known nodes walked all of them every second. Now a
    check reads only the nodes that spoke or whose silence just ran out."""
    from gridtwin.daemon.alerts import Alerts, NodeWatch

    store = SqliteStore(tmp_path / "db")
    ids = [f"n{i:05d}" for i in range(10_000)]
    store.ensure_nodes(ids)
    published = []
    bus = types.SimpleNamespace(
        publish_host=lambda suffix, payload, retain=True: published.append(suffix)
    )
    watch = NodeWatch(store, bus, Alerts(store, bus), stale_intervals=3)
    reads = []
    real = store.node_row
    store.node_row = lambda nid: reads.append(nid) or real(nid)
    t0 = int(time.time() * 1000)
    watch.check(t0)  # the one walk, at start
    published.clear()
    for k in range(100):  # idle: nothing to read, nothing to say
        assert watch.check(t0 + k * 1000) == {}
    assert reads == []
    # n00007 says hello: its birth is read once, then its readings only move its deadline
    now = int(time.time() * 1000)
    store.write_batch([], statuses=[("n00007", {"state": "online", "interval": 1000})])
    watch.note((), [("n00007", {})])
    assert watch.check(now) == {"n00007": "online"} and reads == ["n00007"]
    for k in range(1, 4):
        store.write_batch(
            [
                validate.telemetry(
                    "n00007",
                    json.dumps(
                        {"v": 1, "node": "n00007", "boot": 1, "seq": k, "ts": now, "m": {"t": 1.0}}
                    ).encode(),
                )
            ]
        )
        watch.note([types.SimpleNamespace(node="n00007")], ())
        assert watch.check(now + k) == {}
    assert reads == ["n00007"]
    # silent past 3 intervals: exactly that node is looked at again, and it is stale
    late = int(time.time() * 1000) + 3001
    assert watch.check(late) == {"n00007": "stale"} and reads == ["n00007", "n00007"]
    assert "alerts/n00007/node_stale" in published
    store.close()


def test_a_crowd_of_nodes_going_silent_is_one_log_line_and_every_alert_kept(tmp_path, caplog):
    """A switch that fails takes hundreds of nodes at once: each still gets its alert and its
    state on the bus, but the log says it in one line (a line each was a flood, and the time they
    took came out of ingest's share of the GIL); a few nodes still get a line each."""
    from gridtwin.daemon.alerts import SAY_EACH, Alerts, NodeWatch

    store = SqliteStore(tmp_path / "db")
    published = {}
    bus = types.SimpleNamespace(
        publish_host=lambda suffix, payload, retain=True: published.update({suffix: payload})
    )
    watch = NodeWatch(store, bus, Alerts(store, bus), stale_intervals=3)
    now = int(time.time() * 1000)
    crowd = [f"n{i:03d}" for i in range(40)]

    def readings(ids, seq):  # one reading of each node, stored
        store.write_batch(
            [
                validate.telemetry(
                    nid,
                    json.dumps(
                        {"v": 1, "node": nid, "boot": 1, "seq": seq, "ts": now, "m": {"t": 1.0}}
                    ).encode(),
                )
                for nid in ids
            ]
        )

    readings(crowd, 1)
    assert set(watch.check(now).values()) == {"online"}  # the first check reads the fleet
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gridtwin.daemon"):
        went = watch.check(int(time.time() * 1000) + 3001)
    assert went == {nid: "stale" for nid in crowd}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert")]
    assert len(lines) == 1 and "40 nodes stopped sending" in lines[0], lines
    assert count_alerts(tmp_path / "db", active=1) == 40
    assert all(f"alerts/{nid}/node_stale" in published for nid in crowd)
    state = published["nodes/n007"]  # the view's fields as they are, and when
    assert state["id"] == "n007" and state["state"] == "stale" and json.dumps(state)
    # a few nodes: a line each
    few = crowd[:SAY_EACH]
    readings(few, 2)
    watch.note([types.SimpleNamespace(node=nid) for nid in few], ())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gridtwin.daemon"):
        assert set(watch.check(int(time.time() * 1000)).values()) == {"online"}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert")]
    assert sorted(lines) == sorted(f"alert cleared: {nid} is online again" for nid in few)
    store.close()


def test_silence_while_the_daemon_was_not_subscribed_does_not_count(tmp_path):
    """A broker restart: what the nodes sent meanwhile waits in the broker for the daemon's
    session. The first check after the daemon subscribed again found every node's last reading
    older than three intervals and turned the fleet "stale", alerts and all, before the broker had
    sent the backlog. Silence counts from the subscribe; a node still silent three intervals after
    it is stale."""
    from gridtwin.daemon.alerts import Alerts, NodeWatch

    store = SqliteStore(tmp_path / "db")
    bus = types.SimpleNamespace(publish_host=lambda suffix, payload, retain=True: None)
    alerts = Alerts(store, bus)
    watch = NodeWatch(store, bus, alerts, stale_intervals=3)
    now = int(time.time() * 1000)
    ids = ["a", "b"]
    store.write_batch(
        [
            validate.telemetry(
                nid,
                json.dumps(
                    {"v": 1, "node": nid, "boot": 1, "seq": 1, "ts": now, "m": {"t": 1.0}}
                ).encode(),
            )
            for nid in ids
        ]
    )
    assert watch.check(now) == {"a": "online", "b": "online"}
    watch.relisten(now + 10_000)  # the link was down 10 s, the daemon has just subscribed again
    assert watch.check(now + 10_500) == {}
    assert alerts.raised == {}
    # what the daemon shows (/metrics, the web view) is its watch's judgment; the table alone,
    # as `gridtwin nodes` reads it with no daemon running, says stale
    shown = {v.id: v.state for v in fleet(store, None, now + 10_500, judged=watch.states)}
    assert shown == {"a": "online", "b": "online"}
    assert {v.state for v in fleet(store, None, now + 10_500)} == {"stale"}
    assert watch.check(now + 13_002) == {"a": "stale", "b": "stale"}  # silent 3 s since
    store.close()


def test_the_daemons_own_views_show_its_watchs_judgment(fleet_broker, tmp_path):
    """/metrics' per-node gauges and the web view's fleet show the node watch's state (the one
    the alerts follow) while the daemon listens, not a state recomputed from the table, which
    after a broker restart said stale where the watch knew better; with the link down they read
    the table."""
    from fixtures.daemon_fleet import NodeClient, endpoint, telemetry_payload, wait_for
    from gridtwin.daemon.service import Daemon
    from gridtwin.web import WebView

    d = Daemon(endpoint=endpoint(fleet_broker), db_path=tmp_path / "db", metrics_port=None).start()
    node = NodeClient(fleet_broker, "node07")
    try:
        assert d.ingest.wait_connected()
        node.publish(telemetry_payload("node07", boot=1, seq=0))
        wait_for(lambda: d.store.node_row("node07"), 10, "node07's reading to be stored")
        assert d.watch_registry() == {"node07": "online"}
        web = WebView.for_daemon(d)
        # the table says online (a reading a moment ago); the watch's judgment is what shows
        d.nodewatch.states["node07"] = "stale"
        gauges = dict(d._node_gauges())
        rows = {r["id"]: r for r in web._fleet_rows(int(time.time() * 1000))}
        assert gauges["node07"]["online"] == 0 and rows["node07"]["state"] == "stale"
        d.bus.subscribed = False  # the link is down: the watch knows no better than the table
        assert dict(d._node_gauges())["node07"]["online"] == 1
    finally:
        node.close()
        d.bus.subscribed = True
        d.stop()
