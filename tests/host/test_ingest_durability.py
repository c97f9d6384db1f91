"""Nothing is lost, nothing is stored twice: daemon kill -9, broker restart, two daemons sharing.

Real mosquitto (mutual TLS, ACL, persistence), real paho clients with node certificates, the
daemon as its own process where it must be killed.
"""

import contextlib
import json
import dataclasses
import threading
import time

import pytest

from fixtures.broker import make_site_pki
from fixtures.daemon_fleet import (
    FLEET as NODES,
    HOST_ID,
    DaemonProcess,
    NodeClient,
    count_rows,
    endpoint,
    fleet_site_text,
    telemetry_payload,
    wait_for,
)
from gridtwin.daemon.connection import BufferedClient, endpoint_from_site
from gridtwin.daemon.service import Daemon

pytestmark = pytest.mark.broker


class Stream:
    """50 nodes publishing QoS 1 telemetry in rounds from a background thread."""

    def __init__(self, broker, per_node: int, pause: float = 0.02):
        self.nodes = [NodeClient(broker, n) for n in NODES]
        wait_for(
            lambda: all(c.client.is_connected() for c in self.nodes), 20, "50 node connections"
        )
        self.per_node, self.pause = per_node, pause
        self.sent = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for seq in range(self.per_node):
            for c in self.nodes:
                c.publish(telemetry_payload(c.node, boot=1, seq=seq))
                self.sent += 1
            self.done.wait(self.pause)
        self.done.set()

    def start(self):
        self.thread.start()
        return self

    def finish(self, timeout=60):
        self.thread.join(timeout)
        wait_for(
            lambda: sum(c.unacked() for c in self.nodes) == 0,
            timeout,
            "the broker to accept every message",
        )
        for c in self.nodes:
            c.close()

    @property
    def expected(self):
        return {(n, s) for n in NODES for s in range(self.per_node)}


def stored_keys(db):
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT node, boot, seq FROM readings").fetchall()
    finally:
        conn.close()
    return rows


def _readings(db) -> int:
    """The numeric readings stored (what analytics analyses: each metric of each message)."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT count(*) FROM readings, json_each(readings.msg) "
            "WHERE json_each.type IN ('integer', 'real')"
        ).fetchone()[0]
    finally:
        conn.close()


def assert_exactly_once(rows, expected):
    keys = [(n, s) for n, _b, s in rows]
    assert len(keys) == len(set(keys)), "a message was stored twice"
    missing = expected - set(keys)
    assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:5]}"
    assert len(keys) == len(expected)


def test_kill_9_of_the_daemon_mid_stream_loses_nothing(fleet_broker, tmp_path):
    db = tmp_path / "gridtwin.db"
    daemon = DaemonProcess(fleet_broker, db).start()
    stream = Stream(fleet_broker, per_node=60).start()
    try:
        wait_for(lambda: count_rows(db) >= 300, 60, "the daemon to store a first part")
        daemon.kill9()  # mid-stream, with batches in flight and acks unsent
        assert stream.sent < 3000 and not stream.done.is_set(), "the stream ended before the kill"
        after_kill = count_rows(db)
        daemon = DaemonProcess(fleet_broker, db).start()
        stream.finish()
        wait_for(lambda: count_rows(db) == 3000, 60, "every message to be stored after the restart")
        assert after_kill < 3000
        assert_exactly_once(stored_keys(db), stream.expected)
    finally:
        daemon.stop()


def test_broker_restart_mid_stream_loses_nothing(fleet_broker, tmp_path):
    db = tmp_path / "gridtwin.db"
    daemon = Daemon(endpoint=endpoint(fleet_broker), db_path=db, metrics_port=None).start()
    try:
        assert daemon.ingest.wait_connected()
        stream = Stream(fleet_broker, per_node=40).start()
        wait_for(lambda: daemon.metrics.stored >= 300, 60, "a first part to be stored")
        assert not stream.done.is_set(), "the stream ended before the broker restart"
        listening = daemon.nodewatch._listening_since
        fleet_broker.restart()  # SIGTERM: mosquitto saves sessions and queues
        # the node watch hears of the new subscribe: silence counts from it (the unit test:
        # test_daemon_registry.py::test_silence_while_the_daemon_was_not_subscribed_does_not_count)
        wait_for(lambda: daemon.nodewatch._listening_since > listening, 30, "the resubscribe")
        stream.finish(timeout=90)
        wait_for(
            lambda: count_rows(db) == 2000,
            60,
            "every message to be stored after the broker restart",
        )
        assert_exactly_once(stored_keys(db), stream.expected)
        assert daemon.metrics.connected and daemon.metrics.rejected_total == 0
    finally:
        daemon.stop()


def test_the_last_burst_is_stored_and_acked_with_nothing_after_it(fleet_broker, tmp_path):
    """Two shortcuts of the receive path must not strand the last burst when silence follows it
    (the next keepalive is 30 s away): OpenSSL reads ahead (bytes it holds are invisible to
    select), and a batch's acks are queued without waking the network thread (they leave with
    its next read, or the writer wakes it once no message has come for ACK_HOLD_S). Every message
    is stored once, and the broker gets every ack: nothing is left in the session's queue."""
    db = tmp_path / "gridtwin.db"
    daemon = Daemon(endpoint=endpoint(fleet_broker), db_path=db, metrics_port=None).start()
    try:
        assert daemon.ingest.wait_connected()
        assert daemon.bus.read_ahead
        stream = Stream(fleet_broker, per_node=20, pause=0.2).start()
        stream.finish()
        wait_for(lambda: count_rows(db) == 1000, 10, "the last burst without any traffic after it")
        assert_exactly_once(stored_keys(db), stream.expected)
        wait_for(lambda: not daemon.bus.acks_waiting(), 5, "the last acks to be written")
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def two_instance_site(tmp_path_factory):
    """The fleet site with `[daemon] instances = 2`: its PKI holds gridtwin-host and
    gridtwin-host-2."""
    return make_site_pki(
        tmp_path_factory.mktemp("fleet2"), fleet_site_text(extra="[daemon]\ninstances = 2\n")
    )


def site_daemon(sp, broker, instance, db):
    """Daemon instance K as `gridtwin daemon --instance K` builds it, pointed at the test broker's
    port."""
    ep = dataclasses.replace(
        endpoint_from_site(sp.site, instance=instance), host=broker.host, port=broker.port
    )
    return Daemon.from_site(sp.site, instance=instance, endpoint=ep, db_path=db, metrics_port=None)


def test_two_daemons_on_a_shared_subscription_split_the_stream(
    broker_factory, two_instance_site, tmp_path
):
    # The broker exactly as rendered (CN = username = client id): each instance has its own
    # certificate, hence its own session, and both store into one database.
    fleet_broker = broker_factory(two_instance_site)
    db = tmp_path / "gridtwin.db"
    daemons = [site_daemon(two_instance_site, fleet_broker, k, db).start() for k in (1, 2)]
    try:
        assert [d.endpoint.cert.parent.name for d in daemons] == [
            "gridtwin-host",
            "gridtwin-host-2",
        ]
        assert {d.ingest.shared_group for d in daemons} == {"ingest"}
        for d in daemons:
            assert (
                d.ingest.wait_connected()
            )  # subscribed: the broker queues for the group from now on
        stream = Stream(fleet_broker, per_node=30).start()
        stream.finish()
        wait_for(lambda: count_rows(db) >= 1500, 60, "the two daemons to store everything")
        wait_for(
            lambda: sum(d.metrics.received for d in daemons) >= 1500, 10, "both writers to finish"
        )
        got = [d.metrics.received for d in daemons]
        assert all(got), f"one daemon got nothing ({got}): the subscription was not shared"
        assert sum(got) == 1500, f"{got}: a message reached both daemons"
        assert sum(d.metrics.duplicates for d in daemons) == 0
        assert_exactly_once(stored_keys(db), stream.expected)
        assert [d.ingest._gen for d in daemons] == [1, 1], "a daemon lost its session to the other"
        for cid in ("gridtwin-host", "gridtwin-host-2"):
            assert f" as {cid} " in fleet_broker.log, f"the broker did not see client id {cid}"
        # instance 1 runs analytics for both: the rows instance 2 committed between (and after)
        # instance 1's commits are read back from the database, none is left out
        an = daemons[0].analytics
        assert an is not None and daemons[1].analytics is None
        readings = _readings(db)
        wait_for(lambda: an.stats["analysed"] >= readings, 30, f"analytics to see all {readings}")
        assert an.stats["analysed"] == readings and an.stats["replayed"] > 0
        assert an.dropped == 0 and an.stats["dropped"] == 0
    finally:
        for d in daemons:
            d.stop()


def test_instance_2_cannot_take_over_instance_1s_session(
    broker_factory, two_instance_site, mqtt_client, tmp_path
):
    """A client with instance 2's certificate asking for instance 1's client ids (and a clean
    session, which would wipe the queue) gets a session of its own: the broker uses the CN."""
    b = broker_factory(two_instance_site)
    db = tmp_path / "gridtwin.db"
    d1 = site_daemon(two_instance_site, b, 1, db).start()
    node = None
    try:
        assert d1.ingest.wait_connected()
        for claimed in ("gridtwin-host", d1.ingest.client_id):
            mark = len(b.log)
            intruder = mqtt_client(
                "gridtwin-host-2", client_id=claimed, broker=b
            )  # CONNACK received
            assert intruder.connected
            b.wait_for_log(r"as gridtwin-host-2 ", start=mark)
            intruder.close()
        node = NodeClient(b, NODES[0])
        node.publish(telemetry_payload(NODES[0], boot=1, seq=0))
        # MQTT keeps order per connection: had instance 1 been kicked, the sentinel would arrive on
        # its next connection (generation 2); it arrives on the first and is stored.
        wait_for(lambda: count_rows(db) == 1, 20, "instance 1 to store the sentinel")
        assert d1.ingest._gen == 1 and d1.metrics.connected
        assert "already connected, closing old connection" not in b.log
    finally:
        if node:
            node.close()
        d1.stop()


@contextlib.contextmanager
def _db_locked(daemon, db):
    """While the block runs another process holds the database's write lock: nothing commits, so
    nothing is acked."""
    import sqlite3

    assert daemon.ingest.wait_connected()
    daemon.store.conn.execute("PRAGMA busy_timeout=50")  # fail fast instead of waiting 30 s
    locker = sqlite3.connect(db, timeout=0)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        locker.rollback()
        locker.close()


def test_a_locked_database_holds_ingest_back_without_loss_or_unbounded_memory(
    fleet_broker, tmp_path
):
    """The database refuses writes for a while (another process holds its lock): the writer retries
    with backoff and acks nothing, the MQTT thread stops reading once two batches wait, the broker
    keeps the rest; when the lock goes, everything is stored exactly once."""
    db = tmp_path / "gridtwin.db"
    daemon = Daemon(
        endpoint=endpoint(fleet_broker), db_path=db, metrics_port=None, batch_max=50
    ).start()
    try:
        with _db_locked(daemon, db):
            stream = Stream(fleet_broker, per_node=20, pause=0).start()
            stream.finish()  # the broker has all 1,000 messages
            wait_for(lambda: daemon.metrics.store_errors > 0, 10, "the writer to hit the lock")
            inbox = daemon.ingest._inbox
            # the network thread hands over what one read brought (64 KiB at most: packets of
            # these messages are over 100 bytes) and then stops
            one_read = BufferedClient._READ // 100
            assert len(inbox) <= daemon.ingest.max_queued + one_read, f"{len(inbox)} held"
            assert daemon.metrics.health()[0] is False  # /healthz says something is wrong
        wait_for(
            lambda: count_rows(db) == 1000, 60, "everything to be stored once the lock is gone"
        )
        assert_exactly_once(stored_keys(db), stream.expected)
    finally:
        daemon.stop()


def test_nodes_whose_readings_wait_in_a_stalled_daemon_are_not_stale(fleet_broker, tmp_path):
    """The database is locked (or the daemon froze): the nodes go on sending, their readings wait
    in the daemon and the broker. The node watch judged silence by when readings were stored, so
    every node of the fleet turned "stale" with an alert, then "online" again as the backlog was
    stored: a false alert for each node. Silence counts only up to what the daemon has heard."""
    import time

    db = tmp_path / "gridtwin.db"
    # the watch runs when the test says (watch_registry) and at the test's clock
    daemon = Daemon(
        endpoint=endpoint(fleet_broker), db_path=db, metrics_port=None, watch_interval=3600
    ).start()
    try:
        first = Stream(fleet_broker, per_node=1, pause=0).start()
        first.finish()
        wait_for(lambda: count_rows(db) == len(NODES), 20, "a first reading of every node")
        assert set(daemon.watch_registry().values()) == {"online"}
        with _db_locked(daemon, db):
            stalled_at = int(time.time() * 1000)
            more = Stream(fleet_broker, per_node=3, pause=0).start()
            more.finish()  # they keep sending: the readings wait for the lock
            wait_for(lambda: daemon.metrics.store_errors > 0, 10, "the writer to hit the lock")
            # ten seconds on: every node would be 3 intervals (3 s) past its last stored reading
            assert daemon.watch_registry(stalled_at + 10_000) == {}
        # (the second stream starts at seq 0 again: that one is a duplicate, stored once)
        wait_for(lambda: count_rows(db) == 3 * len(NODES), 60, "the backlog to be stored")
        assert daemon.watch_registry() == {}
        assert daemon.alerts.raised == {}, "an alert for a node that never stopped sending"
        # a node that does stop, while the daemon keeps up, is still stale three intervals on
        assert set(daemon.watch_registry(int(time.time() * 1000) + 3_500).values()) == {"stale"}
    finally:
        daemon.stop()


def test_a_daemon_that_stood_still_raises_no_alert_for_nodes_that_kept_sending(
    fleet_broker, tmp_path, mqtt_client
):
    """The daemon's process stands still (SIGSTOP here; a VM paused, a Pi swapping) while the
    nodes go on sending: the broker keeps their readings. When it runs again, the node watch found
    every node's last reading older than three intervals and raised an alert for each, before the
    backlog was stored (1,000 of them after a SIGSTOP of a bench daemon)."""
    import signal
    import time

    from gridtwin.identities import TELEGRAF_IDENTITY

    db = tmp_path / "gridtwin.db"
    states = mqtt_client(TELEGRAF_IDENTITY, broker=fleet_broker)  # the daemon's view of each node
    states.subscribe(f"{fleet_broker.root}/_host/nodes/#")
    daemon = DaemonProcess(fleet_broker, db).start()
    stream = Stream(fleet_broker, per_node=40, pause=0.2).start()
    try:
        for _ in NODES:
            states.wait_for(where=lambda m: json.loads(m.payload)["state"] == "online", timeout=20)
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(4.5)  # the scenario itself: longer than three of the nodes' 1 s intervals
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        # the daemon saw that it stood still (its maintenance thread's 1 s wait ran 4 s over), so
        # silence counts from now even for readings the broker still holds (what the kernel had
        # buffered meanwhile counts through heard_until alone; without this line the test passes
        # on that alone, so the line is what shows the standstill was seen)
        wait_for(
            lambda: "the daemon stood still for" in daemon.log.read_text(), 10, "the standstill"
        )
        stream.finish()
        wait_for(lambda: count_rows(db) == 40 * len(NODES), 60, "every reading to be stored")
        assert_exactly_once(stored_keys(db), stream.expected)
        stale = "SELECT count(*) FROM alerts WHERE kind = 'node_stale'"
        assert count_rows(db, stale) == 0, "alerts for nodes that never stopped sending"
    finally:
        daemon.stop()


def test_receive_maximum_is_how_many_unacknowledged_messages_the_broker_sends_the_daemon(
    fleet_broker, tmp_path
):
    """`[daemon] receive_maximum` is the daemon's window: while nothing it received is acked (the
    database locked) the broker sends it that many messages and keeps the rest, whatever the
    broker's own max_inflight_messages (100 here). The daemon's 3.1.1 session ignored it: the
    broker sent 100. Once the lock goes everything is stored, once."""
    import time

    db = tmp_path / "gridtwin.db"
    daemon = Daemon(
        endpoint=endpoint(fleet_broker),
        db_path=db,
        metrics_port=None,
        batch_max=50,
        receive_maximum=20,
    )
    got = []
    inner = daemon.bus.sink

    def sink(messages):  # everything the broker hands the daemon, QoS 1
        got.extend((topic, qos) for _gen, _mid, qos, topic, _payload in messages)
        inner(messages)

    daemon.bus.sink = sink
    daemon.start()
    # (the daemon's own retained status, delivered as it subscribes, is outside the window)
    telemetry = lambda: [t for t, qos in got if t.endswith("/telemetry") and qos == 1]  # noqa: E731
    try:
        with _db_locked(daemon, db):
            stream = Stream(fleet_broker, per_node=4, pause=0).start()
            stream.finish()  # the broker has all 200 messages
            wait_for(lambda: len(telemetry()) >= 20, 10, "the daemon's window to fill")
            wait_for(lambda: daemon.metrics.store_errors > 0, 10, "the writer to hit the lock")
            time.sleep(0.5)  # the broker would have sent more by now (it sent 100 within this)
            assert len(telemetry()) == 20, f"the broker sent {len(telemetry())} unacknowledged"
        wait_for(lambda: count_rows(db) == 200, 60, "everything stored once the lock is gone")
        assert_exactly_once(stored_keys(db), stream.expected)
    finally:
        daemon.stop()


def test_a_session_an_older_daemon_kept_on_mqtt_3_1_1_is_resumed(fleet_broker, tmp_path):
    """Daemons before this one kept their broker session on MQTT 3.1.1 (clean_session off); the
    daemon now connects with MQTT 5 under the same client id. What the broker queued for the old
    session while the daemon was stopped (an upgrade) is delivered to the new one and stored."""
    ep = endpoint(fleet_broker)
    old = ep.client(HOST_ID, persistent=True, manual_ack=True, v5=False)
    subscribed = threading.Event()
    old.on_subscribe = lambda *_a: subscribed.set()
    old.on_connect = lambda c, *_a: c.subscribe(f"{fleet_broker.site.topic_root}/#", 1)
    ep.connect(old, persistent=True)
    old.loop_start()
    assert subscribed.wait(10), "the 3.1.1 session did not subscribe"
    old.disconnect()
    old.loop_stop()
    stream = Stream(fleet_broker, per_node=4, pause=0).start()
    stream.finish()  # queued for the stopped 3.1.1 session
    db = tmp_path / "gridtwin.db"
    daemon = Daemon(endpoint=ep, db_path=db, client_id=HOST_ID, metrics_port=None).start()
    try:
        wait_for(lambda: count_rows(db) == 200, 60, "the old session's queue stored")
        assert_exactly_once(stored_keys(db), stream.expected)
        assert daemon.bus.client.protocol == 5
    finally:
        daemon.stop()


def test_a_reading_sent_with_mqtt_5_properties_is_stored_as_sent(
    fleet_broker, tmp_path, mqtt_client
):
    """The daemon's fast receive path reads an MQTT 5 PUBLISH itself: the properties a v5
    publisher attaches, which the broker forwards, are skipped (one of more than 127 bytes: a
    two-byte length), never read as the start of the payload."""
    import sqlite3

    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    db = tmp_path / "gridtwin.db"
    daemon = Daemon(endpoint=endpoint(fleet_broker), db_path=db, metrics_port=None).start()
    try:
        assert daemon.ingest.wait_connected()
        node = NODES[0]
        pub = mqtt_client(node, broker=fleet_broker, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("note", "x" * 200), ("k", "v")]
        props.ContentType = "application/json"
        props.MessageExpiryInterval = 3600
        payload = telemetry_payload(node, boot=1, seq=0)
        topic = f"{fleet_broker.site.topic_root}/{node}/telemetry"
        pub.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)
        wait_for(lambda: count_rows(db) == 1, 10, "the reading to be stored")
        assert daemon.metrics.rejected_total == 0
        conn = sqlite3.connect(db)
        try:
            (msg,) = conn.execute("SELECT msg FROM readings").fetchone()
        finally:
            conn.close()
        assert json.loads(msg) == json.loads(payload)["m"]
    finally:
        daemon.stop()


def test_the_linger_is_long_only_while_the_rate_makes_it_pay():
    """A small batch waits for more before its commit: linger_ms (100) from LINGER_RATE msg/s up,
    where it makes one transaction of ~100 messages instead of ~20 (1,000 nodes at 1 Hz); below
    that QUIET_LINGER_S at most, so a quiet site's readings and acks are not held 100 ms for a
    transaction that would carry one or two messages anyway. The rate is the last second's."""
    import time
    import types

    from gridtwin.daemon import config as dconfig
    from gridtwin.daemon.ingest import LINGER_RATE, LINGER_S, QUIET_LINGER_S, Ingest

    # the setting's default (site.toml) and what its help says are the writer's
    key = dconfig.DAEMON.keys["linger_ms"]
    assert key.default == round(LINGER_S * 1000) == 100
    assert f"{LINGER_RATE} msg/s" in key.help and f"{round(QUIET_LINGER_S * 1000)} ms" in key.help
    bus = types.SimpleNamespace(root="gridtwin/t", sink=None)
    ing = Ingest(bus, store=None, linger_s=0.1)
    assert ing._linger() == QUIET_LINGER_S  # nothing received yet
    ing._counted, ing._count_since = LINGER_RATE * 2, time.monotonic() - 1.0  # 1,000 nodes at 1 Hz
    assert ing._linger() == 0.1
    ing._counted, ing._count_since = 0, time.monotonic() - 1.0  # a second later, quiet again
    assert ing._linger() == QUIET_LINGER_S
    ing._counted, ing._count_since = LINGER_RATE // 4, time.monotonic() - 1.0  # 50 msg/s
    assert ing._linger() == QUIET_LINGER_S
    assert Ingest(bus, store=None, linger_s=0.005)._linger() == 0.005  # never above the setting


def test_the_network_thread_lets_a_batch_gather_while_the_writer_lingers():
    """At 1,000 nodes x 1 Hz paho's thread woke for every few messages, and each wake-up of a
    thread that slept cost more than the messages it read. While the writer lingers (from
    LINGER_RATE msg/s up) the thread lets the socket fill until about when LINGER_UNTIL messages
    will wait or the linger ends, READ_EARLY_S before either; never when quiet or full."""
    import time
    import types

    from gridtwin.daemon.ingest import LINGER_RATE, LINGER_UNTIL, READ_EARLY_S, Ingest

    bus = types.SimpleNamespace(root="gridtwin/t", sink=None, read_pause=None)
    ing = Ingest(bus, store=None, linger_s=0.1)
    assert bus.read_pause == ing._read_pause  # the bus hands it to its network thread
    assert ing._read_pause() == 0.0  # nothing waits
    ing._on_raw([(1, 1, 1, "gridtwin/t/n1/telemetry", b"{}")])
    assert ing._read_pause() == 0.0  # quiet: the writer does not linger long, nor does this
    ing._rate = 1000.0  # 1,000 nodes at 1 Hz (above LINGER_RATE)
    assert ing._rate >= LINGER_RATE
    pause = ing._read_pause()  # (LINGER_UNTIL - 1) messages at 1,000 msg/s: the rest of the linger
    assert 0.1 - READ_EARLY_S - 0.02 < pause <= 0.1 - READ_EARLY_S
    ing._rate = 10_000.0  # the batch fills in ~10 ms: a pause of a few
    assert (LINGER_UNTIL - 1) / 10_000 - READ_EARLY_S - 0.001 < ing._read_pause() < 0.01
    ing._pending_since = int(time.time() * 1000) - 200  # the linger is over: read on
    assert ing._read_pause() < 0
    ing._inbox.extend([None] * LINGER_UNTIL)  # a batch worth committing waits: read on
    ing._pending_since = int(time.time() * 1000)
    assert ing._read_pause() == 0.0


class _AckBus:
    """What Ingest asks of its bus, recording the acks (no broker: the test is the broker)."""

    root, client_id, shared_group, generation = "gridtwin/t", "t", "", 1
    sink = read_pause = None

    def __init__(self, client_id="t"):
        self.acked, self.client_id, self.held = [], client_id, []

    def ack(self, gen, mids, wake=True):
        if gen == self.generation:
            self.acked += mids
            if not wake:  # left for the network thread's next read
                self.held += mids

    def acks_waiting(self):
        return False

    def flush_acks(self):
        pass


def _backlog(nodes, per_node, first_seq=0, mid0=1):
    """Messages as the bus hands them over, node by node in turn, each node's seqs in order."""
    out, mid = [], mid0
    for seq in range(first_seq, first_seq + per_node):
        for node in nodes:
            out.append((1, mid, 1, f"gridtwin/t/{node}/telemetry", telemetry_payload(node, 1, seq)))
            mid += 1
    return out


def _rows_by_node(db):
    out = {}
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        for node, seq in conn.execute("SELECT node, seq FROM readings ORDER BY rowid"):
            out.setdefault(node, []).append(seq)
    finally:
        conn.close()
    return out


def test_a_backlog_is_spilled_acked_then_stored_in_order_exactly_once_across_a_crash(tmp_path):
    """SPILL_AT messages waiting: the writer commits them as received and acks them at once (the
    broker's queue drains at the network's pace), and stores them after; a crash in between (the
    store closed with the spill not worked off, which is what kill -9 leaves) loses nothing: the
    next start stores the spilled messages first, in order, before anything newer, each once;
    another instance sharing the file leaves them alone."""
    from gridtwin.daemon.ingest import SPILL_AT, Ingest
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.sitedefaults import RECEIVE_MAXIMUM

    from gridtwin.daemon.config import DAEMON

    assert SPILL_AT < RECEIVE_MAXIMUM  # the broker's window must be able to hold a spill
    assert f"above {SPILL_AT:,}" in DAEMON.keys["receive_maximum"].help
    db, nodes = tmp_path / "gridtwin.db", NODES[:10]
    backlog = _backlog(nodes, 3 * SPILL_AT // len(nodes))
    store, bus = SqliteStore(db), _AckBus()
    ing = Ingest(bus, store)
    ing._on_raw(backlog[:-5])
    # the backlog's last few messages come while the writer waits for the next spill's worth,
    # then nothing: they are spilled too, not left unacked behind the spill while it is stored

    def the_stream_pauses(timeout):
        ing._on_raw(backlog[-5:])
        return False

    ing._spill_ready.wait = the_stream_pauses
    ing._catch_up()  # what the writer does with SPILL_AT waiting
    assert sorted(bus.acked) == [m[1] for m in backlog]  # the broker may forget them all
    # and at once: the broker's window waits on these acks, so nothing would come to wake the
    # network thread for them until the writer flushed them
    assert bus.held == []
    assert count_rows(db) == 0 and ing.spill_waiting == len(backlog)
    assert ing.metrics.durable == len(backlog) and ing.metrics.stored == 0
    text = ing.metrics.prometheus()
    assert f"gridtwin_durable_total {len(backlog)}" in text
    assert f"gridtwin_spilled_total {len(backlog)}" in text
    assert ing.metrics.health()[1]["durable"] == len(backlog)
    # the node watch does not take the nodes for silent while their readings wait spilled
    assert ing.heard_until(int(time.time() * 1000) + 60_000) <= int(time.time() * 1000)
    store.close()  # the crash: nothing more of this daemon happens

    store, bus = SqliteStore(db), _AckBus()
    # another daemon instance on the same file (a shared subscription) leaves them to their owner
    assert Ingest(_AckBus("t-2"), store).spill_waiting == 0
    ing = Ingest(bus, store)
    assert ing.spill_waiting == len(backlog)
    live = _backlog(nodes, 2, first_seq=300, mid0=9000)  # newer, arrived after the restart
    ing._on_raw(live)
    ing.start()
    try:
        wait_for(lambda: ing.metrics.stored == len(backlog) + len(live), 30, "the spill stored")
        assert sorted(bus.acked) == [m[1] for m in live]  # the spilled ones were acked before
        assert ing.spill_waiting == 0 and count_rows(db, "SELECT count(*) FROM spilled") == 0
        per_node = len(backlog) // len(nodes)
        assert _rows_by_node(db) == {n: [*range(per_node), 300, 301] for n in nodes}
        # had the crash come before the acks, the broker would send them again: stored once
        ing._on_raw(backlog[:100])
        wait_for(lambda: ing.metrics.duplicates == 100, 10, "the redelivery")
        assert count_rows(db) == len(backlog) + len(live)
    finally:
        ing.stop()
        store.close()


def test_kill_9_while_a_backlog_is_spilled_loses_nothing_and_keeps_each_nodes_order(
    fleet_broker, tmp_path
):
    """10,000 messages pile up in the daemon while another process holds the database's write
    lock; once it lets go the daemon is far behind, spills what waits (acked: the broker forgets
    it) and is killed -9 before it has stored it all. The next start stores every message exactly
    once, each node's in the order it sent them."""
    import signal
    import sqlite3

    db = tmp_path / "gridtwin.db"
    daemon, spilled = DaemonProcess(fleet_broker, db).start(), threading.Event()
    locker = sqlite3.connect(db, timeout=30)
    locker.execute("BEGIN IMMEDIATE")  # the daemon's writer waits on it (its busy timeout: 30 s)
    stream = Stream(fleet_broker, per_node=200, pause=0).start()
    stream.finish(timeout=120)  # the broker has them all, and sent the daemon its window's worth

    def kill_once_spilled():  # a spill commits in a few ms and is worked off in a few 100 ms
        conn = sqlite3.connect(db, timeout=0.05)
        try:
            while not spilled.is_set():
                with contextlib.suppress(sqlite3.Error):
                    if conn.execute("SELECT count(*) FROM spilled").fetchone()[0]:
                        daemon.proc.send_signal(signal.SIGKILL)
                        spilled.set()
                time.sleep(0.001)
        finally:
            conn.close()

    killer = threading.Thread(target=kill_once_spilled, daemon=True)
    killer.start()
    locker.rollback()
    locker.close()
    try:
        assert spilled.wait(60), "the daemon never spilled the backlog"
        daemon.proc.wait(10)
        left = count_rows(db, "SELECT coalesce(sum(n), 0) FROM spilled")
        assert left > 0 and count_rows(db) < 10_000, "the kill came after the spill was stored"
        daemon = DaemonProcess(fleet_broker, db).start()
        # (what the broker sends again, the unacked, may be spilled anew: duplicates, worked off)
        wait_for(
            lambda: count_rows(db, "SELECT count(*) FROM spilled") == 0 and count_rows(db) > 0,
            60,
            "the spilled messages to be worked off after the restart",
        )
        wait_for(lambda: count_rows(db) == 10_000, 60, "every message stored after the restart")
        assert_exactly_once(stored_keys(db), stream.expected)
        assert all(seqs == sorted(seqs) for seqs in _rows_by_node(db).values())
    finally:
        spilled.set()
        daemon.stop()


def test_spilled_messages_of_an_instance_the_site_no_longer_runs_are_stored_by_instance_1(
    fleet_broker, tmp_path, two_instance_site, caplog
):
    """Instance 2 was killed with messages spilled, and the site went back to one instance: its
    rows would wait forever (each instance works off its own). Instance 1 takes them over at its
    start and stores them first; the log says so."""
    from gridtwin.daemon import config
    from gridtwin.daemon.store_sqlite import SqliteStore

    ids = []
    for k in (1, 2):  # the owners instance 1 keeps are the instances' own client ids
        d = Daemon.from_site(two_instance_site.site, instance=k, metrics_port=None)
        ids.append(d.bus.client_id)
        d.store.close()
    assert config.client_ids(two_instance_site.site) == ids and len(set(ids)) == 2
    db = tmp_path / "gridtwin.db"
    store = SqliteStore(db)
    backlog = [(t, p) for _g, _m, _q, t, p in _backlog(NODES[:5], 4)]
    root = fleet_broker.site.topic_root
    backlog = [(t.replace("gridtwin/t/", f"{root}/"), p) for t, p in backlog]
    store.spill("gridtwin-host-2", int(time.time() * 1000), [tuple(zip(*backlog))])
    store.close()
    daemon = Daemon(
        endpoint=endpoint(fleet_broker), db_path=db, metrics_port=None, spill_owners=["d1"]
    )
    assert daemon.ingest.spill_waiting == len(backlog)
    assert "20 spilled messages of gridtwin-host-2" in caplog.text
    # what /metrics and /healthz say of it
    assert "gridtwin_spill_waiting 20" in daemon.metrics.prometheus()
    assert daemon.metrics.health()[1]["spill_waiting"] == 20
    daemon.start()
    try:
        wait_for(lambda: count_rows(db) == len(backlog), 30, "the adopted messages stored")
        assert count_rows(db, "SELECT count(*) FROM spilled") == 0
    finally:
        daemon.stop()
