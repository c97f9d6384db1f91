"""Rendering for Mosquitto 2.0 and 2.1, the install plan, `broker run`, the WebSocket and dev
listeners, and one-line CLI errors."""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from fixtures.broker import free_port, wait_until
from gridtwin import broker as gbroker
from gridtwin.cli import main
from gridtwin.errors import ToolError
from gridtwin.pki import HOST_IDENTITY


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def listener_blocks(conf: str) -> dict[str, list[str]]:
    blocks, current = {}, None
    for line in lines(conf):
        if line.startswith("listener "):
            current = line.split()[1]
            blocks[current] = []
        elif current:
            blocks[current].append(line)
    return blocks


def test_version_detection_and_parsing():
    assert gbroker.parse_version("mosquitto version 2.0.11\n\nmosquitto is an MQTT ...") == (
        2,
        0,
        11,
    )
    assert gbroker.parse_version("mosquitto version 2.1.0") == (2, 1, 0)
    with pytest.raises(ToolError):
        gbroker.parse_version("something else")
    assert gbroker.detect_version() >= (2, 0, 0)  # the installed one answers


def test_20_form_tls_listener_enforces_the_rules(site_pki):
    files = gbroker.render(
        site_pki.site, site_pki.pki, version=(2, 0, 11), data_dir=site_pki.dir / "b"
    )
    conf = files["mosquitto.conf"]
    assert set(files) == {"mosquitto.conf", "acl"}
    assert "per_listener_settings true" in lines(conf)
    [(port, block)] = listener_blocks(conf).items()
    assert port == "8883"
    for want in (
        "protocol mqtt",
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        f"crlfile {site_pki.pki.crl_path}",
        f"cafile {site_pki.pki.ca_cert_path}",
        f"acl_file {site_pki.dir / 'b' / 'acl'}",
    ):
        assert want in block
    for want in (
        "persistence true",
        f"persistence_location {site_pki.dir / 'b'}/",
        "max_packet_size 32768",
        "max_queued_messages 100000",
    ):
        assert want in lines(conf)
    assert "allow_anonymous true" not in conf and "plugin" not in conf


def test_21_form_uses_the_acl_plugin_and_listener_options(site_pki):
    conf = gbroker.render(
        site_pki.site, site_pki.pki, version=(2, 1, 0), dev=True, data_dir=site_pki.dir / "b"
    )["mosquitto.conf"]
    ls = lines(conf)
    assert not any(line.startswith(("per_listener_settings", "acl_file")) for line in ls)
    assert any(re.fullmatch(r"plugin_load acl \S+mosquitto_acl_file\.so", line) for line in ls)
    assert f"plugin_opt_acl_file {site_pki.dir / 'b' / 'acl'}" in ls
    blocks = listener_blocks(conf)
    assert "plugin_use acl" in blocks["8883"] and "listener_allow_anonymous false" in blocks["8883"]
    assert (
        "plugin_use acl_dev" in blocks["1883"] and "listener_allow_anonymous true" in blocks["1883"]
    )
    assert "allow_anonymous false" in ls  # global default for anything not overridden


def test_plain_listener_only_with_dev_and_only_on_loopback(site_pki):
    plain = gbroker.render(site_pki.site, site_pki.pki, version=(2, 0, 11))["mosquitto.conf"]
    assert list(listener_blocks(plain)) == ["8883"]
    dev = gbroker.render(site_pki.site, site_pki.pki, version=(2, 0, 11), dev=True, listen="")
    assert "listener 1883 127.0.0.1" in lines(dev["mosquitto.conf"])
    assert "acl.dev" in dev


def test_acl_confines_each_identity(site_pki):
    acl = gbroker.render_acl(site_pki.site)
    users: dict[str, list[str]] = {}
    current = None
    for line in lines(acl):
        if line.startswith("user "):
            current = line.split()[1]
            users[current] = []
        else:
            assert current, f"rule outside a user block would apply to anonymous clients: {line}"
            users[current].append(line)
    r = "gridtwin/demo"
    no_ota = [f"topic deny {r}/+/ota", f"topic deny {r}/+/ota/ack"]
    assert users[HOST_IDENTITY] == [
        f"topic read {r}/#",
        *no_ota,
        f"topic write {r}/+/cmd",
        f"topic readwrite {r}/_host/#",
    ]
    assert users["telegraf"] == users["grafana"] == [f"topic read {r}/#", *no_ota]
    assert users["pdu_a"] == [
        f"topic write {r}/pdu_a/{leaf}" for leaf in ("telemetry", "status", "ack", "log", "ota/ack")
    ] + [f"topic read {r}/pdu_a/cmd", f"topic read {r}/pdu_a/ota"]
    # only the OTA identity writes a node's update topic (docs/ota.md)
    assert users[gbroker.OTA_IDENTITY] == [
        f"topic write {r}/+/ota",
        f"topic read {r}/+/ota/ack",
        f"topic read {r}/+/status",
    ]
    assert set(users) == {
        HOST_IDENTITY,
        "telegraf",
        "grafana",
        gbroker.OTA_IDENTITY,
        *site_pki.site.node_ids,
    }


def test_install_plan_modes_and_owners(site_pki, tmp_path):
    plan = gbroker.install_plan(
        site_pki.site, site_pki.pki, etc_dir=tmp_path / "etc", version=(2, 0, 11)
    )
    by_name = {f.path.name: f for f in plan}
    assert (
        by_name["server.key"].mode,
        by_name["server.key"].owner,
        by_name["server.key"].group,
    ) == (0o640, "root", "mosquitto")
    assert by_name["acl"].mode == 0o640 and by_name["gridtwin"].mode == 0o750
    assert by_name["mosquitto.conf"].mode == 0o644
    conf = by_name["mosquitto.conf"].content.decode()
    gt = tmp_path / "etc" / "gridtwin"
    assert f"keyfile {gt / 'server.key'}" in conf and f"crlfile {gt / 'crl.pem'}" in conf
    assert "persistence_location /var/lib/mosquitto/" in conf and "user " not in conf
    assert by_name["server.key"].content == site_pki.pki.server_key_path.read_bytes()
    # Apply it to a temp folder (no chown: tests never touch /etc or accounts).
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "mosquitto.conf").write_text("# Debian's own\n")
    gbroker.apply_plan(plan, chown=False)
    assert (gt / "server.key").stat().st_mode & 0o777 == 0o640
    assert (gt / "acl").read_text() == gbroker.render_acl(site_pki.site)
    assert (tmp_path / "etc" / "mosquitto.conf.gridtwin-orig").read_text() == "# Debian's own\n"
    gbroker.apply_plan(plan, chown=False)  # twice is fine, the original stays the original
    assert (tmp_path / "etc" / "mosquitto.conf.gridtwin-orig").read_text() == "# Debian's own\n"


def test_websocket_listener_speaks_mqtt_over_tls(broker_factory, mqtt_client):
    brk = broker_factory(ws=True)
    host = mqtt_client(HOST_IDENTITY, broker=brk)
    host.subscribe(brk.topic("+", "log"))
    browser = mqtt_client("grafana", broker=brk, transport="websockets")
    node = mqtt_client("EL1", broker=brk, transport="websockets")
    browser.subscribe(brk.topic("+", "log"))
    node.publish(brk.topic("EL1", "log"), b'{"lvl":"info"}')
    assert host.wait_for().topic == "gridtwin/demo/EL1/log"
    assert browser.wait_for().topic == "gridtwin/demo/EL1/log"


def test_dev_listener_is_anonymous_loopback_and_confined_to_the_root(broker_factory, mqtt_client):
    import paho.mqtt.client as mqtt

    brk = broker_factory(dev=True)
    host = mqtt_client(HOST_IDENTITY, broker=brk)
    host.subscribe("#")
    got = []
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-tool")
    plain.on_connect = lambda c, u, f, rc, p: got.append(rc)
    plain.connect("127.0.0.1", brk.dev_port)
    plain.loop_start()
    try:
        wait_until(lambda: got, 5, "CONNACK on the dev listener")
        assert not got[0].is_failure
        plain.publish("outside/root", b"no", qos=1).wait_for_publish(5)
        plain.publish(brk.topic("pdu_a", "log"), b"dev", qos=1).wait_for_publish(5)
        msg = host.wait_for()
        assert msg.topic == "gridtwin/demo/pdu_a/log"
        assert not host.received("outside/#")
    finally:
        plain.disconnect()
        plain.loop_stop()
    assert f"listener {brk.dev_port} 127.0.0.1" in brk.files["mosquitto.conf"]


def test_broker_run_foreground_restarts_on_revoke_and_stops_on_ctrl_c(site_pki_copy, tmp_path):
    port = free_port()
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridtwin",
                "--site",
                str(site_pki_copy.path),
                "broker",
                "run",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def accepts():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    pid_file = site_pki_copy.dir / "var" / "broker" / "run.pid"
    try:
        # the broker may listen a moment before `broker run` has written its pid file: wait for both
        wait_until(
            lambda: (accepts() and pid_file.exists()) or proc.poll() is not None,
            10,
            "broker run to listen",
        )
        assert proc.poll() is None
        assert int(pid_file.read_text()) == proc.pid
        # `pki revoke` finds the running broker and tells it (SIGUSR1 -> restart with the new CRL;
        # SIGHUP stops it, as a closed terminal should: tests/host/test_signals.py).
        assert main(["--site", str(site_pki_copy.path), "pki", "revoke", "EL2"]) == 0
        wait_until(lambda: log.read_text().count(" running") >= 2, 10, "the restarted broker")
        assert "restarting mosquitto" in log.read_text()
        wait_until(accepts, 10, "the restarted broker to listen")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert "terminating" in log.read_text()
    assert not pid_file.exists()


def test_pki_and_broker_errors_are_one_line(tmp_path, capsys, site_pki):
    site = tmp_path / "site.toml"
    site.write_text('[site]\nid = "x"\n')
    cases = [
        (["pki", "list"], "no CA in", 1),
        (["pki", "issue", "pdu_a"], "not a node of site 'x'", 1),
        (["broker", "run"], "no PKI in", 1),
        (["broker", "install", "--dry-run"], "is missing", 1),
        (["pki", "issue"], "give one identity or --all", 2),
        (["broker", "config", "--mosquitto-version", "two"], "not a version", 2),
    ]
    for argv, words, rc in cases:
        assert main(["--site", str(site), *argv]) == rc, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and words in err, (argv, err)
    assert main(["--site", str(site_pki.path), "pki", "init"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a CA" in err and "--force" in err


def test_pki_list_prints_every_identity(site_pki, capsys):
    assert main(["--site", str(site_pki.path), "pki", "list"]) == 0
    out = capsys.readouterr().out
    for identity in ("ca", "broker", HOST_IDENTITY, "srv_a", "EL1", "grid1"):
        assert re.search(
            rf"^{identity}\s+\w+\s+[0-9a-f]+\s+\d{{4}}-\d\d-\d\d\s+valid$", out, re.M
        ), identity


def test_render_picks_the_form_of_the_installed_version(site_pki, monkeypatch, capsys):
    installed = gbroker.render(site_pki.site, site_pki.pki)["mosquitto.conf"]
    assert ("per_listener_settings true" in installed) == (gbroker.detect_version() < (2, 1))
    monkeypatch.setattr(gbroker, "detect_version", lambda binary=None: (2, 1, 2))
    assert "plugin_use acl" in gbroker.render(site_pki.site, site_pki.pki)["mosquitto.conf"]
    assert main(["broker", "version"]) == 0
    assert "mosquitto 2.1.2: renders the 2.1 (acl-file plugin" in capsys.readouterr().out
    monkeypatch.setattr(gbroker, "detect_version", lambda binary=None: (2, 0, 18))
    assert "acl_file " in gbroker.render(site_pki.site, site_pki.pki)["mosquitto.conf"]


def test_every_daemon_instance_gets_the_host_rights(tmp_path):
    from gridtwin.site import load_site

    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nid = "s"\n[daemon]\ninstances = 3\n[[nodes]]\nid = "n1"\nrole = "pdu"\n'
    )
    acl = gbroker.render_acl(load_site(path))
    blocks = {}
    for block in acl.split("\nuser ")[1:]:
        name, *rules = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
        blocks[name] = rules
    r = "gridtwin/s"
    host = [
        f"topic read {r}/#",
        f"topic deny {r}/+/ota",
        f"topic deny {r}/+/ota/ack",
        f"topic write {r}/+/cmd",
        f"topic readwrite {r}/_host/#",
    ]
    assert blocks[HOST_IDENTITY] == blocks["gridtwin-host-2"] == blocks["gridtwin-host-3"] == host
    assert "gridtwin-host-4" not in blocks
