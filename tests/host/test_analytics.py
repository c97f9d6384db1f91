"""Analytics' core (gridtwin.analytics): the rules fire at their threshold and not just below it and
clear with hysteresis; limits mark each reading's quality; sigma grades by 3/4/5 robust deviations;
kWh integrate power without bridging gaps. Through a real daemon on a real broker: kWh counters and
active alerts survive a restart, a failing or hanging notifier never stops ingest. A bad
[analytics] key is one file/key/fix line."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from gridtwin.analytics.base import Context
from gridtwin.analytics.config import Resolver
from gridtwin.analytics.detectors import LimitDetector, RuleDetector, SigmaDetector
from gridtwin.analytics.engine import Analytics
from gridtwin.analytics.kpi import EnergyKpi
from gridtwin.daemon.alerts import Alerts
from gridtwin.daemon.store_sqlite import SqliteStore
from gridtwin.site import example_site_path, load_site

T0 = 1_780_000_000_000
SITE = load_site(example_site_path())


class _Bus:
    """The daemon bus's publish_host, recorded (what a subscriber to _host/alerts/# would get)."""

    def __init__(self):
        self.sent = []

    def publish_host(self, suffix, payload, retain=True):
        self.sent.append((suffix, payload))
        return True


def _feed(det, node, metric, points):
    """points: [(seconds after T0, value)] -> the findings, in order."""
    out = []
    for s, v in points:
        out += det.observe([(node, metric, T0 + int(s * 1000), v)])
    return out


def _fires(found):
    return [f for f in found if not f.cleared]


# (node, metric, kind, steady, at the threshold, just below it)
DEFAULT_RULES = [
    ("ups_a", "batt_pct", "rule:drop", 100.0, 80.0, 80.1),  # SoC drop of 20 % in 5 min
    ("pdu_a", "load_kw", "rule:ratio", 10.0, 15.0, 14.99),  # a load's 1.5x spike in 1 min
    ("grid1", "mains_w", "rule:ratio", 10.0, 20.0, 19.99),  # 2x power spike in 1 min
    ("EL1", "efficiency", "rule:drop", 70.0, 59.5, 59.6),  # 15 % efficiency drop in 10 min
]


@pytest.mark.parametrize("node,metric,kind,steady,at,below", DEFAULT_RULES)
def test_each_default_rule_fires_at_its_threshold_and_not_just_below(
    node, metric, kind, steady, at, below
):
    res = Resolver(SITE.analytics, SITE)
    (rule,) = res.rules(node, metric)
    det = RuleDetector(Context(site=SITE), res)
    assert _fires(_feed(det, node, metric, [(0, steady), (30, steady), (40, below)])) == []
    found = _fires(_feed(det, node, metric, [(41, at)]))
    assert [(f.kind, f.metric) for f in found] == [(kind, metric)], found
    assert found[0].severity == rule.severity and rule.name in found[0].description


def test_rules_clear_only_past_their_hysteresis():
    res = Resolver(SITE.analytics, SITE)
    det = RuleDetector(Context(site=SITE), res)
    # a load's 1.5x spike: raised at 15 kW over 10, held at 1.46x (the hysteresis is 10 % of the
    # part above 1x), cleared below 1.45x
    found = _feed(det, "pdu_a", "load_kw", [(0, 10.0), (10, 15.0), (11, 14.6)])
    assert [f.cleared for f in found] == [False, False]
    (cleared,) = _feed(det, "pdu_a", "load_kw", [(12, 14.4)])
    assert cleared.cleared and cleared.kind == "rule:ratio"
    # SoC drop: 20 points raise it; back to an 18-point drop holds it, 17.9 clears it
    found = _feed(det, "ups_a", "batt_pct", [(0, 100.0), (60, 80.0), (61, 82.0)])
    assert [f.cleared for f in found] == [False, False]
    assert [f.cleared for f in _feed(det, "ups_a", "batt_pct", [(62, 82.1)])] == [True]
    # nothing fires again until the condition is reached again
    assert _feed(det, "ups_a", "batt_pct", [(63, 81.0)]) == []


def test_voltage_deviation_from_nominal_over_its_window():
    """10 % from the grid monitor's 230 V nominal, averaged over 2 min: 253 V fires, 252.9 V does
    not; it holds at 9.1 % and clears once the window's mean is under 9 %."""
    res = Resolver(SITE.analytics, SITE)
    det = RuleDetector(Context(site=SITE), res)
    assert _fires(_feed(det, "grid1", "mains_v", [(s, 252.9) for s in range(0, 300, 5)])) == []
    det = RuleDetector(Context(site=SITE), res)
    (f,) = _feed(det, "grid1", "mains_v", [(0, 253.0)])
    assert (
        f.kind == "rule:deviation" and not f.cleared and "10.0 % from nominal 230" in f.description
    )
    held = _feed(det, "grid1", "mains_v", [(s, 251.0) for s in range(5, 400, 5)])
    assert held and not any(f.cleared for f in held)  # 9.13 %: inside the hysteresis
    found = _feed(det, "grid1", "mains_v", [(s, 250.6) for s in range(400, 700, 5)])
    assert [f.cleared for f in found][-1] is True and sum(f.cleared for f in found) == 1


def test_a_site_rule_and_limit_come_before_the_defaults(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(
        example_site_path().read_text()
        + """
[analytics]
[[analytics.rules]]
name = "soc_drop"
metric = "batt_pct"
kind = "drop"
window_s = 60
threshold = 5.0
severity = "low"
[[analytics.limits]]
metric = "mains_v"
nodes = ["grid1"]
lo = 220.0
hi = 240.0
"""
    )
    site = load_site(path)
    res = Resolver(site.analytics, site)
    (rule,) = res.rules("ups_a", "batt_pct")
    assert (rule.threshold, rule.window_ms, rule.severity) == (5.0, 60_000, "low")
    lim = res.limit("grid1", "mains_v")
    assert (lim.lo, lim.hi) == (220.0, 240.0)
    assert (
        res.limit("grid1", "t_box").hi == 80.0
    )  # the default still applies where the site says nothing
    assert res.limit("EL1", "t_stack").hi == 88.0  # an electrolyser stack runs at 80 by design


def test_a_bad_analytics_key_names_file_key_and_fix(tmp_path):
    for extra, key, fix in (
        ("[analytics]\nnotfy_command = 'x'\n", "analytics.notfy_command", "notify_command"),
        (
            "[[analytics.rules]]\nmetric = 'batt_pct'\nkind = 'dorp'\n",
            "analytics.rules[0].kind",
            "did you mean 'drop'",
        ),
        (
            "[[analytics.limits]]\nquantity = 'voltage'\nlo = 250.0\nhi = 200.0\n",
            "analytics.limits[0]",
            "make lo < hi",
        ),
        (
            "[[analytics.limits]]\nmetric = 'mains_v'\nnodes = ['grid2']\nhi = 240.0\n",
            "analytics.limits[0].nodes: no node 'grid2'",
            "did you mean 'grid1'",
        ),
    ):
        path = tmp_path / "site.toml"
        path.write_text(example_site_path().read_text() + "\n" + extra)
        r = subprocess.run(
            [sys.executable, "-m", "gridtwin", "--site", str(path), "alerts"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"gridtwin: {path}: {key}") and fix in line, line


def _engine(tmp_path, **section):
    store = SqliteStore(tmp_path / "gt.db")
    bus = _Bus()
    alerts = Alerts(store, bus)
    sec = {"min_duration_s": 0.0, "sigma": False, **section}
    return Analytics(store, alerts, site=SITE, section=sec, plugins=()), store, bus


def test_limits_mark_quality_and_alert_with_hysteresis(tmp_path):
    """The grid monitor's 200-250 V: 250 V is in range (GOOD), 250.5 V is UNCERTAIN and raises the
    limit alert, which holds at 249.5 V (hysteresis 2 % of the span: 1 V) and clears at 249 V; a
    9999 V reading is BAD (physically impossible) with an alert of its own, high."""
    an, store, bus = _engine(tmp_path)
    vals = [230.0, 250.0, 250.5, 249.5, 249.0, 9999.0]
    for k, v in enumerate(vals):
        an.observe([("grid1", "mains_v", T0 + k * 1000, v)])
    q = {ts: quality for _m, ts, _v, quality in store.quality("grid1", "mains_v")}
    assert q == {T0 + 2000: "UNCERTAIN", T0 + 5000: "BAD"}  # every other reading is GOOD
    rows = store.alerts()
    assert [(r["kind"], r["metric"], r["value"], r["active"]) for r in rows] == [
        ("limit", "mains_v", 250.5, 0),
        ("limit:bad", "mains_v", 9999.0, 1),
    ]
    assert rows[1]["severity"] == "high" and rows[0]["cleared"] is not None
    topics = [(s, p if p == b"" else json.loads(json.dumps(p))["kind"]) for s, p in bus.sent]
    assert topics == [
        ("alerts/grid1/limit/mains_v", "limit"),
        ("alerts/grid1/limit/mains_v", b""),
        ("alerts/grid1/limit:bad/mains_v", "limit:bad"),
    ]
    store.close()


def test_a_condition_must_last_min_duration_before_it_alerts(tmp_path):
    an, store, bus = _engine(tmp_path, min_duration_s=10.0)
    for s in range(0, 10):
        an.observe([("grid1", "t_box", T0 + s * 1000, 85.0)])
    assert store.alerts() == []  # 9 s over 80 degC
    an.observe([("grid1", "t_box", T0 + 10_000, 85.0)])
    (row,) = store.alerts()
    assert row["kind"] == "limit" and json.loads(row["detail"])["reading_ts"] == T0 + 10_000
    store.close()


def test_sigma_grades_low_medium_high_after_its_warmup():
    det = SigmaDetector(Context(), warmup=20, halflife=1000)
    warm = [
        10.0 + (1.0 if k % 2 else -1.0) for k in range(20)
    ]  # median 11 (upper), MAD... spread known below
    for name, z in (("a", 3.2), ("b", 4.2), ("c", 5.2), ("d", 2.9)):
        found = _feed(det, "n", name, [(k, v) for k, v in enumerate(warm)])
        assert found == []  # nothing judged during the warm-up
        s = det._s[("n", name)]
        center, spread = s.center, s.spread()
        found = _feed(det, "n", name, [(30, center + z * spread)])
        want = {3.2: ["low"], 4.2: ["medium"], 5.2: ["high"], 2.9: []}[z]
        assert [f.severity for f in found] == want


def test_kwh_integrate_power_and_do_not_bridge_gaps(tmp_path):
    store = SqliteStore(tmp_path / "gt.db")
    kpi = EnergyKpi(Context(site=SITE, store=store), aggregation_s=3600)
    pts = [(s, 10.0) for s in range(0, 3601, 5)]  # 10 kW for an hour: 10 kWh
    pts += [
        (s, 10.0) for s in range(4201, 4201 + 1801, 5)
    ]  # 10 min unmeasured, then half an hour: 5 kWh
    for s, v in pts:
        kpi.observe([("pdu_a", "load_kw", T0 + s * 1000, v)])
    assert kpi.total_kwh["pdu_a"] == pytest.approx(15.0)
    rows = {(n, k): v for _b, n, k, v in store.kpis()}  # the first hour's bucket is written
    assert rows[("pdu_a", "energy_kwh")] > 0 and ("", "consumption_kwh") in rows
    store.close()


def test_electrolyser_efficiency_is_derived_and_its_drop_alerts(tmp_path):
    """EL1's efficiency comes from its hydrogen and its stack power (gridtwin.analytics.derived);
    a 15 % drop of it over 10 min raises the efficiency rule."""
    from types import SimpleNamespace

    an, store, bus = _engine(tmp_path)

    def msg(s, h2):
        m = {"stack_a": 400.0, "u_stack": 40.0, "h2_nlh": h2, "t_stack": 60.0}
        return SimpleNamespace(node="EL1", ts=T0 + s * 1000, m=m)

    an.process([msg(0, 3200.0), msg(10, 3200.0)])
    assert store.alerts() == []
    an.process([msg(20, 2700.0)])  # over 15 % less hydrogen for the same power
    (row,) = store.alerts()
    assert row["kind"] == "rule:drop" and row["metric"] == "efficiency"
    store.close()


# --- through the daemon, on a real broker
# -----------------------------------------------------------


def _daemon(broker, site, db, **section):
    from fixtures.daemon_fleet import endpoint
    from gridtwin.daemon.service import Daemon

    d = Daemon(
        endpoint=endpoint(broker),
        db_path=db,
        known_nodes=site.node_ids,
        metrics_port=None,
        site=site,
    )
    if section:  # this test's [analytics], in place of the site's
        d.on_readings(d.analytics.feed, remove=True)
        d.analytics = Analytics(
            d.store,
            d.alerts,
            site=site,
            metrics=d.metrics,
            section={"sigma": False, **section},
            plugins=(),
        )
        d.on_readings(d.analytics.feed)
    d.start()
    from fixtures.daemon_fleet import wait_for

    wait_for(
        lambda: d.bus.subscribed, 10, "the daemon to subscribe"
    )  # what is sent before is not its
    return d


def _tel(node, seq, ts, **m):
    return json.dumps({"v": 1, "node": node, "boot": 1, "seq": seq, "ts": ts, "m": m}).encode()


def test_kwh_and_active_alerts_survive_a_daemon_restart(broker, site_pki, mqtt_client, tmp_path):
    from fixtures.daemon_fleet import NodeClient, wait_for

    site, db = site_pki.site, tmp_path / "gt.db"
    root = site.topic_root
    watcher = mqtt_client("telegraf")
    watcher.subscribe(f"{root}/_host/alerts/#")
    start = int(time.time() * 1000) - 3_600_000
    pdu, grid = NodeClient(broker, "pdu_a"), NodeClient(broker, "grid1")
    d = _daemon(broker, site, db, min_duration_s=0.0)
    try:
        for k in range(121):  # 12 kW for 10 min, every 5 s: 2 kWh
            pdu.publish(_tel("pdu_a", k, start + k * 5000, load_kw=12.0))
        grid.publish(_tel("grid1", 0, start, mains_v=262.0))
        # what the assertion reads (a wait on `analysed` saw 122 while the KPI detector was still
        # on the last batch: 1.52 kWh, 91 of the 120 intervals, in a CI run)
        wait_for(
            lambda: d.analytics.kpi.total_kwh.get("pdu_a", 0.0) >= 2.0 - 1e-6,
            20,
            "analytics to integrate every interval",
        )
        wait_for(lambda: "grid1/limit/mains_v" in d.alerts.active, 10, "the limit alert")
        alert = json.loads(
            watcher.wait_for(f"{root}/_host/alerts/grid1/limit/mains_v", timeout=10).payload
        )
        assert (alert["node"], alert["metric"], alert["value"], alert["severity"]) == (
            "grid1",
            "mains_v",
            262.0,
            "medium",
        )
        assert d.analytics.kpi.total_kwh["pdu_a"] == pytest.approx(2.0)
    finally:
        d.stop()
    d = _daemon(broker, site, db, min_duration_s=0.0)
    try:
        assert "grid1/limit/mains_v" in d.alerts.active  # still active after the restart
        assert d.analytics.kpi.total_kwh["pdu_a"] == pytest.approx(
            2.0
        )  # the counter goes on from there
        pdu.publish(_tel("pdu_a", 121, start + 121 * 5000, load_kw=12.0))
        grid.publish(
            _tel("grid1", 1, start + 1000, mains_v=230.0)
        )  # back in range: the restored alert clears
        wait_for(lambda: "grid1/limit/mains_v" not in d.alerts.active, 20, "the alert to clear")
        watcher.wait_for(
            f"{root}/_host/alerts/grid1/limit/mains_v", timeout=10, where=lambda m: m.payload == b""
        )
        wait_for(lambda: d.analytics.kpi.total_kwh["pdu_a"] > 2.0, 10, "the next reading's energy")
        assert d.analytics.kpi.total_kwh["pdu_a"] == pytest.approx(2.0 + 12.0 * 5 / 3600)
    finally:
        d.stop()
        pdu.close()
        grid.close()


@pytest.mark.parametrize("command", ["sleep 600", "false"])
def test_a_failing_or_hanging_notifier_never_stops_ingest(broker, site_pki, tmp_path, command):
    """Every reading makes an alert (raised, then cleared): the notifier hangs (`sleep 600`, stopped
    at its time limit) or fails (`false`); ingest stores every message all the same, analytics keeps
    up, and the failures are counted."""
    from fixtures.daemon_fleet import NodeClient, wait_for

    site, db = site_pki.site, tmp_path / "gt.db"
    start = int(time.time() * 1000) - 600_000
    grid = NodeClient(broker, "grid1")
    d = _daemon(broker, site, db, min_duration_s=0.0, notify_command=command, notify_timeout_s=0.5)
    try:
        n = 400
        for k in range(
            n
        ):  # out of range, back in range, ...: alerts raised and cleared, each notified
            grid.publish(_tel("grid1", k, start + k * 1000, mains_v=262.0 if k % 2 == 0 else 230.0))
        wait_for(lambda: d.metrics.stored == n, 20, "ingest to store every message")
        wait_for(lambda: d.analytics.analysed == n, 20, "analytics to analyse every reading")
        # (messages in flight together may be committed in another order: not every pair is an
        # alert)
        assert d.alerts.raised[("limit", "medium")] >= n // 10
        wait_for(
            lambda: d.analytics.notifier.failed >= 1, 20, "the notifier's failure to be counted"
        )
        assert d.analytics.dropped == 0
    finally:
        t = time.monotonic()
        d.stop()
        assert time.monotonic() - t < 15  # a hung notifier does not hold the daemon's stop either
        grid.close()


def _cli(site_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "gridtwin", "--site", str(site_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_alerts_and_kpi_commands_read_the_store(tmp_path):
    from gridtwin.daemon.config import db_path

    path = tmp_path / "site.toml"
    path.write_text(example_site_path().read_text())
    site = load_site(path)
    store = SqliteStore(db_path(site))
    alerts = Alerts(store, _Bus())
    now = int(time.time() * 1000)
    alerts.raise_(
        "grid1/limit/mains_v",
        "medium",
        "limit",
        "grid1 mains_v = 262 is above its limit 250",
        "grid1",
        metric="mains_v",
        value=262.0,
        ts=now - 60_000,
    )
    alerts.raise_(
        "pdu_a/node_stale", "warning", "node_stale", "pdu_a has sent nothing for 9 s", "pdu_a"
    )
    alerts.clear("pdu_a/node_stale")
    store.write_kpis(
        [
            (now - 600_000, "pdu_a", "energy_kwh", 1.5),
            (now - 300_000, "pdu_a", "energy_kwh", 1.0),
            (now - 300_000, "", "pue", 1.4),
        ]
    )
    store.save_state("detector:kpi", {"total_kwh": {"pdu_a": 12.5}})
    store.close()
    r = _cli(path, "alerts", "--active", "--json")
    assert r.returncode == 0, r.stderr
    (doc,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert (doc["key"], doc["node"], doc["metric"], doc["value"], doc["active"]) == (
        "grid1/limit/mains_v",
        "grid1",
        "mains_v",
        262.0,
        True,
    )
    r = _cli(path, "alerts", "--since", "1h")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2 and "cleared" in r.stdout, (
        r.stdout + r.stderr
    )
    r = _cli(path, "kpi", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (
        doc["kpi"]["pdu_a"]["energy_kwh"] == pytest.approx(2.5) and doc["kpi"]["site"]["pue"] == 1.4
    )
    assert doc["total_kwh"] == {"pdu_a": 12.5}
    r = _cli(path, "kpi", "--node", "pdu_b")
    assert r.returncode == 2 and "did you mean 'pdu_a'" in r.stderr


def test_alerts_follow_prints_raised_and_cleared_alerts_until_ctrl_c(tmp_path):
    import signal

    from gridtwin.daemon.config import db_path

    path = tmp_path / "site.toml"
    path.write_text(example_site_path().read_text())
    site = load_site(path)
    store = SqliteStore(db_path(site))
    alerts = Alerts(store, _Bus())
    p = subprocess.Popen(
        [sys.executable, "-m", "gridtwin", "--site", str(path), "alerts", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alerts.raise_(
            "grid1/limit/t_box",
            "medium",
            "limit",
            "grid1 t_box = 85 is above its limit 80",
            "grid1",
            metric="t_box",
            value=85.0,
        )
        raised = json.loads(p.stdout.readline())
        assert (raised["key"], raised["active"]) == ("grid1/limit/t_box", True)
        alerts.clear("grid1/limit/t_box")
        cleared = json.loads(p.stdout.readline())
        assert (cleared["key"], cleared["active"]) == ("grid1/limit/t_box", False) and cleared[
            "cleared"
        ]
    finally:
        p.send_signal(signal.SIGINT)
        try:
            assert p.wait(20) == 0
        finally:
            if p.poll() is None:  # a follower that did not stop is not left behind
                p.kill()
                p.wait()
            store.close()


def test_telegraf_stores_an_analytics_alert_with_its_metric_and_value(site_pki, tmp_path):
    """The alert exactly as the daemon publishes it, through the Starlark processor Telegraf
    runs."""
    from test_stack_telegraf import Script

    site = site_pki.site
    bus = _Bus()
    store = SqliteStore(tmp_path / "gt.db")
    alerts = Alerts(store, bus)  # the payload as the daemon builds it
    alerts.raise_(
        "grid1/limit/mains_v",
        "medium",
        "limit",
        "grid1 mains_v = 262 is above its limit 250",
        "grid1",
        metric="mains_v",
        value=262.0,
        ts=T0,
        source="analytics",
    )
    ((suffix, doc),) = bus.sent
    (p,) = Script(site).points(f"{site.topic_root}/_host/{suffix}", json.loads(json.dumps(doc)))
    assert p["tags"] == {
        "alert": "grid1/limit/mains_v",
        "site": site.id,
        "severity": "medium",
        "kind": "limit",
        "source": "grid1",
        "metric": "mains_v",
    }
    assert (
        p["fields"]["value"] == 262.0
        and p["fields"]["active"] == 1.0
        and p["time"] == T0 * 1_000_000
    )
    store.close()


def test_a_new_twin_clears_the_twin_alerts_a_previous_run_left_active(tmp_path):
    """Active alerts survive a restart, but a twin event's alert belongs to the twin run that raised
    it: node health and analytics alerts stay, the old twin's go."""
    from types import SimpleNamespace

    from gridtwin.twin import Twin
    from gridtwin.twin.coupling import TwinLink

    store = SqliteStore(tmp_path / "gt.db")
    alerts = Alerts(store, _Bus())
    for key, kind in (
        ("util_a/utility_lost", "utility_lost"),
        ("pdu_a/node_stale", "node_stale"),
        ("grid1/limit/mains_v", "limit"),
    ):
        alerts.raise_(key, "medium", kind, key, key.split("/")[0])
    alerts = Alerts(store, _Bus())  # the daemon restarted
    assert set(alerts.active) == {"util_a/utility_lost", "pdu_a/node_stale", "grid1/limit/mains_v"}
    daemon = SimpleNamespace(alerts=alerts, on_readings=lambda fn, remove=False: None)
    TwinLink(Twin.from_site(SITE), daemon, SITE)
    assert set(alerts.active) == {"pdu_a/node_stale", "grid1/limit/mains_v"}
    store.close()


def test_when_analytics_falls_behind_it_drops_counts_and_says_so(tmp_path, caplog):
    """The writer's listener never waits: beyond queue_max readings a batch is dropped, counted on
    /metrics and logged once (a minute), and what was queued is still analysed."""
    from types import SimpleNamespace

    from gridtwin.daemon.metrics import Metrics

    store = SqliteStore(tmp_path / "gt.db")
    metrics = Metrics()
    an = Analytics(
        store,
        Alerts(store, _Bus()),
        site=SITE,
        metrics=metrics,
        plugins=(),
        section={"queue_max": 1000, "min_duration_s": 0.0},
    )  # no worker: nothing drains
    batch = [
        SimpleNamespace(node="grid1", ts=T0 + k, m={"mains_v": 230.0, "t_box": 90.0})
        for k in range(100)
    ]
    for _ in range(12):
        an.feed(batch)
    assert an.dropped == 7 * 200 and an._queued == 1000  # five batches of 200 readings fit
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "analytics is behind" in r.message)
    ) == 1
    an.drain()
    assert an.analysed == 1000 and an._queued == 0
    text = metrics.prometheus()
    assert "gridtwin_analytics_dropped_total 1400" in text
    assert 'gridtwin_alerts_raised_total{kind="limit",severity="medium"} 1' in text
    assert "gridtwin_alerts_active 1" in text
    store.close()


def test_sigma_knows_a_sensors_resolution_and_alerts_from_high(tmp_path):
    """A thermometer that reads 25.0 and now and then 25.125 (an LM75's step) has a MAD of 0: a step
    of its resolution is not a 5-sigma anomaly. Low and medium (3 and 4 sigma) findings are counted,
    not alerted (sigma_alert = "high", the default: at a reading every 10 s plain noise passes 4
    sigma about every other day on each metric, 5 sigma once in 200 days)."""
    det = SigmaDetector(Context(), warmup=20, halflife=1000)
    flat = [(k, 25.125 if k % 10 == 0 else 25.0) for k in range(40)]
    assert _feed(det, "grid1", "t_box", flat + [(40, 25.25)]) == []
    assert [f.severity for f in _feed(det, "grid1", "t_box", [(41, 25.0 + 5.2 * 0.125)])] == [
        "high"
    ]

    an, store, bus = _engine(tmp_path, sigma=True, sigma_warmup=20)
    for k in range(20):
        an.observe([("grid1", "mains_hz", T0 + k * 200, 50.0 + (0.01 if k % 2 else -0.01))])
    s = next(d for d in an.detectors if isinstance(d, SigmaDetector))._s[("grid1", "mains_hz")]
    an.observe([("grid1", "mains_hz", T0 + 5000, s.center + 3.2 * s.spread())])
    an.observe([("grid1", "mains_hz", T0 + 5200, s.center + 4.5 * s.spread())])
    assert an.counts[("sigma", "low")] == 1 and an.counts[("sigma", "medium")] == 1
    assert store.alerts() == []
    an.observe([("grid1", "mains_hz", T0 + 5400, s.center + 5.5 * s.spread())])
    (row,) = store.alerts()
    assert (row["kind"], row["severity"], row["key"]) == ("sigma", "high", "grid1/sigma/mains_hz")
    store.close()


def test_sigma_measures_a_spread_against_the_series_noise_not_its_level():
    """`make bench` section analytics: grid1's 50 Hz frequency varies by a few mHz, but its spread
    had a floor of 0.1 % of its level (50 mHz), so a 0.2 Hz glitch was 4 sigma on mains_hz and 80 on
    f_dev (the same frequency minus 50). A series' spread is its own noise (and its resolution),
    whatever its level: a pressure of 101,325 Pa with 20 Pa of noise, a frequency with 2 mHz."""
    rng = np.random.default_rng(3)
    for metric, level, noise in (("mains_hz", 50.0, 0.002), ("env_p", 101325.0, 20.0)):
        det = SigmaDetector(Context(), warmup=60, halflife=600)
        _feed(
            det, "grid1", metric, [(k, level + noise * rng.standard_normal()) for k in range(200)]
        )
        (f,) = _feed(det, "grid1", metric, [(200, level + 20 * noise)])
        assert f.severity == "high" and f.detail["z"] > 10, f.description


def test_the_webhook_gets_each_alert_as_json_and_a_slow_one_is_cut_off():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gridtwin.analytics.notify import Notifier

    got, release = [], threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            if got[-1].get("key") == "slow":
                release.wait(10)  # a webhook that does not answer in time
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    n = Notifier(url=f"http://127.0.0.1:{srv.server_address[1]}/hook", timeout_s=0.5).start()
    try:
        n({"key": "slow", "severity": "high", "state": "raised"})
        n({"key": "grid1/limit/mains_v", "severity": "medium", "state": "raised", "value": 262.0})
        wait = time.monotonic() + 10
        while (len(got) < 2 or n.failed < 1) and time.monotonic() < wait:
            time.sleep(0.01)
        assert n.failed == 1 and got[1] == {
            "key": "grid1/limit/mains_v",
            "severity": "medium",
            "state": "raised",
            "value": 262.0,
        }
    finally:
        release.set()
        n.stop()
        srv.shutdown()
        srv.server_close()


def test_kpis_go_to_influxdb_through_the_spool_when_the_site_uses_it(tmp_path):
    store = SqliteStore(tmp_path / "gt.db")
    kpi = EnergyKpi(
        Context(site=SITE, store=store), aggregation_s=60, influx_measurement="analytics"
    )
    for s in range(0, 125, 5):
        kpi.observe([("pdu_a", "load_kw", T0 - T0 % 60_000 + s * 1000, 6.0)])
    lines = [line for _id, line in store.spool_peek(100)]
    pdu = [x for x in lines if x.startswith("analytics,node=pdu_a ")][0]  # one a minute
    fields = dict(f.split("=") for f in pdu.split(" ")[1].split(","))
    # the first minute's bucket: 0..55 s measured in it (the 55..60 s stretch ends in the next
    # bucket)
    assert (
        float(fields["energy_kwh"]) == pytest.approx(6.0 * 55 / 3600)
        and float(fields["peak_kw"]) == 6.0
    )
    assert any(x.startswith("analytics,node=_site ") for x in lines)
    store.close()


def test_a_replay_behind_the_live_readings_does_not_break_the_kwh_integration(tmp_path):
    kpi = EnergyKpi(Context(site=SITE), aggregation_s=3600)
    for s in range(0, 601, 5):  # live: 10 kW for 10 min
        kpi.observe([("pdu_a", "load_kw", T0 + s * 1000, 10.0)])
    kpi.observe([("pdu_a", "load_kw", T0 - 60_000, 10.0)])  # an old reading replayed late
    for s in range(605, 1201, 5):  # the live readings go on: 10 more minutes
        kpi.observe([("pdu_a", "load_kw", T0 + s * 1000, 10.0)])
    assert kpi.total_kwh["pdu_a"] == pytest.approx(10.0 * 1200 / 3600)


def test_alerts_stored_before_they_had_a_key_are_closed_once(tmp_path):
    """A database from before #15: its active alerts have no key, so nothing could ever clear them;
    opening it closes them (once), and keyed alerts from then on stay active across restarts."""
    import sqlite3

    db = tmp_path / "gt.db"
    with sqlite3.connect(db) as c:
        c.execute(
            "CREATE TABLE alerts (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, node TEXT, severity "
            "TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, active INTEGER NOT NULL "
            "DEFAULT 1, cleared INTEGER)"
        )
        c.execute(
            "INSERT INTO alerts (ts, node, severity, kind, message) VALUES (1, 'pdu_a', 'warning', "
            "'node_stale', 'old')"
        )
    store = SqliteStore(db)
    assert store.alerts(active=True) == []
    Alerts(store, _Bus()).raise_("pdu_a/node_stale", "warning", "node_stale", "new", "pdu_a")
    store.close()
    store = SqliteStore(db)
    assert [r["message"] for r in store.alerts(active=True)] == ["new"]
    store.close()


def test_a_rule_that_holds_across_a_restart_is_judged_on_its_saved_window():
    res = Resolver(SITE.analytics, SITE)
    det = RuleDetector(Context(site=SITE), res)
    assert _fires(_feed(det, "ups_a", "batt_pct", [(0, 100.0), (60, 75.0)]))
    saved = json.loads(json.dumps(det.state()))  # as the store keeps it
    det = RuleDetector(Context(site=SITE), res)
    det.restore(saved)
    held = _feed(det, "ups_a", "batt_pct", [(70, 76.0)])  # still 24 below the window's 100: holds
    assert [f.cleared for f in held] == [False]
    (cleared,) = _feed(det, "ups_a", "batt_pct", [(400, 76.0)])  # the 100 has left the 5-min window
    assert cleared.cleared


def test_rules_and_limits_the_bench_measured_wrong_are_fixed():
    """`make bench` section analytics (seed 1): 52 of 54 rule alerts were an electrolyser's stack
    power doubling under a passing cloud (it follows its PV array: no spike rule on it now); a
    server's thermometer the catalog does not list (a twin-fed t_c, an OPC UA point) had no limit at
    all (its quantity now comes from its name)."""
    res = Resolver(SITE.analytics, SITE)
    assert [r.name for r in res.rules("EL1", "stack_w")] == []
    assert res.quantity("srv_a", "t_c") == "temperature"
    lim = res.limit("srv_a", "t_c")
    assert lim is not None and lim.hi == 80.0
    det = LimitDetector(Context(site=SITE), res)
    found = _feed(det, "srv_a", "t_c", [(0, 79.0), (10, 81.0)])
    assert [(f.kind, f.quality) for f in found] == [("limit", "UNCERTAIN")]
    assert res.quantity("bess1", "soc_pct") == "battery" and res.quantity("x", "e_kwh") == ""


def test_an_idling_stacks_efficiency_is_not_derived():
    """At sunset the plant idles its stacks at a few A (the twin: ~20 A on 0.25 m2 cells); there the
    Faraday efficiency, hence the derived efficiency, collapses (~20 %) and the 15 % efficiency-drop
    rule fired every evening on the bench. Below 0.05 A/cm2 no efficiency is derived; above it
    is."""
    from gridtwin.analytics.derived import derivers

    derive = derivers(SITE)["EL1"]
    day = {"stack_a": 500.0, "u_stack": 36.0, "h2_nlh": 4000.0}
    dusk = {"stack_a": 20.0, "u_stack": 29.0, "h2_nlh": 60.0}
    assert 70 < derive(day)["efficiency"] < 95
    assert "efficiency" not in derive(dusk) and derive(dusk)["p_stack_w"] == 580.0


@pytest.mark.parametrize("phase_s", range(0, 80, 10))
def test_a_drop_spread_over_exactly_the_rules_window_is_seen_whole(phase_s):
    """`make bench` section analytics: an electrolyser's efficiency loss ramps over 10 min, the
    efficiency rule's window; the window's 8 buckets reached back only 525..600 s, so the rule saw
    as little as 7/8 of the drop (14.6 % of a 16.7 % loss). A 16 % drop over exactly 600 s, whatever
    the buckets' phase, fires."""
    res = Resolver(SITE.analytics, SITE)
    det = RuleDetector(Context(site=SITE), res)
    steady = [(s, 70.0) for s in range(phase_s, phase_s + 300, 10)]
    t0 = phase_s + 300
    ramp = [(t0 + s, 70.0 * (1 - 0.16 * s / 600)) for s in range(10, 610, 10)]
    found = _fires(_feed(det, "EL1", "efficiency", steady + ramp))
    assert found and found[0].kind == "rule:drop", found
