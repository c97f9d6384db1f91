"""The daemon as users run it: `gridtwin daemon` on a site file, and the CLI verbs around it.

Real broker with the rendered config (issue #3 fixtures), the daemon as a process, a node played
by a paho client with the node's certificate that answers commands like the firmware does.
"""

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from fixtures.broker import free_port
from fixtures.daemon_fleet import count_rows, endpoint, telemetry_payload, wait_for

pytestmark = pytest.mark.broker


def gridtwin(site, *args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "gridtwin", "--site", str(site), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class FakeNode:
    """pdu_a as the firmware behaves on the bus: retained birth, will, telemetry, acks to
    commands."""

    def __init__(self, broker, node, answers):
        ep = endpoint(broker, node)
        self.root, self.node, self.answers, self.commands = ep.root, node, answers, []
        c = self.client = ep.client(node)
        c.will_set(f"{ep.root}/{node}/status", json.dumps({"state": "offline"}), qos=1, retain=True)
        c.on_connect = lambda cl, *a: cl.subscribe(f"{ep.root}/{node}/cmd", 1)
        c.on_message = self._on_cmd
        ep.connect(c)
        c.loop_start()
        wait_for(c.is_connected, 10, f"{node} to connect")

    def _on_cmd(self, client, userdata, msg):
        cmd = json.loads(msg.payload)
        self.commands.append(cmd)
        answer = self.answers.get(cmd["cmd"])
        if answer is not None:
            client.publish(
                f"{self.root}/{self.node}/ack",
                json.dumps({"id": cmd["id"], **answer, "ts": 1}),
                qos=1,
            )

    def birth(self):
        self.client.publish(
            f"{self.root}/{self.node}/status",
            json.dumps(
                {
                    "state": "online",
                    "fw": "0.6.0",
                    "board": "esp32s3",
                    "reset": "power_on",
                    "boot": 77,
                    "heap": 81234,
                    "rssi": -58,
                    "uptime": 12,
                    "outbox": 0,
                    "drops": 0,
                }
            ),
            qos=1,
            retain=True,
        ).wait_for_publish(5)

    def die(self):
        # "disconnect with will message": the broker publishes the will, as when power is lost
        self.client.disconnect(
            reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        )
        self.client.loop_stop()


@pytest.fixture
def running(site_pki_copy, broker, tmp_path):
    site = site_pki_copy.path
    metrics_port = free_port()
    text = site.read_text()
    text = re.sub(r"(?m)^port = \d+", f"port = {broker.port}", text)
    site.write_text(text + f"\n[daemon]\nmetrics_port = {metrics_port}\n")
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridtwin", "--site", str(site), "daemon"], stdout=log, stderr=log
    )

    def healthy():
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        try:
            return (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=1).status
                == 200
            )
        except OSError:
            return False

    wait_for(healthy, 20, "the daemon to be healthy")
    yield site, proc, metrics_port, site_pki_copy.dir / "var" / "gridtwin.db"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    log.close()


def test_nodes_cmd_query_tail_and_metrics(running, broker):
    site, proc, metrics_port, db = running
    node = FakeNode(
        broker,
        "pdu_a",
        {
            "set_fault": {"ok": True, "result": {"fault": True}},
            "reboot": {"ok": False, "err": "busy"},
        },
    )
    try:
        node.birth()
        now = int(time.time() * 1000)
        for seq in range(5):
            node.client.publish(
                f"{node.root}/pdu_a/telemetry",
                telemetry_payload("pdu_a", boot=77, seq=seq, ts=now - 5000 + seq * 1000),
                qos=1,
            )
        wait_for(lambda: count_rows(db) == 5, 10, "readings stored")

        out = gridtwin(site, "nodes")
        assert out.returncode == 0, out.stderr
        row = next(line for line in out.stdout.splitlines() if line.startswith("pdu_a"))
        assert "online" in row and "0.6.0" in row and "-58" in row and "power_on" in row
        assert re.search(r"(?m)^util_a\s+unknown", out.stdout)  # in the site, never heard from

        out = gridtwin(site, "cmd", "pdu_a", "set_fault", "state=true", "level=3", "why=test")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"fault": True}
        assert (
            node.commands[-1]["args"] == {"state": True, "level": 3, "why": "test"}
            and node.commands[-1]["id"]
        )

        out = gridtwin(site, "cmd", "pdu_a", "reboot")
        assert out.returncode == 1 and "busy" in out.stderr

        out = gridtwin(site, "cmd", "pdu_a", "unknown_cmd", "--timeout", "0.5")
        assert (
            out.returncode == 4
            and "did not acknowledge" in out.stderr
            and "Traceback" not in out.stderr
        )

        out = gridtwin(site, "cmd", "util_a", "reboot", "--ttl", "0.3")
        assert out.returncode == 4 and "util_a is offline" in out.stderr

        out = gridtwin(site, "cmd", "pdu_b", "reboot")
        assert out.returncode == 2 and "did you mean 'pdu_a'" in out.stderr

        out = gridtwin(site, "cmd", "pdu_a", "set_fault", "novalue")
        assert out.returncode == 2 and "key=value" in out.stderr

        out = gridtwin(site, "query", "pdu_a", "p_w", "--since", "1h", "--csv")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "time,p_w" and [float(x.split(",")[1]) for x in lines[1:]] == [
            0.0,
            1.5,
            3.0,
            4.5,
            6.0,
        ]
        assert gridtwin(site, "query", "pdu_a", "p_w", "--since", "soon").returncode == 2

        tail = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridtwin",
                "--site",
                str(site),
                "tail",
                "pdu_a",
                "-n",
                "2",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # publish until the tail has attached and seen two readings
            seq = iter(range(5, 1000))
            while tail.poll() is None:
                node.client.publish(
                    f"{node.root}/pdu_a/telemetry", telemetry_payload("pdu_a", 77, next(seq)), qos=1
                )
                try:
                    tail.wait(0.2)
                except subprocess.TimeoutExpired:
                    pass
            lines = tail.stdout.read().splitlines()
        finally:
            if tail.poll() is None:
                tail.kill()
            tail.wait()
        assert (
            tail.returncode == 0
            and len(lines) == 2
            and all(json.loads(x)["node"] == "pdu_a" for x in lines)
        )

        out = gridtwin(site, "daemon", "status")
        assert out.returncode == 0 and json.loads(out.stdout)["subscribed"] is True
        out = gridtwin(site, "daemon")  # a second daemon for the same site
        assert (
            out.returncode == 1
            and "is another daemon running" in out.stderr
            and "Traceback" not in out.stderr
        )

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        stored = int(re.search(r"(?m)^gridtwin_stored_total (\d+)", text).group(1))
        assert stored >= 7 and "gridtwin_spool_depth 0" in text and 'reason="none"' not in text
        # per-node gauges for Prometheus users; no InfluxDB gauge on the SQLite backend
        assert 'gridtwin_node_online{node="pdu_a"} 1' in text and "influx_reachable" not in text

        # /cmd is not for anyone on the host: it needs the token only the daemon's user can read
        req = urllib.request.Request(
            f"http://127.0.0.1:{metrics_port}/cmd", data=b'{"node":"pdu_a","cmd":"x"}'
        )
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req)
        assert exc.value.code == 401
        assert oct((db.parent / "daemon.json").stat().st_mode & 0o777) == "0o600"

        node.die()
        wait_for(
            lambda: (
                "offline"
                in next(
                    line
                    for line in gridtwin(site, "nodes").stdout.splitlines()
                    if line.startswith("pdu_a")
                )
            ),
            10,
            "the will to mark pdu_a offline",
        )
        history = count_rows(db, "SELECT count(*) FROM commands")
        assert (
            history == 4
        )  # set_fault, reboot, unknown_cmd, util_a (offline); the bad ones never got an id
        assert count_rows(db, "SELECT count(*) FROM commands WHERE state='timeout'") >= 1
        assert (
            count_rows(db, "SELECT count(*) FROM commands WHERE state='offline' AND node='util_a'")
            == 1
        )
        assert (
            count_rows(
                db, "SELECT count(*) FROM commands WHERE state='ok' AND result='{\"fault\": true}'"
            )
            == 1
        )
    finally:
        if node.client.is_connected():
            node.die()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert not (db.parent / "daemon.json").exists()
    out = gridtwin(site, "cmd", "pdu_a", "set_fault")
    assert out.returncode == 1 and "not running" in out.stderr


def test_daemon_with_an_invalid_site_or_no_data_says_so(tmp_path, site_pki_copy):
    site = site_pki_copy.path
    site.write_text(site.read_text() + "\n[storage]\nbackend = \"influx\"\n")
    out = gridtwin(site, "daemon")
    assert out.returncode == 2 and "storage.backend" in out.stderr and "influxdb" in out.stderr
    site.write_text(site.read_text().replace('backend = "influx"', 'backend = "sqlite"'))
    out = gridtwin(site, "nodes")
    assert out.returncode == 1 and "no data yet" in out.stderr and "Traceback" not in out.stderr
    out = gridtwin(site, "daemon", "install", "--dry-run", "--user", "pi")
    assert out.returncode == 0 and "Restart=always" in out.stdout and "User=pi" in out.stdout
    assert f"--site {site.resolve()} daemon run" in out.stdout


def test_influxdb_backend_from_the_site_file(site_pki_copy):
    from gridtwin.daemon.service import Daemon
    from gridtwin.errors import ConfigError
    from gridtwin.site import load_site

    site = site_pki_copy.path
    site.write_text(
        site.read_text() + '\n[storage]\nbackend = "influxdb"\ninflux_api = "v1"\n'
        'influx_url = "http://127.0.0.1:8086"\ninflux_token_file = "influx.token"\n'
    )
    with pytest.raises(ConfigError) as exc:
        Daemon.from_site(load_site(site))
    assert exc.value.key == "storage.influx_token_file" and "influx.token" in exc.value.problem
    (site.parent / "influx.token").write_text("s3cret\n")
    d = Daemon.from_site(load_site(site), metrics_port=None)
    try:
        assert (
            d.forwarder.writer.cfg.token == "s3cret"
            and "/write?db=gridtwin" in d.forwarder.writer.endpoint
        )
        assert d.ingest.influx_measurement == "telemetry"
        assert d.store.path == site.parent / "var" / "gridtwin.db"
        # the client id is the certificate's CN, the id the rendered broker gives the session anyway
        # (it was "gridtwin-daemon", which the daemon logged while the broker knew it as
        # gridtwin-host)
        assert d.bus.client_id == "gridtwin-host" and d.bus.status_topic.endswith(
            "/_host/daemon/gridtwin-host"
        )
    finally:
        d.store.close()
