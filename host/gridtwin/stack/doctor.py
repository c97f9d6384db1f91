"""`gridtwin stack doctor`: is each part of the stack there, and does a reading get through?

Each check returns a `Check(name, ok, detail, fix)`; the command prints them and exits non-zero
when one fails. The data path check publishes a probe reading on ``<root>/_host/telemetry`` with
the host identity (its ACL allows ``_host/#``; the daemon ignores ``_host`` topics, Telegraf's
``<root>/+/telemetry`` subscription sees it), then asks InfluxDB 2 for that row with Grafana's
read token. When the daemon is running it holds the host identity's MQTT session (the broker
makes the client id the certificate CN), so the doctor does not connect with that identity then:
it checks instead that InfluxDB holds readings newer than two minutes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import ssl
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gridtwin.errors import GridTwinError
from gridtwin.stack import grafana, influx, telegraf

PROBE_FIELD = "gt_doctor"
PROBE_NODE = "_host"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_arch(arch: str | None = None) -> Check:
    try:
        a = influx.check_64bit(arch)
        return Check("64-bit OS", True, a)
    except influx.ToolError as exc:
        return Check("64-bit OS", False, exc.message, exc.hint or "")


def check_service(name: str, runner=None) -> Check:
    from gridtwin.stack.install import systemctl

    try:
        r = (runner or systemctl)("is-active", name)
    except influx.ToolError as exc:
        return Check(f"service {name}", False, exc.message, exc.hint or "")
    state = (r.stdout or "").strip() or "unknown"
    return Check(
        f"service {name}",
        state == "active",
        state,
        ""
        if state == "active"
        else f"sudo systemctl enable --now {name}; see `journalctl -u {name}`",
    )


def check_env(path: Path, var: str) -> Check:
    name = f"token file {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check(name, False, "missing", "run `sudo gridtwin stack provision`")
    except PermissionError:
        return Check(
            name,
            False,
            "not readable by this user (good: it is root-only)",
            "run the doctor with sudo",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Check(
            name, False, f"mode {mode:o} lets others read the token", f"sudo chmod 600 {path}"
        )
    try:
        has = bool(influx.read_env(path).get(var))
    except influx.ToolError as exc:
        return Check(name, False, exc.message, exc.hint or "")
    if not has:
        return Check(name, False, f"no {var}", "run `sudo gridtwin stack provision`")
    return Check(name, True, f"{var} set, mode 600")


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_influx(site, token: str | None) -> Check:
    url = site.storage.influx_url.rstrip("/")
    try:
        status, body = _get(f"{url}/health")
    except (urllib.error.URLError, OSError) as exc:
        return Check(
            "InfluxDB 2",
            False,
            f"{url} does not answer ({getattr(exc, 'reason', exc)})",
            "sudo systemctl start influxdb; see `journalctl -u influxdb`",
        )
    if status != 200:
        return Check(
            "InfluxDB 2", False, f"/health says HTTP {status}", "see `journalctl -u influxdb`"
        )
    if not token:
        return Check(
            "InfluxDB 2",
            False,
            "up, but no read token to check the bucket",
            "run `sudo gridtwin stack provision`",
        )
    try:
        doc = influx.InfluxAPI(url, token).call(
            "GET", "/buckets", query={"name": site.storage.influx_bucket}
        )
    except influx.InfluxError as exc:
        return Check("InfluxDB 2", False, exc.message, "run `sudo gridtwin stack provision` again")
    if not any(b.get("name") == site.storage.influx_bucket for b in doc.get("buckets") or []):
        return Check(
            "InfluxDB 2",
            False,
            f"no bucket {site.storage.influx_bucket} visible to Grafana's token",
            "run `sudo gridtwin stack provision`",
        )
    return Check("InfluxDB 2", True, f"{url}, bucket {site.storage.influx_bucket}")


def check_grafana(site) -> Check:
    url = site.stack.grafana_url.rstrip("/")
    try:
        status, body = _get(f"{url}/api/health")
    except (urllib.error.URLError, OSError) as exc:
        return Check(
            "Grafana",
            False,
            f"{url} does not answer ({getattr(exc, 'reason', exc)})",
            "sudo systemctl start grafana-server; see `journalctl -u grafana-server`",
        )
    try:
        db = json.loads(body).get("database")
    except ValueError:
        db = None
    ok = status == 200 and db == "ok"
    return Check(
        "Grafana", ok, f"{url}: database {db}", "" if ok else "see `journalctl -u grafana-server`"
    )


def flux_rows(site, token: str, flux: str) -> list[dict]:
    url = site.storage.influx_url.rstrip("/")
    req = urllib.request.Request(
        f"{url}/api/v2/query?" + urllib.parse.urlencode({"org": site.storage.influx_org}),
        data=json.dumps({"query": flux, "type": "flux"}).encode(),
        method="POST",
        headers={
            "Authorization": f"Token {token}",
            "Content-Type": "application/json",
            "Accept": "application/csv",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    rows = [row for row in csv.DictReader(io.StringIO(text)) if row.get("_value") not in (None, "")]
    return rows


def _probe_query(site, value: float) -> str:
    st = site.storage
    return (
        f'from(bucket: "{st.influx_bucket}") |> range(start: -10m) '
        f'|> filter(fn: (r) => r._measurement == "{st.influx_measurement}" and r.node == '
        f'"{PROBE_NODE}" and r._field == "{PROBE_FIELD}" and r._value == {value!r})'
    )


def check_data_path(
    site,
    pki,
    token: str | None,
    *,
    daemon_running: bool = False,
    timeout: float = 40.0,
    broker_host: str | None = None,
    broker_port: int | None = None,
) -> Check:
    name = "data path MQTT -> Telegraf -> InfluxDB"
    if not token:
        return Check(name, False, "no read token", "run `sudo gridtwin stack provision`")
    if daemon_running:
        st = site.storage
        flux = (
            f'from(bucket: "{st.influx_bucket}") |> range(start: -2m) '
            f'|> filter(fn: (r) => r._measurement == "{st.influx_measurement}") |> last()'
        )
        try:
            rows = flux_rows(site, token, flux)
        except (urllib.error.URLError, OSError) as exc:
            return Check(name, False, f"query failed: {exc}", "see `journalctl -u influxdb`")
        if rows:
            return Check(name, True, f"{len(rows)} series written in the last 2 minutes")
        return Check(
            name,
            False,
            "no readings in the last 2 minutes",
            "are nodes online (`gridtwin nodes`)? is telegraf running (`journalctl -u telegraf`)?",
        )

    from gridtwin.daemon.connection import Endpoint
    from gridtwin.pki import HOST_IDENTITY
    from gridtwin.stack.config import broker_host as default_host

    value = round(random.uniform(1, 1e6), 3)
    payload = json.dumps(
        {
            "v": 1,
            "node": PROBE_NODE,
            "boot": 0,
            "seq": 0,
            "ts": int(time.time() * 1000),
            "m": {PROBE_FIELD: value},
        }
    )
    host, port = broker_host or default_host(site), broker_port or site.broker.port
    # The probe speaks as the host, whose client id is the stopped daemon's: its session holds
    # what nodes sent since (the broker acked it to them). A clean session would discard all of
    # it; the probe resumes the session instead, takes at most one message (Receive Maximum 1)
    # and acks none, so everything is still there, unacknowledged, when the daemon comes back.
    ep = Endpoint.of(pki, HOST_IDENTITY, host, port, site.topic_root)
    try:
        c = ep.client(HOST_IDENTITY, persistent=True, manual_ack=True)
    except GridTwinError as exc:  # a certificate or key missing or unreadable
        return Check(name, False, exc.message, exc.hint or "")
    try:
        ep.connect(c, persistent=True, receive_maximum=1)
        c.loop_start()
        info = c.publish(site.topic(PROBE_NODE, "telemetry"), payload, qos=1)
        info.wait_for_publish(10)
    except (OSError, ssl.SSLError, ValueError, RuntimeError, GridTwinError) as exc:
        return Check(
            name,
            False,
            f"cannot publish the probe on {host}:{port}: {getattr(exc, 'message', exc)}",
            "is mosquitto running (`systemctl status mosquitto`)? `gridtwin doctor` checks the "
            "broker",
        )
    finally:
        c.disconnect()
        c.loop_stop()
    deadline = time.monotonic() + timeout
    q = _probe_query(site, value)
    while True:
        try:
            if flux_rows(site, token, q):
                return Check(name, True, f"probe {PROBE_FIELD}={value} arrived in InfluxDB")
        except (urllib.error.URLError, OSError) as exc:
            return Check(name, False, f"query failed: {exc}", "see `journalctl -u influxdb`")
        if time.monotonic() > deadline:
            return Check(
                name,
                False,
                f"the probe published on {site.topic(PROBE_NODE, 'telemetry')} did not reach "
                f"InfluxDB within {timeout:.0f}s",
                "see `journalctl -u telegraf` (TLS to the broker? token?); "
                f"the token is {telegraf.TOKEN_VAR} in {telegraf.ENV_FILE}",
            )
        time.sleep(1.0)  # Telegraf flushes on its own interval; nothing to wait on but the database


def run_checks(
    site,
    pki,
    *,
    root: Path | str = "/",
    services: bool = True,
    data_path: bool = True,
    daemon_running: bool | None = None,
    runner=None,
    arch: str | None = None,
    timeout: float = 40.0,
    broker_host: str | None = None,
    broker_port: int | None = None,
) -> list[Check]:
    env = influx.EnvFiles.under(root)
    checks = [check_arch(arch)]
    if services:
        checks += [
            check_service(s, runner)
            for s in ("mosquitto", "influxdb", "telegraf", "grafana-server")
        ]
    checks += [
        check_env(env.telegraf, telegraf.TOKEN_VAR),
        check_env(env.grafana, grafana.TOKEN_VAR),
    ]
    try:
        token = influx.read_env(env.grafana).get(grafana.TOKEN_VAR)
    except influx.ToolError:
        token = None
    checks.append(check_influx(site, token))
    checks.append(check_grafana(site))
    if data_path:
        if daemon_running is None:
            daemon_running = _daemon_running(site)
        checks.append(
            check_data_path(
                site,
                pki,
                token,
                daemon_running=daemon_running,
                timeout=timeout,
                broker_host=broker_host,
                broker_port=broker_port,
            )
        )
    return checks


def _daemon_running(site) -> bool:
    try:
        from gridtwin.daemon.client import DaemonClient

        return bool(DaemonClient.for_site(site).health().get("ok", True))
    except Exception:  # no daemon.json, not reachable: not running
        return False
