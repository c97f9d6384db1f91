"""`gridtwin stack`: rendered Telegraf (TOML), Grafana (YAML/JSON) and the install plan parse and
hold the keys; topic parsing matches the contract against a real Mosquitto; the daemon's line
protocol round-trips through a real InfluxDB 1.x with the schema Telegraf's config produces;
InfluxDB 2 provisioning runs against tests/fixtures/fake_influx2.py (InfluxDB 2 and Grafana cannot
run here)."""

from __future__ import annotations

import json
import os
import stat
import tomllib
import types
import urllib.parse
import urllib.request

import pytest
import yaml

from fixtures.broker import make_site_pki
from gridtwin.cli import main
from gridtwin.daemon.lineprotocol import telemetry_line
from gridtwin.errors import ToolError
from gridtwin.pki import GRAFANA_IDENTITY, HOST_IDENTITY, TELEGRAF_IDENTITY
from gridtwin.stack import doctor, grafana, influx, install, telegraf
from test_stack_telegraf import (
    Script,
    lp,
    rendered,
)  # tests/host is on sys.path (pytest puts it there)


# --- Telegraf (its MQTT identity and Starlark processor: test_stack_telegraf.py) ------------------


def test_telegraf_config_holds_the_keys(site_pki):
    site = site_pki.site
    conf = rendered(site)
    (tele,) = conf["inputs"]["mqtt_consumer"]
    assert (
        tele["servers"] == ["ssl://localhost:8883"]
        and tele["topics"][0] == "gridtwin/demo/+/telemetry"
    )
    assert (
        tele["qos"] == 1 and tele["persistent_session"] is True and tele["client_id"] == "telegraf"
    )
    assert tele["tls_cert"] == "/etc/telegraf/gridtwin/telegraf.crt"
    assert tele["tls_key"] == "/etc/telegraf/gridtwin/telegraf.key"
    assert tele["tls_ca"] == "/etc/telegraf/gridtwin/ca.crt" and tele["data_format"] == "value"
    out = conf["outputs"]["influxdb_v2"][0]
    assert (
        out["token"] == "${INFLUX_TOKEN}"
        and out["organization"] == "gridtwin"
        and out["bucket"] == "gridtwin"
    )
    assert out["urls"] == ["http://127.0.0.1:8086"]
    assert conf["agent"]["omit_hostname"] is True and conf["agent"]["flush_interval"] == "10s"


def test_another_topic_root_still_gives_node_and_site(tmp_path):
    other = make_site_pki(
        tmp_path / "s",
        "[site]\nid = \"north\"\ntopic_root = \"plants/n1/grid\"\n"
        "[[nodes]]\nid = \"a1\"\nrole = \"sensor\"\n",
    ).site
    (inp,) = rendered(other)["inputs"]["mqtt_consumer"]
    assert inp["topics"][0] == "plants/n1/grid/+/telemetry"
    (p,) = Script(other).points(
        "plants/n1/grid/a1/telemetry",
        {"v": 1, "node": "a1", "boot": 1, "seq": 1, "ts": 5, "m": {"t": 20.5}},
    )
    assert p["tags"] == {"node": "a1", "site": "north"} and p["fields"]["t"] == 20.5


def test_grafana_identity_reads_the_readings_on_the_real_broker(broker, mqtt_client, site_pki):
    # (Telegraf's identity: test_stack_telegraf.py connects exactly what the rendered config says)
    g = mqtt_client(GRAFANA_IDENTITY)
    assert [rc.value for rc in g.subscribe(site_pki.site.topic("+", "telemetry"), 1)] == [1]
    mqtt_client("pdu_a").publish(broker.topic("pdu_a", "telemetry"), b'{"v":1}')
    g.wait_for(site_pki.site.topic("+", "telemetry"))


def test_daemon_and_telegraf_points_round_trip_through_real_influxdb(influxdb, site_pki):
    site = site_pki.site
    payload = {
        "v": 1,
        "node": "EL1",
        "boot": 7,
        "seq": 42,
        "ts": 1_700_000_000_123,
        "m": {"stack_a": 71.5, "h2_nlh": 0.25, "t amb,1": -3.0},
        "hist": True,
    }
    t = types.SimpleNamespace(
        node="EL1", boot=7, seq=42, ts=payload["ts"], m=payload["m"], hist=True
    )
    daemon = telemetry_line(t, site.storage.influx_measurement)
    (point,) = Script(site).points(site.topic("EL1", "telemetry"), payload)
    tg = lp(point)
    # both in nanoseconds: ms + seq, one point per reading (lineprotocol.point_time_ns)
    for db, text, precision in (("gridtwin", daemon, "ns"), ("viatelegraf", tg, "ns")):
        influxdb.query(f'CREATE DATABASE "{db}"', db=None)
        req = urllib.request.Request(
            f"{influxdb.url}/write?db={db}&precision={precision}", data=text.encode(), method="POST"
        )
        assert urllib.request.urlopen(req, timeout=10).status == 204
    got = {}
    for db in ("gridtwin", "viatelegraf"):
        (series,) = influxdb.query('SELECT * FROM "telemetry"', db=db)
        got[db] = dict(zip(series["columns"], series["values"][0]))
    assert got["gridtwin"]["time"] == got["viatelegraf"]["time"] == payload["ts"]
    for k in ("stack_a", "h2_nlh", "t amb,1", "gt_seq", "gt_boot", "node", "hist"):
        assert got["gridtwin"][k] == got["viatelegraf"][k], k
    assert got["viatelegraf"]["site"] == "demo" and got["gridtwin"]["gt_seq"] == 42
    # the dashboards' queries select exactly this schema
    fleet = grafana.dashboards(site)["fleet"]
    q = fleet["panels"][1]["targets"][0]["query"]
    assert 'r._measurement == "telemetry"' in q and 'r.node == "${node}"' in q and '"gt_seq"' in q


# --- Grafana --------------------------------------------------------------------------------------


def test_grafana_provisioning_parses_and_holds_the_keys(site_pki, tmp_path):
    site = site_pki.site
    files = grafana.render(site)
    ds = yaml.safe_load(files["/etc/grafana/provisioning/datasources/gridtwin.yaml"])
    assert ds["apiVersion"] == 1
    flux, live = ds["datasources"]
    assert (
        flux["uid"] == "gridtwin-influxdb"
        and flux["type"] == "influxdb"
        and flux["jsonData"]["version"] == "Flux"
    )
    assert flux["secureJsonData"] == {"token": "${GRAFANA_INFLUX_TOKEN}"}
    assert (
        flux["jsonData"]["defaultBucket"] == "gridtwin"
        and flux["jsonData"]["organization"] == "gridtwin"
    )
    assert (
        live["type"] == "grafana-mqtt-datasource"
        and live["jsonData"]["uri"] == "tls://localhost:8883"
    )
    assert live["jsonData"]["tlsAuth"] is True and live["jsonData"]["tlsSkipVerify"] is False
    assert live["secureJsonData"]["tlsClientCert"] == "$__file{/etc/grafana/gridtwin/grafana.crt}"
    assert live["secureJsonData"]["tlsClientKey"] == "$__file{/etc/grafana/gridtwin/grafana.key}"
    prov = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/gridtwin.yaml"])
    (p,) = prov["providers"]
    assert p["type"] == "file" and p["options"]["path"] == grafana.DASH_DIR
    dashes = {
        path.rsplit("/", 1)[1]: json.loads(text)
        for path, text in files.items()
        if path.endswith(".json")
    }
    assert set(dashes) == {
        "fleet.json",
        "power_chain.json",
        "pv.json",
        "electrolysers.json",
        "grid_frequency.json",
        "twin.json",
        "events.json",
    }  # no "sensors" dashboard: the example has no sensor node
    uids = {d["uid"] for d in ds["datasources"]}
    for name, d in dashes.items():
        for panel in d["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, (name, panel["title"])
    fleet = dashes["fleet.json"]
    (var,) = fleet["templating"]["list"]
    assert (
        var["name"] == "node"
        and var["includeAll"]
        and var["datasource"]["uid"] == "gridtwin-influxdb"
    )
    row = fleet["panels"][0]
    assert row["type"] == "row" and row["repeat"] == "node"
    chain = [pn["title"].split(":")[0] for pn in dashes["power_chain.json"]["panels"]]
    for up, down in (
        ("util_a", "trf_a"),
        ("trf_a", "sw_a"),
        ("gen_a", "sw_a"),
        ("sw_a", "dist_a"),
        ("ups_a", "pdu_a"),
        ("pdu_a", "srv_a"),
    ):
        assert chain.index(up) < chain.index(down)
    assert "pv1" not in chain and "grid1" not in chain
    # EL1 vs EL2: each panel of the electrolyser dashboard shows both (one query, or one per node)
    el = {
        pn["title"]: "\n".join(t["query"] for t in pn["targets"])
        for pn in dashes["electrolysers.json"]["panels"]
    }
    for what in (
        "efficiency (HHV)",
        "specific energy",
        "hydrogen yield",
        "safety: stack temperature",
        "current",
    ):
        assert '"EL1"' in el[what] and '"EL2"' in el[what], what
    grid = [pn["title"] for pn in dashes["grid_frequency.json"]["panels"]]
    assert grid[:2] == ["frequency", "rate of change (RoCoF)"] and "frequency deviation" in grid
    assert "${GRAFANA_INFLUX_TOKEN}" not in json.dumps(dashes)


# --- install plan ---------------------------------------------------------------------------------


def test_install_plan_gives_each_service_its_own_certificate(site_pki, tmp_path):
    pki = site_pki.pki
    files = install.plan(site_pki.site, pki)
    by = {f.path: f for f in files}
    key = by["/etc/telegraf/gridtwin/telegraf.key"]
    assert key.content == pki.key_path(TELEGRAF_IDENTITY).read_bytes() and (
        key.mode,
        key.group,
    ) == (0o640, "telegraf")
    assert (
        by["/etc/telegraf/gridtwin/telegraf.crt"].content
        == pki.cert_path(TELEGRAF_IDENTITY).read_bytes()
    )
    gkey = by["/etc/grafana/gridtwin/grafana.key"]
    assert gkey.content == pki.key_path(GRAFANA_IDENTITY).read_bytes() and (
        gkey.mode,
        gkey.group,
    ) == (0o640, "grafana")
    assert by["/etc/grafana/gridtwin/ca.crt"].content == pki.ca_cert_path.read_bytes()
    written = install.write(files, tmp_path / "root")
    assert (
        stat.S_IMODE(os.stat(tmp_path / "root/etc/telegraf/gridtwin/telegraf.key").st_mode) == 0o640
    )
    conf = tomllib.loads((tmp_path / "root" / telegraf.CONF.lstrip("/")).read_text())
    assert conf["inputs"]["mqtt_consumer"][0]["tls_key"] == "/etc/telegraf/gridtwin/telegraf.key"
    icfg = tomllib.loads((tmp_path / "root/etc/influxdb/config.toml").read_text())
    assert icfg["http-bind-address"] == "127.0.0.1:8086" and icfg["storage-wal-fsync-delay"] == "5s"
    assert len(written) == len(files)
    env = install.grafana_settings(tmp_path / "root")
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and "GF_LOG_MODE=console" in env.read_text()


def test_32_bit_os_is_refused_for_influxdb2(capsys):
    for arch in ("armhf", "armv7l", "i386"):
        with pytest.raises(
            ToolError, match=r"InfluxDB 2 needs a 64-bit OS, and this one is 32-bit"
        ):
            influx.check_64bit(arch)
    assert influx.check_64bit("arm64") == "arm64"
    assert (
        doctor.check_arch("armhf").ok is False
        and "64-bit Raspberry Pi OS" in doctor.check_arch("armhf").fix
    )


def test_stack_render_cli_writes_every_file(site_pki, tmp_path, capsys):
    assert (
        main(["--site", str(site_pki.path), "stack", "render", "--out", str(tmp_path / "out")]) == 0
    )
    out = capsys.readouterr().out
    assert "telegraf.d/gridtwin.conf" in out and "fleet.json" in out
    assert main(["--site", str(site_pki.path), "stack"]) == 2
    assert capsys.readouterr().err.startswith("gridtwin: say what to do: gridtwin stack render")


# --- InfluxDB 2 provisioning (against the local fake) ---------------------------------------------


def prov(site_pki, root, url, capsys):
    rc = main(
        ["--site", str(site_pki.path), "stack", "provision", "--root", str(root), "--url", url]
    )
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_provisioning_captures_tokens_into_root_only_files_and_never_prints_them(
    site_pki, fake_influx2, tmp_path, capsys
):
    root = tmp_path / "root"
    rc, text = prov(site_pki, root, fake_influx2.url, capsys)
    assert rc == 0, text
    env = influx.EnvFiles.under(root)
    s = fake_influx2.state
    calls = [(r["method"], r["path"]) for r in fake_influx2.requests]
    assert calls[:2] == [("GET", "/api/v2/setup"), ("POST", "/api/v2/setup")]
    setup = fake_influx2.requests[1]["body"]
    assert (
        setup["org"] == "gridtwin"
        and setup["bucket"] == "gridtwin"
        and setup["retentionPeriodSeconds"] == 365 * 86400
    )
    (bucket,) = s["buckets"]
    assert bucket["retentionRules"] == [{"type": "expire", "everySeconds": 365 * 86400}]
    tokens = {a["description"]: a for a in s["auths"]}
    write, read = tokens[influx.TELEGRAF_DESC], tokens[influx.GRAFANA_DESC]
    assert write["permissions"] == [
        {
            "action": "write",
            "resource": {"type": "buckets", "id": bucket["id"], "orgID": bucket["orgID"]},
        }
    ]
    assert read["permissions"][0]["action"] == "read" and len(read["permissions"]) == 1
    operator = next(a for a in s["auths"] if a["permissions"][0]["action"] == "operator")
    for path, var, token in (
        (env.telegraf, "INFLUX_TOKEN", write["token"]),
        (env.grafana, "GRAFANA_INFLUX_TOKEN", read["token"]),
        (env.admin, "INFLUX_ADMIN_TOKEN", operator["token"]),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert influx.read_env(path)[var] == token
    for a in s["auths"]:
        assert a["token"] not in text  # never printed
    assert influx.read_env(env.admin)["INFLUX_ADMIN_PASSWORD"] not in text
    # each token can do its job and no more (the fake enforces permissions as InfluxDB does)
    w = urllib.request.Request(
        f"{fake_influx2.url}/api/v2/write?org=gridtwin&bucket=gridtwin&precision=ms",
        data=b"telemetry,node=a x=1 1",
        method="POST",
        headers={"Authorization": f"Token {read['token']}"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(w)
    assert e.value.code == 401
    w.headers["Authorization"] = f"Token {write['token']}"
    assert urllib.request.urlopen(w).status == 204

    # run again: nothing new (setup not repeated, tokens kept)
    n_auth = len(s["auths"])
    rc, text = prov(site_pki, root, fake_influx2.url, capsys)
    assert rc == 0 and "nothing to change" in text and len(s["auths"]) == n_auth
    assert (
        sum(
            1
            for r in fake_influx2.requests
            if r["path"] == "/api/v2/setup" and r["method"] == "POST"
        )
        == 1
    )
    # Grafana's token file is lost: only its authorization is replaced
    env.grafana.unlink()
    rc, text = prov(site_pki, root, fake_influx2.url, capsys)
    assert rc == 0
    now = {a["description"]: a for a in s["auths"]}
    assert (
        now[influx.TELEGRAF_DESC]["id"] == write["id"]
        and now[influx.GRAFANA_DESC]["id"] != read["id"]
    )
    assert all(a["id"] != read["id"] for a in s["auths"])
    assert influx.read_env(env.grafana)["GRAFANA_INFLUX_TOKEN"] == now[influx.GRAFANA_DESC]["token"]


def test_already_set_up_influxdb_without_admin_token_is_a_clear_error(
    site_pki, fake_influx2, tmp_path, capsys
):
    assert prov(site_pki, tmp_path / "a", fake_influx2.url, capsys)[0] == 0
    rc, text = prov(
        site_pki, tmp_path / "b", fake_influx2.url, capsys
    )  # another root: no admin env file
    assert rc == 1
    assert (
        text.startswith("gridtwin: InfluxDB at http://127.0.0.1:") and "is already set up" in text
    )
    assert "influx auth create --operator" in text
    # a wrong admin token: 401 turned into a message naming the file
    influx.write_env(influx.EnvFiles.under(tmp_path / "b").admin, {"INFLUX_ADMIN_TOKEN": "wrong"})
    rc, text = prov(site_pki, tmp_path / "b", fake_influx2.url, capsys)
    assert rc == 1 and "HTTP 401" in text and "operator token" in text
    assert prov(site_pki, tmp_path / "c", "http://127.0.0.1:9", capsys)[1].startswith(
        "gridtwin: InfluxDB at http://127.0.0.1:9 does not answer"
    )


# --- doctor ---------------------------------------------------------------------------------------


def test_doctor_follows_the_probe_and_says_what_to_fix(
    site_pki_copy, fake_influx2, broker, mqtt_client, tmp_path
):
    from fixtures.broker import free_port

    site_pki = site_pki_copy
    site = (
        site_pki.site
    )  # a fresh Site object: point it at the fake InfluxDB and a closed Grafana port
    site.storage.influx_url = fake_influx2.url
    site.stack.grafana_url = f"http://127.0.0.1:{free_port()}"
    root = tmp_path / "root"
    influx.provision(site, influx.EnvFiles.under(root), out=lambda s: None)
    env = influx.EnvFiles.under(root)

    def run(timeout):
        return {
            c.name: c
            for c in doctor.run_checks(
                site,
                site_pki.pki,
                root=root,
                services=False,
                arch="arm64",
                daemon_running=False,
                timeout=timeout,
                broker_host=broker.host,
                broker_port=broker.port,
            )
        }

    # the probe runs while the daemon is stopped, when the broker keeps the daemon's session and
    # queues what nodes send for it: the probe, which speaks as the host, must leave both alone
    topic_root, node = site.topic_root, site.nodes[0].id
    daemon = mqtt_client(HOST_IDENTITY, clean_start=False)
    daemon.subscribe(f"{topic_root}/#")
    daemon.close()
    mqtt_client(node).publish(f"{topic_root}/{node}/telemetry", b'{"waiting": "for the daemon"}')
    # no Telegraf moves the probe: the data path fails and points at Telegraf
    checks = run(1.5)
    assert checks["InfluxDB 2"].ok and checks[f"token file {env.telegraf}"].ok
    assert not checks["Grafana"].ok and "grafana-server" in checks["Grafana"].fix
    dp = checks["data path MQTT -> Telegraf -> InfluxDB"]
    assert not dp.ok and "journalctl -u telegraf" in dp.fix
    # a Telegraf stand-in (its identity, the rendered topic and json_v2 mapping, the write token)
    (tele,) = rendered(site)["inputs"]["mqtt_consumer"]
    script = Script(site)
    t = mqtt_client(TELEGRAF_IDENTITY)
    t.subscribe(tele["topics"][0])
    token = influx.read_env(env.telegraf)["INFLUX_TOKEN"]

    def forward(client, userdata, msg):
        body = "\n".join(lp(p) for p in script.points(msg.topic, msg.payload))
        urllib.request.urlopen(
            urllib.request.Request(
                f"{fake_influx2.url}/api/v2/write?"
                + urllib.parse.urlencode(
                    {"org": "gridtwin", "bucket": "gridtwin", "precision": "ns"}
                ),
                data=body.encode(),
                method="POST",
                headers={"Authorization": f"Token {token}"},
            )
        )

    t.client.on_message = forward
    checks = run(10)
    assert checks["data path MQTT -> Telegraf -> InfluxDB"].ok, checks[
        "data path MQTT -> Telegraf -> InfluxDB"
    ]
    # the daemon comes back: its session and the reading queued for it are there (a probe on a
    # clean session had discarded both: the broker had acked the reading to the node)
    daemon = mqtt_client(HOST_IDENTITY, clean_start=False)
    assert daemon.session_present
    assert daemon.wait_for(f"{topic_root}/{node}/telemetry").payload == (
        b'{"waiting": "for the daemon"}'
    )
    # a token file others can read is flagged
    os.chmod(env.grafana, 0o644)
    c = doctor.check_env(env.grafana, "GRAFANA_INFLUX_TOKEN")
    assert not c.ok and "chmod 600" in c.fix


def test_doctor_service_check_uses_systemctl_states():
    ok = types.SimpleNamespace(stdout="active\n", returncode=0)
    bad = types.SimpleNamespace(stdout="inactive\n", returncode=3)
    assert doctor.check_service("telegraf", lambda *a: ok).ok
    c = doctor.check_service("telegraf", lambda *a: bad)
    assert not c.ok and c.detail == "inactive" and "systemctl enable --now telegraf" in c.fix
