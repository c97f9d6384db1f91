"""Telegraf as rendered: its MQTT identities on the real broker (no session takeover), and its one
Starlark processor, run by the Go Starlark interpreter Telegraf embeds (starlark-go), turning every
contract topic (telemetry, status, log, _host/twin, _host/alerts) into the points the dashboards
read."""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import urllib.request

import paho.mqtt.client as paho

from gridtwin.daemon.lineprotocol import line, telemetry_line
from gridtwin.pki import HOST_IDENTITY
from gridtwin.stack import install, telegraf


def rendered(site) -> dict:
    return tomllib.loads(telegraf.render(site))


def concrete(topic_filter: str, node: str) -> str:
    """A topic the filter matches: `+` -> the node, `#` -> one more level."""
    return "/".join(
        node if p == "+" else "probe" if p == "#" else p for p in topic_filter.split("/")
    )


# --- one MQTT identity, one session ---------------------------------------------------------------


def test_rendered_telegraf_inputs_never_take_each_others_session(
    broker, mqtt_client, site_pki, tmp_path
):
    # Exactly what Telegraf would do with the rendered file: one MQTT connection per
    # [[inputs.mqtt_consumer]], with its client_id, certificate and key (the files `stack install`
    # puts at tls_cert/tls_key), clean session = not persistent_session, each topic at its qos.
    # The broker forces client id = certificate CN: two inputs on one certificate take each other's
    # session over, which shows as a disconnect of the older one and a broker log line.
    site, pki = site_pki.site, site_pki.pki
    placed = {f.path: f.content for f in install.plan(site, pki)}
    inputs = rendered(site)["inputs"]["mqtt_consumer"]
    mark = len(broker.log)
    clients = []
    for i, inp in enumerate(inputs):
        (server,) = inp["servers"]
        assert (
            server == f"ssl://{site.broker.hosts[0]}:{site.broker.port}"
        )  # the test broker runs elsewhere
        files = []
        for key in ("tls_cert", "tls_key"):
            p = tmp_path / f"input{i}.{key}"
            p.write_bytes(placed[inp[key]])
            os.chmod(p, 0o600)
            files.append(str(p))
        c = mqtt_client(
            inp["client_id"],
            client_id=inp["client_id"],
            clean_start=not inp["persistent_session"],
            cert=files[0],
            key=files[1],
        )
        for t in inp["topics"]:
            assert [rc.value for rc in c.subscribe(t, inp["qos"])] == [inp["qos"]], t
        clients.append((inp, c))
    # After the last input connected: one probe on every subscribed topic, from whoever may write
    # it. Each input must get its probes on the connection it opened: no disconnect, no takeover.
    node, host = mqtt_client("pdu_a"), mqtt_client(HOST_IDENTITY)
    for inp, c in clients:
        for t in inp["topics"]:
            topic = concrete(t, "pdu_a")
            payload = json.dumps({"probe": topic}).encode()
            (host if "/_host/" in topic else node).publish(topic, payload)
            # whichever comes first: the probe, or the broker closing this connection
            c._wait(
                lambda: c.disconnected or any(m.payload == payload for m in c.received(t)),
                10,
                f"the probe on {topic} or a disconnect",
            )
    for inp, c in clients:
        assert not c.disconnected, f"input {inp['client_id']} was disconnected ({c.disconnect_rc})"
    assert not re.search(r"already connected, closing old connection", broker.log[mark:]), (
        broker.log[mark:]
    )
    ids = [inp["client_id"] for inp, _ in clients]
    assert len(ids) == len(set(ids))


# --- the Starlark processor, in Go Starlark ------------------------------------------------------


class Script:
    """The rendered processor script in go.starlark.net (starlark-go), the interpreter Telegraf
    embeds. Telegraf provides `json` (load("json.star")) and `Metric`; only `apply` uses them, so
    here they are bare names (the script must still resolve) and `points` runs for real."""

    def __init__(self, site):
        import starlark_go

        (proc,) = rendered(site)["processors"]["starlark"]
        assert proc["namepass"] == [telegraf.RAW]
        src = proc["source"]
        assert src.count('load("json.star", "json")') == 1 and "def apply(metric):" in src
        self.st = starlark_go.Starlark()
        self.st.exec(
            src.replace('load("json.star", "json")', "json = None\nMetric = None"),
            filename="gridtwin.star",
        )

    def points(self, topic: str, payload) -> list[dict]:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        # json.loads gives the types Starlark's json.decode gives: int for 12, float for 12.5
        self.st.set(topic=topic, doc=json.loads(raw) if raw.strip() else None)
        return self.st.eval("points(topic, doc)")


def lp(p: dict, arrival_ns: int = 1) -> str:
    """The point as line protocol, time in ns (Telegraf's precision)."""
    return line(
        p["name"], p["tags"], p["fields"], p["time"] if p["time"] is not None else arrival_ns
    )


def test_one_input_subscribes_every_topic_telegraf_stores(site_pki):
    site = site_pki.site
    conf = rendered(site)
    (inp,) = conf["inputs"]["mqtt_consumer"]
    assert (inp["qos"], inp["persistent_session"], inp["client_id"]) == (1, True, "telegraf")
    assert (inp["data_format"], inp["data_type"], inp["topic_tag"], inp["name_override"]) == (
        "value",
        "string",
        "topic",
        telegraf.RAW,
    )
    stored = [site.topic(n, leaf) for n in site.node_ids for leaf in ("telemetry", "status", "log")]
    stored += [
        f"{site.topic_root}/_host/twin",
        f"{site.topic_root}/_host/alerts/node_pdu_a",
        f"{site.topic_root}/_host/alerts/twin_EL1_overtemp",
        f"{site.topic_root}/_host/alerts/pdu_a/overload",
        f"{site.topic_root}/_host/telemetry",
    ]  # the doctor's probe reading
    for t in stored:
        assert any(paho.topic_matches_sub(f, t) for f in inp["topics"]), t
    for t in (site.topic("pdu_a", "cmd"), site.topic("pdu_a", "ack"), site.topic("pdu_a", "ota")):
        assert not any(paho.topic_matches_sub(f, t) for f in inp["topics"]), t
    (out,) = conf["outputs"]["influxdb_v2"]
    assert out["namedrop"] == [telegraf.RAW] and out["token"] == "${INFLUX_TOKEN}"


def test_telemetry_points_are_the_daemons_points(site_pki):
    site, s = site_pki.site, Script(site_pki.site)
    for hist in (False, True):
        payload = {
            "v": 1,
            "node": "EL1",
            "boot": 7,
            "seq": 42,
            "ts": 1_700_000_000_123,
            "m": {"stack_a": 12, "h2_nlh": 4.966, "t amb,1": -3.0},
            **({"hist": True} if hist else {}),
        }
        (p,) = s.points(site.topic("EL1", "telemetry"), payload)
        assert p["tags"].pop("site") == "demo"
        t = types.SimpleNamespace(
            node="EL1", boot=7, seq=42, ts=payload["ts"], m=payload["m"], hist=hist
        )
        assert lp(p) == telemetry_line(
            t, site.storage.influx_measurement
        )  # 12 -> 12.0: no type conflict
    assert s.points(site.topic("EL1", "telemetry"), {"v": 1, "node": "EL1", "ts": 1, "m": {}}) == []


def test_status_log_twin_and_alert_points(site_pki):
    from gridtwin.twin import Twin

    site, s, root = site_pki.site, Script(site_pki.site), site_pki.site.topic_root
    birth = {
        "state": "online",
        "node": "pdu_a",
        "fw": "0.9.0",
        "board": "esp32s3",
        "role": "pdu",
        "reset": "power",
        "boot": 3,
        "boots": 3,
        "heap": 61000,
        "heap_min": 52000,
        "rssi": -61,
        "uptime": 4,
        "cfg": "ab12",
        "interval": 1000,
        "sensors": {"load_kw": "kW"},
        "outbox": 0,
        "drops": 0,
        "conn": 1,
        "handshake_ms": 950,
        "ts": 1_700_000_000_000,
    }
    (p,) = s.points(site.topic("pdu_a", "status"), birth)
    assert (p["name"], p["tags"], p["time"]) == (
        "node_status",
        {"node": "pdu_a", "site": "demo", "state": "online"},
        birth["ts"] * 1_000_000,
    )
    f = p["fields"]
    assert f["online"] == 1.0 and f["heap"] == 61000.0 and f["rssi"] == -61.0 and f["fw"] == "0.9.0"
    assert f["gt_boot"] == "3" and "sensors" not in f
    (will,) = s.points(
        site.topic("pdu_a", "status"), {"state": "offline", "node": "pdu_a", "boot": 3}
    )
    assert (
        will["fields"] == {"online": 0.0, "gt_boot": "3"} and will["time"] is None
    )  # arrival time

    (p,) = s.points(
        site.topic("pdu_a", "log"),
        {"lvl": "W", "msg": "sensor: stack bad", "ts": 1_700_000_000_500},
    )
    assert (p["name"], p["tags"], p["fields"]) == (
        "node_log",
        {"node": "pdu_a", "site": "demo", "lvl": "W"},
        {"msg": "sensor: stack bad"},
    )
    (p,) = s.points(site.topic("pdu_a", "log"), {"lvl": "I", "mod": "net", "msg": "up", "ts": 1})
    assert p["tags"]["mod"] == "net"

    # the twin's state exactly as gridtwin.twin.coupling publishes it
    twin = Twin.from_site(site)
    twin.run_until(1.0)
    state = twin.state()
    doc = {
        "t": round(twin.t, 3),
        "components": {
            cid: {"kind": c["kind"], "status": c["status"], "m": c["m"]} for cid, c in state.items()
        },
    }
    pts = {p["tags"]["component"]: p for p in s.points(f"{root}/_host/twin", doc)}
    assert set(pts) == set(state)
    for cid, c in state.items():
        f = pts[cid]["fields"]
        assert (
            pts[cid]["name"] == "twin"
            and pts[cid]["tags"]["kind"] == c["kind"]
            and f["status"] == c["status"]
        )
        assert {k for k in f if k not in ("status", "twin_t")} == {
            k for k, v in c["m"].items() if isinstance(v, (int, float))
        }

    # alerts: the twin's and the daemon's shapes, and the empty retained message that clears one
    twin_alert = {
        "id": 4,
        "t": 12.5,
        "component": "EL1",
        "type": "overtemp",
        "severity": "critical",
        "message": "EL1: overtemp",
        "active": True,
    }
    (p,) = s.points(f"{root}/_host/alerts/twin_EL1_overtemp", twin_alert)
    assert p["tags"] == {
        "alert": "twin_EL1_overtemp",
        "site": "demo",
        "severity": "critical",
        "kind": "overtemp",
        "source": "EL1",
    }
    assert (
        p["fields"] == {"active": 1.0, "message": "EL1: overtemp", "alert_id": 4.0}
        and p["time"] is None
    )
    node_alert = {
        "id": 5,
        "severity": "warning",
        "kind": "node_offline",
        "node": "pdu_a",
        "message": "pdu_a is offline",
        "ts": 1_700_000_001_000,
    }
    (p,) = s.points(f"{root}/_host/alerts/node_pdu_a", node_alert)
    assert p["tags"]["source"] == "pdu_a" and p["tags"]["kind"] == "node_offline"
    assert p["time"] == node_alert["ts"] * 1_000_000
    (p,) = s.points(f"{root}/_host/alerts/pdu_a/overload", b"")
    assert p["tags"] == {"alert": "pdu_a/overload", "site": "demo"} and p["fields"] == {
        "active": 0.0
    }
    # not stored: commands, acks, the daemon's own topics, empty payloads elsewhere
    for topic in (
        site.topic("pdu_a", "cmd"),
        site.topic("pdu_a", "ack"),
        f"{root}/_host/nodes/pdu_a",
        "other/root/pdu_a/telemetry",
    ):
        assert s.points(topic, {"state": "online", "m": {"x": 1}, "ts": 1}) == []
    assert (
        s.points(site.topic("pdu_a", "status"), b"") == []
        and s.points(f"{root}/_host/twin", b"") == []
    )


def test_every_kind_of_point_is_accepted_by_real_influxdb(site_pki, influxdb):
    # line protocol from each point: a real InfluxDB 1.x takes it and reads back the types
    site, s, root = site_pki.site, Script(site_pki.site), site_pki.site.topic_root
    pts = s.points(
        site.topic("EL1", "telemetry"),
        {"v": 1, "node": "EL1", "boot": 1, "seq": 1, "ts": 1000, "m": {"stack_a": 3}},
    )
    pts += s.points(
        site.topic("EL1", "status"),
        {"state": "online", "node": "EL1", "heap": 1, "fw": "x", "ts": 1000},
    )
    pts += s.points(
        site.topic("EL1", "log"), {"lvl": "E", "msg": 'quote " and \\ back', "ts": 1000}
    )
    pts += s.points(
        f"{root}/_host/alerts/node_EL1",
        {
            "id": 1,
            "severity": "warning",
            "kind": "node_stale",
            "node": "EL1",
            "message": "EL1 is stale",
            "ts": 1000,
        },
    )
    pts += s.points(f"{root}/_host/alerts/node_EL1", b"")
    body = "\n".join(lp(p, 2_000_000_000) for p in pts).encode()
    influxdb.query('CREATE DATABASE "tg"', db=None)
    req = urllib.request.Request(
        f"{influxdb.url}/write?db=tg&precision=ns", data=body, method="POST"
    )
    assert urllib.request.urlopen(req, timeout=10).status == 204
    (series,) = influxdb.query('SELECT "msg" FROM "node_log"', db="tg")
    assert series["values"][0][1] == 'quote " and \\ back'
    active = influxdb.query('SELECT "active" FROM "alerts"', db="tg")[0]["values"]
    assert [v[1] for v in active] == [1.0, 0.0]
