"""Issue #3 "Must show": a real mosquitto with the rendered configuration lets in the site's
certificates only, and confines each node to its own topics."""

import datetime as dt
import json

import pytest

from gridtwin.pki import HOST_IDENTITY, TELEGRAF_IDENTITY, issue_test_identity

pytestmark = pytest.mark.broker


def telemetry(node: str, seq: int = 1) -> bytes:
    return json.dumps(
        {"v": 1, "node": node, "boot": 1, "seq": seq, "ts": 1764000000000, "m": {"p_kw": 1.5}}
    ).encode()


def test_node_publishes_telemetry_and_host_receives_it(broker, mqtt_client):
    host = mqtt_client(HOST_IDENTITY)
    assert host.subscribe(broker.topic("+", "telemetry"))[0].value == 1
    node = mqtt_client("pdu_a")
    node.publish(broker.topic("pdu_a", "telemetry"), telemetry("pdu_a"))
    msg = host.wait_for()
    assert msg.topic == "gridtwin/demo/pdu_a/telemetry"
    assert json.loads(msg.payload)["node"] == "pdu_a"
    # The broker knows the node by its certificate's CN, as username and client id.
    assert "as pdu_a" in broker.log and "u'pdu_a'" in broker.log


@pytest.mark.parametrize("tls12", [True, False], ids=["tls1.2", "tls1.3"])
def test_client_without_certificate_is_refused(broker, tls12):
    result = broker.probe(None, tls12=tls12)
    assert not result.ok
    assert result.connack is None  # never got as far as MQTT
    assert broker.running
    broker.wait_for_log(
        "peer did not return a certificate|certificate verify failed|no certificate"
    )


def test_certificate_from_another_ca_is_refused(broker, tmp_path):
    foreign = issue_test_identity(tmp_path, "pdu_a")  # same CN, fresh CA
    result = broker.probe(cert=str(foreign / "cert.pem"), key=str(foreign / "key.pem"))
    assert not result.ok
    assert "unknown ca" in result.error
    broker.wait_for_log("certificate verify failed")


def test_expired_certificate_is_refused(broker, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    old = issue_test_identity(
        tmp_path,
        "pdu_a",
        ca=broker.pki,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    result = broker.probe(cert=str(old / "cert.pem"), key=str(old / "key.pem"))
    assert not result.ok
    assert "certificate expired" in result.error
    # Control: a valid certificate from the same CA gets in, so the refusal is about expiry.
    assert broker.probe("pdu_a").ok


def test_revoked_certificate_is_refused_after_reload(site_pki_copy, broker_factory):
    brk = broker_factory(site_pki_copy)
    assert brk.probe("srv_a").ok
    cert, key = brk.cert("srv_a"), brk.key("srv_a")
    pem = (open(cert).read(), open(key).read())
    site_pki_copy.pki.revoke("srv_a")  # the pair moves to _backup/; keep our copy to try it
    old = site_pki_copy.dir / "old"
    old.mkdir()
    (old / "cert.pem").write_text(pem[0])
    (old / "key.pem").write_text(pem[1])
    brk.reload()
    result = brk.probe(cert=str(old / "cert.pem"), key=str(old / "key.pem"))
    assert not result.ok
    assert "certificate revoked" in result.error
    assert brk.probe("pdu_a").ok  # the others are untouched


def test_node_cannot_publish_under_another_nodes_topics(broker, mqtt_client):
    host = mqtt_client(HOST_IDENTITY)
    host.subscribe(broker.topic("+", "#"))
    a = mqtt_client("pdu_a")
    for leaf in ("telemetry", "status", "ack", "log"):
        a.publish(broker.topic("srv_a", leaf), telemetry("srv_a"))
    a.publish(broker.topic("pdu_a", "cmd"), b"{}")  # its own cmd is read-only for it
    a.publish("gridtwin/demo/_host/alerts", b"{}")
    # Sentinel through an allowed path: per-client order means everything before it was handled.
    a.publish(broker.topic("pdu_a", "telemetry"), telemetry("pdu_a", 2))
    assert host.wait_for().topic == "gridtwin/demo/pdu_a/telemetry"
    assert [m.topic for m in host.messages] == ["gridtwin/demo/pdu_a/telemetry"]
    assert a.connected  # QoS 1 denials are acknowledged quietly, the node is not punished


def test_node_cannot_subscribe_to_another_nodes_cmd(broker, mqtt_client):
    a = mqtt_client("pdu_a")
    # Mosquitto 2.0's acl_file grants the SUBACK and applies `read` at delivery (2.1 may refuse the
    # SUBACK); either way nothing of srv_a's may reach pdu_a, which is what is checked below.
    a.subscribe(broker.topic("srv_a", "cmd"))
    a.subscribe(broker.topic("+", "cmd"))
    a.subscribe("#")
    assert a.subscribe(broker.topic("pdu_a", "cmd"))[0].value == 1
    host = mqtt_client(HOST_IDENTITY)
    host.publish(broker.topic("srv_a", "cmd"), b'{"id":"x","cmd":"reboot"}')
    host.publish(broker.topic("pdu_a", "cmd"), b'{"id":"sentinel"}')
    assert a.wait_for().topic == "gridtwin/demo/pdu_a/cmd"
    assert not a.received(broker.topic("srv_a", "#"))


def test_read_only_services_cannot_publish(broker, mqtt_client):
    host = mqtt_client(HOST_IDENTITY)
    host.subscribe(broker.topic("+", "#"))
    t = mqtt_client(TELEGRAF_IDENTITY)
    t.publish(broker.topic("pdu_a", "cmd"), b"{}")
    t.publish(broker.topic("pdu_a", "telemetry"), b"{}")
    mqtt_client("pdu_a").publish(broker.topic("pdu_a", "log"), b"{}")
    assert host.wait_for().topic == "gridtwin/demo/pdu_a/log"
    assert len(host.messages) == 1


def test_client_id_differing_from_cn_cannot_take_over_a_session(broker, mqtt_client):
    cmd = broker.topic("pdu_a", "cmd")
    # pdu_a has a persistent session with a subscription, then goes offline.
    a = mqtt_client("pdu_a", clean_start=False)
    a.subscribe(cmd)
    a.close()
    host = mqtt_client(HOST_IDENTITY)
    host.publish(cmd, b'{"id":"queued"}')  # queued for the offline pdu_a
    # srv_a claims client id "pdu_a": the broker makes its client id its CN, so no session, no
    # command.
    spoof = mqtt_client("srv_a", client_id="pdu_a", clean_start=False)
    assert spoof.session_present is False
    spoof.subscribe(broker.topic("srv_a", "cmd"))
    host.publish(broker.topic("srv_a", "cmd"), b'{"id":"sentinel"}')
    assert spoof.wait_for().topic == "gridtwin/demo/srv_a/cmd"
    assert len(spoof.messages) == 1
    broker.wait_for_log(r"as srv_a \(.*u'srv_a'\)")
    # The real pdu_a still finds its session and its queued command.
    again = mqtt_client("pdu_a", clean_start=False)
    assert again.session_present is True
    assert again.wait_for(cmd).payload == b'{"id":"queued"}'


def test_spoofed_client_id_does_not_kick_the_connected_node(broker, mqtt_client):
    a = mqtt_client("pdu_a")
    a.subscribe(broker.topic("pdu_a", "cmd"))
    mqtt_client("srv_a", client_id="pdu_a")
    host = mqtt_client(HOST_IDENTITY)
    host.publish(broker.topic("pdu_a", "cmd"), b'{"id":"still-here"}')
    assert a.wait_for().payload == b'{"id":"still-here"}'
    assert not a.disconnected


def test_payload_over_the_size_limit_is_refused(broker, mqtt_client):
    limit = broker.site.broker.max_packet_size
    host = mqtt_client(HOST_IDENTITY)
    host.subscribe(broker.topic("+", "telemetry"))
    big = mqtt_client("pdu_a")
    big.publish(broker.topic("pdu_a", "telemetry"), b"x" * (limit + 1), wait=False)
    big.wait_disconnected()
    big.close()  # or paho would reconnect and resend it, again and again
    broker.wait_for_log("Client pdu_a disconnected due to oversize packet")
    # A payload just under the limit (with room for the header) passes.
    ok = mqtt_client("srv_a")
    ok.publish(broker.topic("srv_a", "telemetry"), b"y" * (limit - 100))
    msg = host.wait_for()
    assert msg.topic == "gridtwin/demo/srv_a/telemetry"
    assert len(host.messages) == 1


def test_rotation_new_cert_connects_old_refused_once_revoked(
    site_pki_copy, broker_factory, mqtt_client
):
    pki = site_pki_copy.pki
    brk = broker_factory(site_pki_copy)
    old_serial = pki.load_cert("pdu_a").serial_number
    old_cert, old_key = pki.cert_path("pdu_a").read_bytes(), pki.key_path("pdu_a").read_bytes()
    [(identity, backup)] = pki.rotate("pdu_a")
    assert identity == "pdu_a"
    # The backup holds the old pair, byte for byte; the new pair is a new key.
    assert (backup / "cert.pem").read_bytes() == old_cert
    assert (backup / "key.pem").read_bytes() == old_key
    assert (backup / "key.der").exists() and (backup / "cert.der").exists()
    assert pki.key_path("pdu_a").read_bytes() != old_key
    assert pki.load_cert("pdu_a").serial_number != old_serial
    assert "_backup" in str(backup) and backup.stat().st_mode & 0o777 == 0o700
    # The new certificate connects; the old one still does until it is revoked (deploy first).
    assert mqtt_client("pdu_a", broker=brk).connected
    assert brk.probe(cert=str(backup / "cert.pem"), key=str(backup / "key.pem")).ok
    pki.revoke("pdu_a", serial=old_serial)
    brk.reload()
    refused = brk.probe(cert=str(backup / "cert.pem"), key=str(backup / "key.pem"))
    assert not refused.ok and "revoked" in refused.error
    assert brk.probe("pdu_a").ok


def test_restart_keeps_retained_status(broker, mqtt_client):
    node = mqtt_client("pdu_a")
    node.publish(broker.topic("pdu_a", "status"), b'{"state":"online"}', retain=True)
    node.close()
    port = broker.port
    broker.restart()
    assert broker.port == port
    host = mqtt_client(HOST_IDENTITY)
    host.subscribe(broker.topic("pdu_a", "status"))
    assert host.wait_for().payload == b'{"state":"online"}'
