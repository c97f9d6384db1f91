"""The OPC UA collector inside `gridtwin daemon` (issue #16): `[[opcua.sources]]` in site.toml makes
the daemon collect; its state is on /healthz and /metrics; its points go through the same analytics
as the nodes' readings (the battery SoC drop and efficiency rules raise alerts on OPC UA assets),
and `gridtwin query` / `gridtwin tail` name them by machine and tag; SIGTERM stops it with the rest.

Real parts: mosquitto with the rendered config, the daemon as a process, the twin served by a real
asyncua server (this process) with the site PKI, encrypted."""

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request

import pytest

pytest.importorskip("asyncua")

from fixtures.broker import free_port, make_site_pki, wait_until  # noqa: E402

pytestmark = pytest.mark.broker

# Dusk at Juelich on a June evening: the inverter's efficiency falls as its output goes to zero,
# and a small battery carries the load panel from 90 % to its floor within an hour of twin time.
SITE = """[site]
id = "mg"

[broker]
port = {broker}

[daemon]
metrics_port = {metrics}

[analytics]
min_duration_s = 0.0

[twin]
step_s = 5.0
start = "2026-06-21T18:40:00Z"
latitude = 50.9
longitude = 6.4

[opcua]
endpoint = "opc.tcp://127.0.0.1:{opcua}/gridtwin"
enterprise = "Acme"

[[opcua.sources]]
endpoint = "opc.tcp://127.0.0.1:{opcua}/gridtwin"

[[twin.components]]
id = "meter1"
kind = "grid_meter"

[[twin.components]]
id = "inv1"
kind = "pv_inverter"
parent = "meter1"
params = {{ cloud_cover = 0.0, cloud_sigma = 0.0 }}

[[twin.components]]
id = "bess1"
kind = "bess"
parent = "meter1"
params = {{ capacity_kwh = 100.0, soc0_pct = 90.0 }}

[[twin.components]]
id = "panel1"
kind = "load_panel"
parent = "meter1"
"""


class ServedTwin:
    """The site's twin on a real asyncua server, on a thread of its own; `step(s)` advances the twin
    by s seconds and publishes its state."""

    def __init__(self, site, pki):
        from gridtwin.opcua.server import TwinServer
        from gridtwin.twin import Twin

        self.twin = Twin.from_site(site, seed=3)
        self.srv = TwinServer(site, self.twin, pki)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self.srv.start())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def step(self, seconds: float) -> dict:
        self.twin.run_until(self.twin.t + seconds)
        self._call(self.srv.publish())
        return self.twin.state()

    def close(self):
        self._call(self.srv.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None, ""


def _gt(site, *args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "gridtwin", "--site", str(site), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def running(broker_factory, tmp_path):
    """A site whose [[opcua.sources]] is its own twin's server, its broker, the served twin and
    `gridtwin daemon` on it."""
    ports = dict(broker=8883, metrics=free_port(), opcua=free_port())
    sp = make_site_pki(tmp_path / "site", SITE.format(**ports))
    brk = broker_factory(sp)
    ports["broker"] = brk.port
    sp.path.write_text(SITE.format(**ports))
    served = ServedTwin(sp.site, sp.pki)
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridtwin", "--site", str(sp.path), "daemon"],
        stdout=log,
        stderr=log,
    )

    def collecting():
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        code, body = _get(ports["metrics"], "/healthz")
        return code == 200 and json.loads(body)["opcua"][0]["connected"]

    try:
        wait_until(collecting, 30, "the daemon to be healthy and its OPC UA source connected")
        yield sp, proc, ports, served, tmp_path / "daemon.log"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        log.close()
        served.close()


def _rows(db, sql, *args):
    with sqlite3.connect(db) as c:
        return c.execute(sql, args).fetchall()


def test_the_daemon_collects_analyses_and_names_opcua_points(running):
    sp, proc, ports, served, log_path = running
    db = sp.dir / "var" / "gridtwin.db"
    # dusk: every publish moves the twin on five minutes; the battery covers what the PV cannot
    socs, effs = [], []
    for _ in range(12):
        st = served.step(300.0)
        socs.append(st["bess1"]["m"]["soc_pct"])
        effs.append(st["inv1"]["m"]["eff_pct"])
    assert socs[0] - socs[-1] > 25 and effs[0] > 90 and effs[-1] < 50  # what the rules must see

    def alerted():
        return {
            (node, metric)
            for node, metric in _rows(db, "SELECT node, metric FROM alerts WHERE kind='rule:drop'")
        }

    # the same rules as a node's readings: soc_drop on the battery, efficiency_drop on the inverter
    wait_until(lambda: {("bess1", "SoC"), ("inv1", "Efficiency")} <= alerted(), 30, "both alerts")
    rules = {
        metric: json.loads(detail)["rule"]
        for metric, detail in _rows(db, "SELECT metric, detail FROM alerts WHERE kind='rule:drop'")
    }
    assert rules["SoC"] == "soc_drop" and rules["Efficiency"] == "efficiency_drop", rules

    # `gridtwin query MACHINE TAG`: the points as readings, every value the twin published
    def soc_rows():
        q = _gt(sp.path, "query", "bess1", "SoC", "--since", "1h", "--json")
        assert q.returncode == 0, q.stderr
        return [json.loads(ln)["value"] for ln in q.stdout.splitlines()]

    wait_until(lambda: soc_rows()[-1] == pytest.approx(socs[-1]), 20, "the last SoC stored")
    # (a subscription reports changes: the floor's repeated 10 % is one point)
    changes = [v for i, v in enumerate(socs) if i == 0 or v != socs[i - 1]]
    assert soc_rows()[-len(changes) :] == pytest.approx(changes, rel=1e-9)
    # stored once each with its ISA-95 path; the daemon's /metrics and /healthz count them
    total, machines = _rows(db, "SELECT count(*), count(DISTINCT machine) FROM opcua_points")[0]
    assert machines == 4 and total > 12 * 4
    code, body = _get(ports["metrics"], "/metrics")
    n = re.search(r'gridtwin_opcua_points_stored_total\{source="0",[^}]*\} (\d+)', body)
    assert code == 200 and n and int(n.group(1)) == total, body
    health = json.loads(_get(ports["metrics"], "/healthz")[1])["opcua"]
    assert health == [
        {"endpoint": sp.site.opcua.sources[0]["endpoint"], "connected": True, "stored": total}
    ]
    # a tag the machine lacks: one line listing its tags
    q = _gt(sp.path, "query", "bess1", "Soc")
    assert q.returncode != 0 and "bess1 has no metric 'Soc'" in q.stderr and "SoC" in q.stderr
    assert "Traceback" not in q.stderr
    # `gridtwin tail MACHINE`: OPC UA points live, as the daemon commits them (the load panel's
    # demand moves at every step; the battery at its floor reports nothing new)
    tail = subprocess.Popen(
        [sys.executable, "-m", "gridtwin", "--site", str(sp.path), "tail", "panel1", "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: tail.poll() is not None or not served.step(5.0),
            30,
            "a tailed OPC UA point",
            interval=0.2,
        )
        out, err = tail.communicate(10)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0 and "panel1" in out and "opcua" in out, (out, err)
    assert "Power_Active=" in out
    # SIGTERM stops the collector with the daemon: exit 0, the log says it collected
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    text = log_path.read_text()
    assert "collecting" in text and "Traceback" not in text
