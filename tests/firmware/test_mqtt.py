"""MQTT over mutual TLS from a real MicroPython node to a real Mosquitto (issue #4).

Broker restarts, silent and garbage-talking peers, a hostile broker speaking bad MQTT, and a
1,000-message soak under the 96 KB heap. The 10,000-message soak is in `make bench`.
"""

import json
import os
import re
import socket
import ssl
import threading

import pytest

from fixtures.broker import free_port, wait_until
from fixtures.netnode import LM75, crashed, telemetry


def dedup(docs):
    out = {}
    for d in docs:
        out.setdefault((d["boot"], d["seq"]), d)
    return out


def test_node_connects_publishes_birth_and_telemetry(net_node, broker, mqtt_client):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "#"))
    b = net_node(sample_ms=200)
    b.start()
    b.wait_for(r"mqtt: connected in \d+ ms", timeout=20)
    raw = host.wait_for(broker.topic("pv1", "status"), timeout=10).payload
    birth = json.loads(raw)
    # one contract: the daemon takes the node's birth as it is, every field under its own name
    from gridtwin.daemon import validate

    taken = validate.status("pv1", raw)
    assert all(
        taken[k] == birth[k] for k in ("heap", "drops", "uptime", "cfg", "interval", "outbox")
    )
    assert birth["state"] == "online" and birth["node"] == "pv1" and birth["conn"] == 1
    assert (
        birth["sensors"] == {"t_amb": "degC"}
        and birth["reset"] == "power-on"
        and birth["boots"] == 1
    )
    assert birth["fw"] and birth["cfg"] and birth["heap"] > 0 and "rssi" in birth
    docs = [
        json.loads(host.wait_for(broker.topic("pv1", "telemetry"), timeout=10).payload)
        for _ in range(5)
    ]
    assert [d["seq"] for d in docs] == list(range(docs[0]["seq"], docs[0]["seq"] + 5))
    assert all(d["v"] == 1 and d["node"] == "pv1" and d["boot"] == birth["boot"] for d in docs)
    assert all(d["m"] == {"t_amb": 21.5} and d["ts"] > 1_700_000_000_000 for d in docs)
    # the broker holds the birth retained; the will it keeps for the node says offline
    b.stop()
    will = json.loads(host.wait_for(broker.topic("pv1", "status"), timeout=10).payload)
    assert will == {"state": "offline", "node": "pv1", "boot": birth["boot"]}


def test_warnings_go_to_the_log_topic_while_connected(net_node, broker, mqtt_client):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "#"))
    world = {"clock": {"mode": "real"}, "i2c": [dict(LM75, unplugged=[[4_000, 10**9]])]}
    b = net_node(world=world, sample_ms=200)
    b.start()
    b.wait_for(r"conn=1", timeout=20)
    # a command logs at INFO on the node; by default (log_level "warn") that stays on the node
    host.publish(broker.topic("pv1", "cmd"), b'{"id":"p1","cmd":"ping","args":{}}')
    assert json.loads(host.wait_for(broker.topic("pv1", "ack"), timeout=10).payload)["id"] == "p1"
    doc = json.loads(host.wait_for(broker.topic("pv1", "log"), timeout=10).payload)
    # the first log line is the sensor's warning; the module is a field of its own
    assert (
        doc["lvl"] == "W"
        and doc["mod"] == "sensor"
        and doc["msg"].startswith("t_amb bad: no answer")
    )
    assert doc["ts"] > 0 and set(doc) == {"lvl", "mod", "msg", "ts"}
    b.stop()


def test_health_goes_out_on_status_every_interval_and_info_logs_when_asked(
    net_node, broker, mqtt_client
):
    # issue #11: heap, heap_min, RSSI, uptime, outbox depth and drops on a period, not only at
    # connect
    from gridtwin.daemon import validate

    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "#"))
    b = net_node(sample_ms=500, health_s=2, log_level="info")
    b.start()
    b.wait_for(r"conn=1", timeout=20)
    birth = json.loads(host.wait_for(broker.topic("pv1", "status"), timeout=10).payload)
    assert "sensors" in birth
    health = [host.wait_for(broker.topic("pv1", "status"), timeout=10) for _ in range(3)]
    docs = [json.loads(m.payload) for m in health]
    for d, m in zip(docs, health):
        assert set(d) == {
            "state",
            "boot",
            "heap",
            "heap_min",
            "rssi",
            "uptime",
            "outbox",
            "drops",
            "ts",
        }
        assert (
            d["state"] == "online" and d["boot"] == birth["boot"] and 0 < d["heap_min"] <= d["heap"]
        )
        assert d["drops"] == 0 and 0 <= d["outbox"] <= 2 and d["ts"] > 1_700_000_000_000
        assert (
            validate.status("pv1", m.payload)["heap"] == d["heap"]
        )  # the daemon takes it as it is
    # every 2 s, by the node's clock and by its uptime
    gaps = [y["ts"] - x["ts"] for x, y in zip([birth] + docs, docs)]
    assert all(1_900 <= g <= 2_600 for g in gaps), gaps
    assert [d["uptime"] for d in docs] == sorted(d["uptime"] for d in docs)
    assert docs[-1]["uptime"] - docs[0]["uptime"] in (3, 4, 5)
    # retained, as the birth: a client that subscribes now gets the latest at once
    late = mqtt_client("telegraf")  # another identity: the broker makes the client id the CN
    late.subscribe(broker.topic("pv1", "status"))
    kept = late.wait_for(broker.topic("pv1", "status"), timeout=5)
    assert (
        kept.retain
        and json.loads(kept.payload)["state"] == "online"
        and "heap_min" in json.loads(kept.payload)
    )
    # log_level "info": what the node does goes out too, its module in a field of its own
    host.publish(broker.topic("pv1", "cmd"), b'{"id":"p2","cmd":"ping","args":{}}')
    doc = json.loads(host.wait_for(broker.topic("pv1", "log"), timeout=10).payload)
    assert doc["lvl"] == "I" and doc["mod"] == "cmd" and doc["msg"].startswith("ping id=p2")
    b.stop()
    assert not crashed(b)


def test_broker_restart_at_10hz_loses_no_reading(net_node, broker, mqtt_client):
    host = mqtt_client("gridtwin-host", clean_start=False)
    host.subscribe(broker.topic("pv1", "telemetry"))
    b = net_node(sample_ms=100, trace=True, mqtt={"replay_per_s": 100})
    b.start()
    b.wait_for(r"conn=1", timeout=20)
    wait_until(
        lambda: len(host.received(broker.topic("pv1", "telemetry"))) >= 20, 20, "20 readings"
    )
    # marked before the stop: the node can say "lost" before broker.stop() returns (a CI run
    # waited 20 s for a line that was already there)
    lost = len(b.lines)
    broker.stop()
    b.wait_for(r"mqtt: lost", timeout=20, start=lost)
    b.wait_for(r"mqtt: failed", timeout=20, start=lost)  # it tried while the broker was away
    broker.start()
    up = b.wait_for(r"conn=2", timeout=30)
    i_up = next(i for i in range(len(b.lines) - 1, -1, -1) if b.lines[i] is up.string)
    during = [int(m[1]) for m in (re.match(r"^T (\d+) ", line) for line in b.lines[lost:i_up]) if m]
    last = int(b.wait_for(r"^T (\d+) ", start=i_up + 20, timeout=20)[1])
    got = wait_until(
        lambda: (lambda g: g if max(s for _, s in g) >= last and len(g) >= last else None)(
            dedup(telemetry(host.received(broker.topic("pv1", "telemetry"))))
        ),
        30,
        "every reading up to seq %d" % last,
    )
    b.stop()
    boots = {bt for bt, _ in got}
    assert len(boots) == 1
    seqs = sorted(s for _, s in got)
    assert seqs[:last] == list(range(1, last + 1))  # every seq of the boot, each once
    assert len(during) >= 5
    # what was sampled while the broker was away came as replayed readings (but the one that was
    # in flight when it went, which is sent again as it was)
    boot = boots.pop()
    assert sum(1 for s in during if got[(boot, s)].get("hist")) >= len(during) - 1
    assert not crashed(b)


class Peer:
    """A TCP peer on a free port that is not a broker: `mode` is "silent" (accepts, says nothing)
    or "garbage" (answers with random bytes), or a function(ssl_socket) speaking TLS as the
    broker."""

    def __init__(self, broker=None):
        self.port = free_port()
        self.mode = "silent"
        self.accepted = 0
        self.srv = socket.create_server(("127.0.0.1", self.port))
        self.conns = []
        self.ctx = None
        if broker is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(broker.pki.server_cert_path, broker.pki.server_key_path)
            self.ctx.load_verify_locations(broker.ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self.conns.append(c)
            mode = self.mode
            if mode == "garbage":
                c.sendall(os.urandom(300))
            elif callable(mode):
                threading.Thread(target=self._tls, args=(c, mode), daemon=True).start()

    def _tls(self, c, fn):
        try:
            c.settimeout(10)
            s = self.ctx.wrap_socket(c, server_side=True)
            s.recv(1024)  # the CONNECT
            fn(s)
            while s.recv(1024):  # until the node hangs up
                pass
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.t.join(2)
        for c in self.conns:
            c.close()
        self.srv.close()


@pytest.fixture
def peer():
    made = []

    def make(broker=None):
        made.append(Peer(broker))
        return made[-1]

    yield make
    for p in made:
        p.close()


def _cadence(board):
    ticks = [int(m[1]) for m in board.grep(r"^T \d+ (\d+) ")]
    return ticks, [y - x for x, y in zip(ticks, ticks[1:])]


def test_silent_peer_hits_the_handshake_deadline_and_garbage_is_survived(net_node, peer):
    p = peer()
    world = {"clock": {"mode": "real", "speed": 2}, "i2c": [LM75]}
    b = net_node(world=world, sample_ms=100, trace=True, mqtt={"port": p.port, "tls_ms": 3000})
    b.start()
    b.wait_for(r"mqtt: failed: tls: no answer in 3000 ms", timeout=20)
    p.mode = "garbage"
    b.wait_for(r"mqtt: failed: tls: ", start=len(b.lines), timeout=20)
    b.stop()
    assert p.accepted >= 2
    # sampling never waited for the network: one reading every 100 ms all along
    ticks, gaps = _cadence(b)
    assert len(ticks) >= 30 and set(gaps) == {100}
    assert not crashed(b) and b.boots == 1


def _connack_then(data):
    def speak(s):
        s.sendall(b"\x20\x02\x00\x00" + data)

    return speak


HOSTILE = [
    (_connack_then(b"\x30\xff\xff\xff\xff\x7f"), r"bad remaining length"),
    (_connack_then(b"\x30\xff\xff\xff\x7f"), r"byte packet over limit"),
    (_connack_then(b"\x82\x02\x00\x01"), r"packet type 8"),
    (lambda s: s.sendall(b"\x20\x02\x00\x05"), r"connack: refused, code 5"),
    (lambda s: s.sendall(b"\x00\x17garbage-instead-of-mqtt"), r"packet type 0"),
]


def test_hostile_broker_gets_the_connection_closed_and_retried(net_node, broker, peer):
    p = peer(broker)
    # board time runs as real time here: the handshake's crypto steps (each a blocking call of a
    # few ms in mbedTLS) stay well inside the 250 ms sampling interval, as on the chip at 1 Hz
    world = {"clock": {"mode": "real"}, "i2c": [LM75]}
    b = net_node(
        world=world, sample_ms=250, trace=True, mqtt={"port": p.port, "backoff_max_ms": 2000}
    )
    b.start()
    for speak, why in HOSTILE:
        mark = len(b.lines)
        p.mode = speak
        b.wait_for(r"mqtt: (lost|failed): .*" + why, start=mark, timeout=20)
    b.stop()
    ticks, gaps = _cadence(b)
    assert len(ticks) >= 8 and set(gaps) == {250}  # sampling carried on through all of it
    assert not crashed(b) and b.boots == 1


def _packet(s):
    """One MQTT packet from a socket: (first byte, body)."""

    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise OSError("closed")
            buf += chunk
        return buf

    first = exact(1)[0]
    rl, shift = 0, 0
    while True:
        c = exact(1)[0]
        rl |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return first, exact(rl)


def _hangs_up_after(k, pubs):
    """A broker's side of the conversation: on the first connection it takes k readings without a
    PUBACK and hangs up with them in flight; on the next it says the session is present and
    acknowledges everything. Every telemetry PUBLISH lands in pubs as (connection, first byte,
    packet id, document)."""
    conns = []

    def speak(s):
        conns.append(s)
        n = len(conns)
        s.sendall(b"\x20\x02" + (b"\x01" if n > 1 else b"\x00") + b"\x00")
        while True:
            first, body = _packet(s)
            if first >> 4 == 8:  # SUBSCRIBE (cmd and ota) -> SUBACK, QoS 1 granted to both
                s.sendall(b"\x90\x04" + body[:2] + b"\x01\x01")
            elif first >> 4 == 3:
                tl = int.from_bytes(body[:2], "big")
                pid = int.from_bytes(body[2 + tl : 4 + tl], "big") if first & 6 else None
                if body[2 : 2 + tl].endswith(b"/telemetry"):
                    pubs.append((n, first, pid, json.loads(body[4 + tl :])))
                    if n == 1:
                        if len(pubs) == k:
                            s.close()  # gone with k readings in flight
                            return
                        continue  # no PUBACK: the node goes on, its window not yet full
                if pid is not None:
                    s.sendall(b"\x40\x02" + pid.to_bytes(2, "big"))

    return speak


def test_unacknowledged_reading_is_resent_with_dup_and_its_packet_id(net_node, broker, peer):
    # A broker of our own (TLS with the site's broker certificate): on the first connection it
    # takes the first reading and hangs up without a PUBACK; on the second it says the session
    # is present and acknowledges everything.
    p = peer(broker)
    pubs = []  # (connection, first byte, packet id, document) of every telemetry PUBLISH
    p.mode = _hangs_up_after(1, pubs)
    b = net_node(sample_ms=500, mqtt={"port": p.port})
    b.start()
    b.wait_for(r"conn=2", timeout=30)
    lost = pubs[0]
    # then the readings taken meanwhile follow, none missing
    wait_until(
        lambda: (
            {x[3]["seq"] for x in pubs if x[0] == 2}
            >= set(range(lost[3]["seq"], lost[3]["seq"] + 4))
        ),
        20,
        "the readings after the lost one",
    )
    b.stop()
    again = next(x for x in pubs if x[0] == 2)  # the first PUBLISH of the new connection
    assert lost[1] & 0x08 == 0 and again[1] & 0x08 == 0x08  # DUP set on the resend only
    assert again[2] == lost[2] and again[3] == lost[3]  # the same packet id, the same reading


def test_link_cut_mid_window_resends_in_order_and_stores_each_reading_once(net_node, broker, peer):
    # Issue #20: several readings in flight at once (mqtt.window). A broker of our own takes 4
    # readings without a PUBACK and hangs up with all 4 in flight; on the second connection it
    # says the session is present and acknowledges everything. The 4 come first, in their order,
    # with DUP and their packet ids; de-duplicated by (boot, seq) as the host's store does, every
    # reading is there once, the replayed and the live ones each in seq order.
    p = peer(broker)
    pubs = []  # (connection, first byte, packet id, document) of every telemetry PUBLISH
    p.mode = _hangs_up_after(4, pubs)
    b = net_node(sample_ms=100, mqtt={"port": p.port, "window": 8})
    b.start()
    b.wait_for(r"conn=2", timeout=30)
    lost = [x for x in pubs if x[0] == 1]
    assert len(lost) == 4  # four in flight on the first connection, none acknowledged
    last = lost[-1][3]["seq"] + 20
    wait_until(
        lambda: any(x[0] == 2 and x[3]["seq"] >= last for x in pubs), 30, f"seq {last} received"
    )
    b.stop()
    again = [x for x in pubs if x[0] == 2][:4]  # the first PUBLISHes of the new connection
    assert [x[3]["seq"] for x in again] == [x[3]["seq"] for x in lost]  # in their order
    assert all(x[1] & 0x08 == 0 for x in lost) and all(x[1] & 0x08 for x in again)  # DUP
    assert [x[2] for x in again] == [x[2] for x in lost]  # their packet ids
    stored = dedup(x[3] for x in pubs)  # the host's store: one row per (boot, seq)
    assert sorted(s for _, s in stored)[:last] == list(range(1, last + 1))  # each once
    # in order: the replayed ones oldest first, the live ones too (live go first: docs/firmware.md)
    for hist in (True, False):
        run = [s for (_, s), d in stored.items() if bool(d.get("hist")) is hist]
        assert run == sorted(run), (hist, run)
    assert not crashed(b)


def test_soak_1000_messages_with_tls_in_96k(net_node, broker, mqtt_client, record_property):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "#"))
    world = {
        "clock": {"mode": "real", "speed": 4},
        "i2c": [dict(LM75, temp_c=[[0, 10.0], [400_000, 30.0]])],
    }
    b = net_node(world=world, sample_ms=50, mqtt={"keepalive": 60})
    b.start()
    b.wait_for(r"conn=1", timeout=20)
    # the birth follows the node's SUBSCRIBE: from then on no command can miss it
    host.wait_for(
        broker.topic("pv1", "status"), timeout=20, where=lambda m: b'"online"' in m.payload
    )
    cmd = broker.topic("pv1", "cmd")

    def heap_after(n, tag):
        wait_until(
            lambda: len(host.received(broker.topic("pv1", "telemetry"))) >= n, 120, f"{n} readings"
        )
        host.publish(cmd, json.dumps({"id": tag, "cmd": "rebirth"}))
        doc = host.wait_for(
            broker.topic("pv1", "status"),
            timeout=20,
            where=lambda m: (
                json.loads(m.payload).get("state") == "online"
                and json.loads(m.payload)["uptime"] > 0
            ),
        )
        return json.loads(doc.payload)["heap"]

    for i in range(16):  # fill the node's ring of remembered command ids first
        host.publish(cmd, json.dumps({"id": "warm%02d" % i, "cmd": "ping"}))
    # free heap after a collection, as the birth reports it, over the first and the last messages
    early = [heap_after(n, "early%d" % n) for n in (100, 200, 300)]
    late = [heap_after(n, "late%d" % n) for n in (800, 900, 1000)]
    b.stop()
    got = dedup(telemetry(host.received(broker.topic("pv1", "telemetry"))))
    seqs = sorted(s for _, s in got)
    assert seqs[:1000] == list(range(1, 1001))
    assert not crashed(b)
    hs = int(b.grep(r"connected in (\d+) ms")[0][1])
    record_property("heap_free_early", early)
    record_property("heap_free_late", late)
    record_property("handshake_ms", hs)
    print(
        f"\nsoak, 1,000 messages over TLS in a 96 KB heap: free heap after collection at messages "
        f"100/200/300: {early} B, at 800/900/1000: {late} B; handshake {hs} ms (board time)"
    )
    # Nothing grows between the first and the last messages. The collector is conservative: stale
    # pointers on the C stack keep up to ~1 KB alive or not from one reading to the next (the
    # 10,000-message bench soak shows this noise without a trend), so the lowest readings are
    # compared with 1 KB of slack: a leak of 2 bytes a message (a kept reading, a growing list)
    # fails here, and the bench's 10,000 messages show a smaller one.
    assert min(late) >= min(early) - 1024
