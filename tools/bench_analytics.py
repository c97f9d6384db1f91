"""`make bench` section "analytics" (issue #15): how good each detector is, against faults the twin
injects.

A seeded multi-day run of the example site's twin (1 s steps, faster than real time), every node
sampled every 10 s as its firmware would read it (gridtwin.twin.sensorfeed.readings, plus 0.2 %
sensor noise of a generator of its own), with faults injected (gridtwin.twin.faults): the first day
clean (the models' training), then each day one fault of each kind at a random time on a random node
it applies to, and a server's slow temperature rise over 14 h (the maintenance case). Each batch
goes the way ingest's goes after a commit, in-process: written to a real SQLite store (the
daemon's), then through the daemon's analytics engine (gridtwin.analytics.engine.Analytics: every
detector, the alert model with its minimum duration) - the MQTT hop is left out, its cost is the
ingest section's.

Per detector (the kind of alert it raises): precision (its alerts that overlap an injected fault on
the fault's node or, for a fault in the power flow, a node upstream), recall (faults it alerted on),
F1, mean detection delay and false alerts per node-day. Then the predicted-crossing error of the
maintenance forecast on noisy linear ramps, and readings/s analysed with the CPU it took.

Held out: the parameters were tuned on seed 1 (seed 3 the second development seed, for the misses of
#15's second round); the figures are for --analytics-seed (default 2).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "host/gridtwin/examples/site.toml"
SAMPLE_S = 10.0
STEP_S = 1.0
DAY = 86400.0
TUNED_ON = 1
DEV_SEEDS = (TUNED_ON, 3)  # what the detectors were developed on: not fair figures
# sim time 0 is 10:00 UTC (the example's [twin] start): the plant runs from ~ -6 h to +9 h of each
# day
DAYLIGHT = (0.0, 6 * 3600.0)
# the short faults, each test day: (kind, components, args, duration s, daylight only, effects after
# the end s)
MENU = [
    ("soc_collapse", ["ups_a"], {"drop_pct": 40, "ramp_s": 300}, 1800, False, 3 * 3600),
    ("load_spike", ["srv_a"], {"factor": 1.6}, 1800, False, 600),
    ("efficiency_loss", ["EL1", "EL2"], {"factor": 3, "ramp_s": 600}, 3600, True, 600),
    ("voltage_sag", ["pv1"], {"depth": 0.15}, 1200, True, 600),
    ("stuck_sensor", ["pv1"], {"metric": "ghi_wm2"}, 1800, True, 600),
    ("spike_sensor", ["srv_a"], {"amplitude": 1.0, "rate": 0.05}, 1800, False, 600),
    # a glitching frequency sensor: 0.2 Hz spikes on 5 % of grid1's readings (sigma's case)
    (
        "spike_sensor",
        ["grid1"],
        {"metric": "f_hz", "amplitude": 0.004, "rate": 0.05},
        1800,
        False,
        600,
    ),
]
# a server's thermometer climbing 1.2 degC/h from 45 degC for 36 h: it crosses 85 degC after 33.3 h
SLOW_RISE = (
    "temp_rise",
    "srv_a",
    {"metric": "t_c", "rate_c_per_h": 1.2, "base_c": 45.0},
    36 * 3600,
)


class _Bus:
    """The daemon bus's publish_host, for the alerts' retained messages: nobody subscribes here."""

    def publish_host(self, suffix, payload, retain=True):
        pass


def plan_faults(rng, days: int) -> list:
    """[(Fault, after_s)]: day 0 clean, then every kind once a day; one slow server temperature
    rise."""
    from gridtwin.twin.faults import Fault

    out = []
    for day in range(1, days):
        busy: dict[str, list] = {}
        for kind, comps, args, dur, daylight, after in MENU:
            for _ in range(100):
                comp = comps[int(rng.integers(len(comps)))]
                lo, hi = DAYLIGHT if daylight else (0.0, DAY - dur - after)
                start = day * DAY + float(rng.uniform(lo, max(lo, hi - dur)))
                end = start + dur
                if all(end + after < s or start > e + a for s, e, a in busy.get(comp, [])):
                    busy.setdefault(comp, []).append((start, end, after))
                    out.append((Fault(kind, comp, start, end, dict(args)), after))
                    break
    kind, comp, args, dur = SLOW_RISE
    start = 1 * DAY + 2 * 3600.0
    out.append((Fault(kind, comp, start, start + dur, dict(args)), 600))
    return out


def simulate(site, seed: int, days: int, on_batch) -> tuple[list, float]:
    """Run the twin `days` days; hand each sample's batch (Telemetry-like rows) to on_batch. Returns
    the fault labels (with their 'after_s' and 'affected' nodes) and the CPU seconds the twin
    took."""
    from gridtwin import nodeconfig
    from gridtwin.twin import Twin
    from gridtwin.twin.sensorfeed import readings

    twin = Twin.from_site(site, seed=seed)
    twin.dt = STEP_S
    rng = np.random.default_rng([seed, 0xBE4C])
    noise = np.random.default_rng([seed, 0x5E45])
    planned = plan_faults(rng, days)
    labels = []
    for f, after in planned:
        lb = twin.inject(f)
        lb["after_s"] = after
        lb["affected"] = sorted(_affected(twin, f))
        labels.append(lb)
    # node -> a metric a fault adds that the twin does not model, so no sensor of the site reads it
    # (a server's thermometer: gridtwin.twin.faults temp_rise); every other fault changes what the
    # node's own sensors read
    extra = {}
    for lb in labels:
        if lb["kind"] == "temp_rise":
            extra.setdefault(lb["node"], set()).add(lb["metric"])
    nodes = [(n, site.node(n)) for n in site.node_ids]
    # each node's firmware config: what its role derives depends on it (an electrolyser's h2_nlh
    # needs the stack's cells and Faraday parameters), as in the demo (gridtwin.twin.coupling)
    cfgs = {n: nodeconfig.render(site, n) for n in site.node_ids}
    parents = {n: list(twin.topo.by_id[n].parents) for n in site.node_ids}
    t0_ms = int(twin.topo.start_datetime().timestamp() * 1000)
    watch = _effects(site, labels)
    seq = 0
    twin_cpu = 0.0
    next_sample = 0.0
    while twin.t < days * DAY - 1e-9:
        c0 = time.process_time()
        twin.step()
        if twin.t + 1e-9 < next_sample:
            twin_cpu += time.process_time() - c0
            continue
        next_sample += SAMPLE_S
        state = twin.state()
        ts = t0_ms + int(round(twin.t * 1000))
        batch = []
        for nid, node in nodes:
            m = readings(node.role, node, state, parents[nid], cfgs[nid])
            for k in extra.get(nid, ()):
                if k not in m and k in state[nid]["m"]:
                    m[k] = state[nid]["m"][k]
            if nid in watch:  # the truth, before the sensors' noise
                watch[nid](twin.t, m)
            m = {k: _noisy(k, float(v), noise) for k, v in m.items() if isinstance(v, (int, float))}
            batch.append(SimpleNamespace(node=nid, boot="b1", seq=seq, ts=ts, hist=False, m=m))
        seq += 1
        twin_cpu += time.process_time() - c0
        on_batch(batch, twin.t)
    return labels, twin_cpu


def _rule(name: str) -> dict:
    from gridtwin.analytics.config import DEFAULT_RULES

    return next(r for r in DEFAULT_RULES if r["name"] == name)


def _effects(site, labels: list) -> dict:
    """node -> fn(t, true metrics): records what an efficiency loss truly did, in the rule's terms
    (the largest drop of the stack's derived efficiency within the efficiency rule's window, before
    the sensors' noise), into its label's "effect_pct". A 3x ohmic resistance costs 13-17 % of the
    efficiency depending on the stack's current: one that costs less than the rule's 15 % is not
    the rule's to see (score() leaves it out of the rules' recall, and says so)."""
    from gridtwin.analytics.derived import derivers

    rule = _rule("efficiency_drop")
    win = rule["window_s"]
    der = derivers(site)
    out = {}
    for lb in labels:
        if lb["kind"] != "efficiency_loss" or lb["node"] not in der:
            continue
        pts: list = []
        lb["effect_pct"] = 0.0

        def fn(t, m, lb=lb, pts=pts, derive=der[lb["node"]], prev=out.get(lb["node"])):
            if prev is not None:
                prev(t, m)
            if not lb["start_s"] - win <= t <= lb["end_s"]:
                return
            e = derive({k: float(v) for k, v in m.items() if isinstance(v, (int, float))})
            e = e.get("efficiency")
            if e is None:
                return
            hi = max((v for ts, v in pts if t - win <= ts < t), default=None)
            if hi and t >= lb["start_s"]:
                lb["effect_pct"] = max(lb["effect_pct"], (hi - e) * 100.0 / hi)
            pts.append((t, e))
            while pts and pts[0][0] < t - win:
                pts.pop(0)

        out[lb["node"]] = fn
    return out


def _noisy(metric: str, v: float, noise) -> float:
    """A sensor's reading: 0.2 % noise, but a state (0/1, a count) stays exact and a percentage in
    0..100; a frequency 1 mHz (a zero-crossing counter, not an analog front end: 0.2 % of 50 Hz
    would be 0.1 Hz, ten times the grid's own variation)."""
    if v.is_integer():
        return v
    if metric.endswith("_hz"):
        return v + 0.001 * noise.standard_normal()
    v *= 1.0 + 0.002 * noise.standard_normal()
    return min(100.0, max(0.0, v)) if metric.endswith("pct") else v


def _affected(twin, f) -> set:
    """The fault's node, and for a fault in the power flow every node upstream of it (they carry
    it)."""
    by = twin.topo.by_id
    out = {by[f.component].node or f.component}
    if f.kind in ("load_spike", "soc_collapse"):
        todo = list(by[f.component].parents)
        while todo:
            c = by[todo.pop()]
            if c.node:
                out.add(c.node)
            todo.extend(c.parents)
    return out


def evaluate(seed: int, days: int, work: Path) -> dict:
    from gridtwin.analytics.engine import Analytics
    from gridtwin.daemon.alerts import Alerts
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.site import load_site

    import logging

    logging.getLogger("gridtwin.analytics").setLevel(
        logging.ERROR
    )  # each alert's warning line: thousands
    shutil.copy(
        EXAMPLE, work / "site.toml"
    )  # the site's var/ (the models' file) in the bench's folder
    site = load_site(work / "site.toml")
    path = db_path(site)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(path)
    alerts = Alerts(store, _Bus())
    latest = [0]
    engine = Analytics(store, alerts, site=site, clock=lambda: latest[0])
    det_cpu: dict[str, float] = {}
    for det in engine.detectors:
        if getattr(det, "name", "") == "iforest":
            # trained on this thread between batches: the same run every time
            det.background = False
        _time(det, "observe", det_cpu)
        if hasattr(det, "tick"):
            _time(det, "tick", det_cpu)
    raised: list[dict] = []
    open_: dict[str, dict] = {}

    def listen(doc):
        if doc["state"] == "raised" and doc.get("source") == "analytics":
            detail = doc.get("detail") or {}
            # the reading's time (the alert's own ts is the host's clock when it was raised)
            a = {
                "key": doc["key"],
                "kind": doc["kind"],
                "node": doc["node"],
                "raised": detail.get("reading_ts", doc["ts"]),
                "cleared": None,
                "detail": detail,
            }
            raised.append(a)
            open_[doc["key"]] = a
        elif doc["state"] == "cleared" and doc["key"] in open_:
            open_.pop(doc["key"])["cleared"] = (
                engine._latest_ts
            )  # reading time (the store stamps wall time)

    alerts.listeners.append(listen)
    cpu = {"analytics": 0.0, "store": 0.0}
    counts = {"readings": 0}
    next_tick = [0.0]

    def on_batch(batch, t):
        c0 = time.process_time()
        store.write_batch(batch)
        c1 = time.process_time()
        engine.process(batch)
        latest[0] = batch[0].ts
        if t >= next_tick[0]:
            next_tick[0] = t + 60.0
            engine.tick(latest[0])
        c2 = time.process_time()
        cpu["store"] += c1 - c0
        cpu["analytics"] += c2 - c1
        counts["readings"] += sum(len(b.m) for b in batch)

    labels, twin_cpu = simulate(site, seed, days, on_batch)
    store.close()
    return {
        "labels": labels,
        "alerts": raised,
        "cpu": cpu,
        "det_cpu": det_cpu,
        "twin_cpu": twin_cpu,
        "readings": counts["readings"],
        "nodes": len(site.node_ids),
        "days": days,
        "analysed": engine.analysed,
    }


def _time(det, method: str, acc: dict) -> None:
    """Count the CPU each detector takes (its observe and its tick: the iforest trains in tick
    here)."""
    fn = getattr(det, method)
    name = getattr(det, "name", type(det).__name__) + (" tick" if method == "tick" else "")

    def timed(*a):
        c0 = time.process_time()
        try:
            return fn(*a)
        finally:
            acc[name] = acc.get(name, 0.0) + time.process_time() - c0

    setattr(det, method, timed)


def family(kind: str) -> str:
    if kind.startswith("rule") or kind in (
        "soc_drop",
        "power_spike",
        "efficiency_drop",
        "voltage_deviation",
    ):
        return "rule"
    return "limit" if kind.startswith("limit") else kind


# The faults each family is built to see on this site: its recall is over these (an efficiency loss
# that truly cost less than the efficiency rule's 15 % is not the rules': _effects) (the catches of
# every kind are listed all the same). The four rate rules: a SoC collapse, a load spike, an
# efficiency loss (a sag of pv1's array voltage is none of theirs: the voltage rule is a deviation
# from a nominal, which only a grid monitor has, and the twin gives grid1 no voltage; pv1's MPPT
# voltage moves +-10 % with the clouds). A limit and the maintenance forecast: the server's slow
# temperature rise. Sigma watches sensor and grid-monitor nodes (sigma_roles): grid1's glitching
# frequency sensor. The IsolationForest: every kind.
SCOPE = {
    "rule": {"soc_collapse", "load_spike", "efficiency_loss"},
    "limit": {"temp_rise"},
    "maintenance": {"temp_rise"},
    "sigma": {"spike_sensor grid1"},
}


def _what(lb: dict) -> str:
    return f"{lb['kind']} {lb['node']}"


def _in(what: str, scope) -> bool:
    """A fault ("kind node") is in a family's scope: its kind, or its kind on that node, is."""
    return what in scope or what.split()[0] in scope


def score(res: dict, warmup_days: int = 1) -> dict:
    """Per detector family: precision, recall, F1, mean delay (s), false alerts per node-day."""
    labels, alerts = res["labels"], res["alerts"]
    # alerts of the clean training day are not scored
    t_test = labels[0]["start_ms"] - (labels[0]["start_s"] - warmup_days * DAY) * 1000
    test_days = res["days"] - warmup_days
    out = {}
    kinds = {_what(lb) for lb in labels}
    for fam in sorted(
        {family(a["kind"]) for a in alerts} | {"iforest", "maintenance", "rule", "limit"}
    ):
        scope = SCOPE.get(fam, {k.split()[0] for k in kinds})
        mine = [a for a in alerts if family(a["kind"]) == fam and a["raised"] >= t_test]
        tp = 0
        for a in mine:
            if any(
                a["node"] in lb["affected"]
                and lb["start_ms"] <= a["raised"] <= lb["end_ms"] + lb["after_s"] * 1000
                for lb in labels
            ):
                tp += 1
        fp = len(mine) - tp
        delays, by_kind = [], {}
        for lb in labels:
            hit = [
                a["raised"]
                for a in mine
                if a["node"] in lb["affected"]
                and lb["start_ms"] <= a["raised"] <= lb["end_ms"] + lb["after_s"] * 1000
            ]
            what = _what(lb)
            if (
                fam == "rule"
                and lb.get("effect_pct", math.inf) < _rule("efficiency_drop")["threshold"]
            ):
                # the loss truly cost less than the rule's threshold: not the rule's to see
                what = f"{lb['kind']}<{_rule('efficiency_drop')['threshold']:g}% {lb['node']}"
            by_kind.setdefault(what, []).append(bool(hit))
            if hit and _in(what, scope):
                delays.append((min(hit) - lb["start_ms"]) / 1000)
        scoped = [v for k, hits in by_kind.items() if _in(k, scope) for v in hits]
        precision = tp / len(mine) if mine else float("nan")
        recall = sum(scoped) / len(scoped) if scoped else float("nan")
        f1 = (
            2 * precision * recall / (precision + recall)
            if mine and scoped and precision + recall
            else float("nan")
        )
        false_on: dict[str, int] = {}
        for a in mine:
            if not any(
                a["node"] in lb["affected"]
                and lb["start_ms"] <= a["raised"] <= lb["end_ms"] + lb["after_s"] * 1000
                for lb in labels
            ):
                false_on[a["node"]] = false_on.get(a["node"], 0) + 1
        out[fam] = {
            "alerts": len(mine),
            "tp": tp,
            "fp": fp,
            "false_on": false_on,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "delay_s": float(np.mean(delays)) if delays else float("nan"),
            "fp_per_node_day": fp / (res["nodes"] * test_days),
            "by_kind": by_kind,
            "scope": sorted(scope),
        }
    return out


def crossing_errors(seeds=range(20), noise_c=1.0) -> list[float]:
    """Relative error of the predicted time to 85 degC on noisy linear ramps: 12 h of history at 1
    reading a minute, 0.5..1.8 degC/h from 50..60 degC, +-noise_c, a few spikes; through the
    detector's buckets."""
    from gridtwin.analytics.base import Context
    from gridtwin.analytics.maintenance import MaintenanceDetector

    errs = []
    for seed in seeds:
        rng = np.random.default_rng([seed, 0xC055])
        rate, start = (
            float(rng.uniform(0.5, 1.8)),
            float(rng.uniform(50, 60)),
        )  # below 85 degC after 12 h
        t0 = 1_780_000_000_000
        ts = t0 + np.arange(0, 12 * 3600, 60) * 1000
        y = start + rate * (ts - t0) / 3.6e6 + rng.normal(0, noise_c, len(ts))
        y[rng.choice(len(y), 5, replace=False)] += 30.0
        det = MaintenanceDetector(Context(), horizon_s=86400)
        det.observe([("srv", "t_c", int(t), float(v)) for t, v in zip(ts, y)])
        fc = det.forecasts()[0]
        now = fc.now_ms
        true_left = (85.0 - (start + rate * (now - t0) / 3.6e6)) / rate
        if fc.hours_left is not None and true_left > 0:
            errs.append((fc.hours_left - true_left) / true_left)
        else:
            errs.append(float("inf"))
    return errs


def run(args) -> list:
    seed = getattr(args, "analytics_seed", 2)
    days = getattr(args, "analytics_days", 3)
    # the cost rows first, while nothing else of the bench runs on the two cores
    cost = ingest_on_off() if getattr(args, "analytics_ingest", True) else []
    cost += forest_fleet()
    work = Path(tempfile.mkdtemp(prefix="gridtwin-bench-analytics-"))
    try:
        w0 = time.monotonic()
        res = evaluate(seed, days, work)
        res["wall"] = time.monotonic() - w0
        res["seed"] = seed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save = getattr(args, "analytics_save", None)
    if save:
        Path(save).write_text(json.dumps(res))
    return report(res) + cost


def report(res: dict) -> list:
    seed, days, wall = res["seed"], res["days"], res["wall"]
    figures = []
    held = "held out" if seed not in DEV_SEEDS else "A DEVELOPMENT SEED: not a fair figure"
    n_faults = len(res["labels"])
    figures.append(
        (
            "twin run",
            f"{days} days, seed {seed}",
            f"{held}; {res['nodes']} nodes every {SAMPLE_S:g} s, {n_faults} faults injected after "
            f"a clean day; {days * DAY / wall:,.0f}x real time ({wall:.0f} s wall, twin "
            f"{res['twin_cpu']:.0f} s CPU)",
        )
    )
    for fam, s in score(res).items():
        # its own kinds (the recall's) first, marked *
        order = sorted(s["by_kind"].items(), key=lambda kv: (not _in(kv[0], s["scope"]), kv[0]))
        kinds = ", ".join(
            f"{k}{'*' if _in(k, s['scope']) else ''} {sum(v)}/{len(v)}" for k, v in order
        )
        false_on = ", ".join(
            f"{n} {c}" for n, c in sorted(s["false_on"].items(), key=lambda x: -x[1])[:4]
        )
        figures.append(
            (
                f"{fam}: precision / recall / F1",
                f"{s['precision']:.2f} / {s['recall']:.2f} / {s['f1']:.2f}",
                f"{s['alerts']} alerts ({s['fp']} false, {s['fp_per_node_day']:.2f} per node-day"
                f"{': ' + false_on if false_on else ''}), mean delay {s['delay_s']:.0f} s; "
                f"caught: {kinds}",
            )
        )
    losses = [lb for lb in res["labels"] if "effect_pct" in lb]
    if losses:
        figures.append(
            (
                "efficiency losses, their true effect",
                f"{len(losses)} injected",
                "the largest drop of the stack's efficiency within the rule's 10 min, before the "
                "sensors' noise: "
                + ", ".join(f"{lb['node']} {lb['effect_pct']:.1f} %" for lb in losses)
                + f" (the rule: {_rule('efficiency_drop')['threshold']:g} %)",
            )
        )
    errs = crossing_errors()
    a = np.abs(np.array(errs))
    figures.append(
        (
            "maintenance: predicted crossing error",
            f"{100 * np.median(a):.1f} % median",
            f"max {100 * a.max():.1f} %, {np.mean(a <= 0.10) * 100:.0f} % of 20 ramps within ±10 % "
            "(0.5-1.8 degC/h, ±1 degC noise, 5 spikes, 12 h history)",
        )
    )
    slow = twin_crossing(res)
    if slow:
        figures.append(("maintenance: the twin's slow rise", slow[0], slow[1]))
    cpu = res["cpu"]["analytics"]
    train = res["det_cpu"].get("iforest tick", res["det_cpu"].get("iforest training", 0.0))
    figures.append(
        (
            "readings analysed, the analytics worker",
            f"{res['readings'] / (cpu - train):,.0f} /s of CPU",
            "every detector and the alerts, without the IsolationForest's training (the daemon "
            "runs it on a thread of its own)",
        )
    )
    per = ", ".join(
        f"{n} {c:.1f} s" for n, c in sorted(res["det_cpu"].items(), key=lambda x: -x[1])
    )
    figures.append(
        (
            "readings analysed",
            f"{res['readings'] / cpu:,.0f} /s of CPU",
            f"{res['readings']:,} readings, analytics {cpu:.1f} s CPU (all detectors and alerts; "
            f"{per}), store {res['cpu']['store']:.1f} s",
        )
    )
    if "iforest" in res["det_cpu"]:
        rate = res["readings"] / res["det_cpu"]["iforest"]
        train = res["det_cpu"].get(
            "iforest tick", res["det_cpu"].get("iforest training", 0.0)
        )  # it trains in tick
        figures.append(
            (
                "readings scored, IsolationForest alone",
                f"{rate:,.0f} /s of CPU",
                "its training (every node hourly on its stored last 24 h; the daemon's worker "
                f"thread) {train:.0f} s CPU in all, "
                f"{train / max(1, res['nodes'] * res['days'] * 24):.2f} s a node-hour",
            )
        )
    return figures


# --- ingest with analytics on and off; the models of 1,000 nodes
# -----------------------------------

# each bench node: a grid monitor with an ADE7953, an LM75 and a BME280: 10 metrics a message
FLEET_SENSORS = (
    '{ id = "mains", type = "ade7953", v_div = 1001.0, i_ohm = 0.0025 }, '
    '{ id = "t_box", type = "lm75", addr = 0x48 }, { id = "env", type = "bme280", addr = 0x76 }'
)
DAEMON = """
import json, sys
from pathlib import Path
from gridtwin.daemon.connection import Endpoint
from gridtwin.daemon.logsetup import setup_logging
from gridtwin.daemon.service import Daemon
from gridtwin.site import load_site
a = json.loads(sys.argv[1])
setup_logging(False, "json")
site = load_site(a["site"])
ep = Endpoint("127.0.0.1", a["port"], Path(a["ca"]), Path(a["cert"]), Path(a["key"]), a["root"])
d = Daemon(
    endpoint=ep, db_path=a["db"], known_nodes=site.node_ids, metrics_port=a["mport"], site=site
)
sys.exit(d.run_forever())
"""


def fleet_metrics(rng, n: int) -> list[dict]:
    """n messages' metrics of a healthy grid monitor (noise around its usual values)."""
    v = 230.0 + rng.normal(0, 1.0, n)
    a = 5.0 + rng.normal(0, 0.2, n)
    hz = 50.0 + rng.normal(0, 0.01, n)
    return [
        {
            "mains_v": round(float(v[i]), 2),
            "mains_a": round(float(a[i]), 3),
            "mains_w": round(float(v[i] * a[i] * 0.95), 1),
            "mains_pf": 0.95,
            "mains_hz": round(float(hz[i]), 3),
            "f_dev": round(float(hz[i] - 50.0), 3),
            "t_box": round(float(30 + rng.normal(0, 0.2)), 2),
            "env_t": round(float(24 + rng.normal(0, 0.2)), 2),
            "env_rh": round(float(45 + rng.normal(0, 1)), 1),
            "env_p": round(float(101325 + rng.normal(0, 20)), 0),
        }
        for i in range(n)
    ]


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def ingest_on_off(per_node: int = 120, n_nodes: int = 1000, on_extra: str = "", rounds: int = 5):
    """Durable ingest of the same backlog (1,000 nodes x 10 metrics) by the site's daemon with
    [analytics] off and on, `rounds` times each in the order off on, on off, off on, ... (a drift
    of the machine's load falls on both alike): msg/s, the daemon's CPU, its RSS, the analytics
    process's CPU, and how long analytics took to finish what ingest had stored (it never holds
    ingest up: it queues, and drops when full). One run drains a backlog in a few seconds, so one
    pair is noise: the row is the median of the pairs' ratios, with their spread."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from bench import (
        BenchSite,
        RawPublisher,
        free_port,
        rss_mb,
        scrape,
        stop,
        stored,
        telemetry,
        wait_until,
    )

    work = Path(tempfile.mkdtemp(prefix="gridtwin-bench-analytics-ingest-"))
    bs = BenchSite(n_nodes, work)
    rng = np.random.default_rng(15)
    runs: list = []  # (enabled, figures), in the order run
    order = [(False, True) if i % 2 == 0 else (True, False) for i in range(rounds)]
    proc = None
    try:
        base = (
            (work / "site.toml")
            .read_text()
            .replace('role = "sensor"\n', f'role = "grid_monitor"\nsensors = [{FLEET_SENSORS}]\n')
        )
        for run, enabled in enumerate(e for pair in order for e in pair):
            name = f"{'on' if enabled else 'off'}-{run}"
            extra = on_extra if enabled else ""  # more [analytics] keys for the "on" runs
            (work / "site.toml").write_text(
                base + f"[analytics]\nenabled = {str(enabled).lower()}\n{extra}"
            )
            mport = free_port()
            args = {
                "site": str(work / "site.toml"),
                "port": bs.port,
                "root": bs.root,
                "ca": str(bs.pki.ca_cert_path),
                "cert": str(bs.pki.cert_path("gridtwin-host")),
                "key": str(bs.pki.key_path("gridtwin-host")),
                "db": str(work / f"db-{name}" / "gridtwin.db"),  # a fresh store each run
                "mport": mport,
            }
            Path(args["db"]).parent.mkdir()
            env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
            cmd = [sys.executable, "-c", DAEMON, json.dumps(args)]
            log = open(work / "daemon.log", "ab")
            if run == 0:  # its persistent session first: the broker then queues the backlog for it
                proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
                wait_until(lambda: _up(mport), 60, "the daemon to subscribe")
                stop(proc)
            pub = RawPublisher(bs.dev_port, f"bench-analytics-{run}")
            now = int(time.time() * 1000)
            for seq in range(per_node):
                ms = fleet_metrics(rng, n_nodes)
                pub.send(
                    [
                        telemetry(bs.root, n, run + 1, seq, now - 600_000 + seq * 1000, **ms[i])
                        for i, n in enumerate(bs.node_ids)
                    ]
                )
            pub.drain()
            pub.close()
            total = per_node * n_nodes
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
            (t0, c0, k0), (t1, c1, k1) = _storing(proc, mport, total, stored)
            dt = t1 - t0
            r = {"rate": total / dt, "cpu": (c1 - c0) / dt, "total": total}
            if enabled:
                r.update(child_start=k0, child_cpu=(k1 - k0) / dt)
                readings = total * 10

                def done():
                    m = scrape(mport)
                    seen = m.get("gridtwin_analytics_readings_total", 0)
                    return seen + m.get("gridtwin_analytics_dropped_total", 0) >= readings

                wait_until(done, 900, "analytics to finish the backlog", interval=0.1)
                m = scrape(mport)
                r.update(
                    lag=time.monotonic() - t0 - dt,
                    analysed=m.get("gridtwin_analytics_readings_total", 0),
                    replayed=m.get("gridtwin_analytics_replayed_total", 0),
                    dropped=m.get("gridtwin_analytics_dropped_total", 0),
                    cpu_all=_cpu_s(proc.pid) - c0,
                )
            r["rss"] = rss_mb(proc.pid)
            # analytics runs in a child of the daemon (gridtwin.analytics.process): its memory
            # counts too (and any other child the daemon has)
            r["rss_child"] = sum(rss_mb(c) for c in _children(proc.pid))
            r["own_child"] = sum(_proc_private_mb(c) for c in _children(proc.pid))
            r["n_child"] = len(_children(proc.pid))
            stop(proc)
            proc = None
            runs.append((enabled, r))
            print(f"    ingest {name}: {json.dumps(r)}", file=sys.stderr, flush=True)
    finally:
        if proc is not None:
            stop(proc)
        bs.stop()
        shutil.rmtree(work, ignore_errors=True)
    from gridtwin.analytics.config import setting

    offs = [r for e, r in runs if not e]
    ons = [r for e, r in runs if e]
    ratios = sorted(100 * on["rate"] / off["rate"] for off, on in zip(offs, ons))

    def med(rs, key):
        return float(np.median([r[key] for r in rs]))

    on = {k: med(ons, k) for k in ons[0]}
    off = {k: med(offs, k) for k in offs[0]}
    rates = "/".join(f"{r['rate']:,.0f}" for r in offs), "/".join(f"{r['rate']:,.0f}" for r in ons)
    return [
        (
            "durable ingest, analytics off / on",
            f"{off['rate']:,.0f} / {on['rate']:,.0f} msg/s",
            f"on = {float(np.median(ratios)):.0f} % of off, the median of {rounds} pairs "
            f"({', '.join(f'{x:.0f}' for x in ratios)} %; target >= 90 %): off {rates[0]}, on "
            f"{rates[1]} msg/s; the same backlog of {off['total']:,.0f} msgs from {n_nodes:,} "
            f"nodes x 10 metrics, drained by a fresh daemon each run; its CPU while storing "
            f"{100 * off['cpu']:.0f} % / {100 * on['cpu']:.0f} % of a core, the analytics "
            f"process's {100 * on['child_cpu']:.0f} % (and {on['child_start']:.2f} s of CPU "
            "to start, before the first commit)",
        ),
        (
            f"analytics behind ingest, {n_nodes:,} nodes x 10 metrics",
            f"{on['lag']:.1f} s after the last commit",
            f"{on['analysed']:,.0f} readings analysed ({on['replayed']:,.0f} of them read back "
            "from the store: what ingest committed during the burst, and beyond the queue of "
            f"{setting(None, 'queue_max'):,}), {on['dropped']:,.0f} dropped; "
            f"the daemon's CPU from the first commit to the end of analytics {on['cpu_all']:.1f} s "
            "(medians)",
        ),
        (
            "daemon RSS, analytics off / on",
            f"{off['rss']:.0f} / {on['rss']:.0f} + {on['rss_child']:.0f} MB",
            f"+{on['rss'] + on['rss_child'] - off['rss']:.0f} MB (the daemon "
            f"{on['rss'] - off['rss']:+.0f} MB, its {on['n_child']:.0f} child process(es) "
            f"{on['rss_child']:.0f} MB, {on['own_child']:.0f} MB of it their own pages; medians) "
            f"for analytics' state of {n_nodes:,} nodes x 10 "
            "metrics (limits, rules, sigma, KPIs; no forest before a node has 1,000 stored rows: "
            "see the next row); target <= +50 MB",
        ),
    ]


def _storing(proc, mport: int, total: int, stored) -> tuple:
    """When a fresh daemon stored its backlog of `total` messages: (time, its CPU, its children's
    CPU) at the last sample that saw nothing stored and at the first that saw it all. Sampled from
    its start (its /metrics is up before ingest starts), a sample's time the middle of its request
    (a request waits while the daemon is busy). Waiting for /healthz first and then for a first
    stored batch started some windows late: a fast run had stored most of the backlog by then, and
    its short tail gave off rates of 70,000-145,000 msg/s (the daemon stores ~46,000)."""

    def sample(t):
        kids = sum(_cpu_s(k) for k in _children(proc.pid))
        return t, _cpu_s(proc.pid), kids

    zero = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the bench's daemon exited ({proc.returncode})")
        a = time.monotonic()
        try:
            done = stored(mport)
        except OSError:  # not listening yet
            time.sleep(0.02)
            continue
        t = (a + time.monotonic()) / 2
        if done >= total:
            if zero is None:
                raise RuntimeError("the bench saw no sample before the daemon's first commit")
            return zero, sample(t)
        if done == 0:
            zero = sample(t)
        time.sleep(0.02 if done == 0 else 0.05)
    raise RuntimeError("timed out waiting for the daemon to store its backlog")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return out


def _up(port: int) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False


def forest_fleet(n_nodes: int = 1000, distinct: int = 10, per_node: int = 60) -> list:
    """The analytics process as the daemon runs it (gridtwin.analytics.process.Child, started
    the daemon's way), with the IsolationForest models of 1,000 nodes x 10 metrics: `distinct`
    models trained here on seeded grid-monitor days, each copied onto 100 nodes and saved where the
    site's models live, so the child loads them at start like a restarted daemon's; then every node
    sends `per_node` messages. Its RSS (and its children's), the models' size, and the readings/s
    of CPU the child took (every detector, scoring included)."""
    import copy
    import marshal
    import threading

    from gridtwin.analytics.base import Context
    from gridtwin.analytics.iforest import Features, IsolationForestDetector, _Node
    from gridtwin.analytics.process import EOF, Child
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.site import load_site

    rng = np.random.default_rng(16)
    work = Path(tempfile.mkdtemp(prefix="gridtwin-bench-forests-"))
    names = sorted(fleet_metrics(rng, 1)[0])
    ids = [f"n{i:04d}" for i in range(n_nodes)]
    (work / "site.toml").write_text(
        '[site]\nid = "bench"\n\n'
        + "".join(
            f'[[nodes]]\nid = "{n}"\nrole = "grid_monitor"\nsensors = [{FLEET_SENSORS}]\n\n'
            for n in ids
        )
    )
    site = load_site(work / "site.toml")
    t0 = 1_780_000_000_000
    det = IsolationForestDetector(Context(site=site), background=False)
    fits = []
    c0 = time.process_time()
    for k in range(distinct):
        ms = fleet_metrics(rng, 8640)  # a day at 10 s
        raw = np.array([[m[x] for x in names] for m in ms])
        ts = t0 - 86_400_000 + np.arange(len(raw)) * 10_000.0
        feats = Features(names, det.nominal, det.gap_s)
        feats.fit(raw)
        X = feats.matrix(ts, raw, None)
        X = X[np.linspace(0, len(X) - 1, min(len(X), det.max_train)).astype(int)]
        from sklearn.ensemble import IsolationForest

        model = IsolationForest(
            n_estimators=det.n_estimators,
            max_samples=min(det.max_samples, len(X)),
            contamination=det.contamination,
            random_state=k,
        ).fit(X)
        st = _Node()
        det._install(f"t{k}", st, model, feats, X, t0)
        fits.append(st.fit)
    train_s = (time.process_time() - c0) / distinct
    det.nodes.clear()
    for i, n in enumerate(ids):
        st = det.nodes[n] = _Node()
        st.fit = copy.deepcopy(fits[i % distinct])
    det.save()  # <var>/analytics/iforest.joblib: what the child loads at start
    per_node_kb = det.memory_bytes() / n_nodes / 1e3
    model_mb = det.path.stat().st_size / 1e6
    db = db_path(site)
    db.parent.mkdir(parents=True, exist_ok=True)
    SqliteStore(db).close()  # the daemon's database (the child reads it, read-only)

    child = Child(  # as AnalyticsProcess._spawn
        {"site": str(site.path), "db": str(db), "active": [], "influx": None, "log": (None, 30)}
    )
    proc = child.proc
    done, ready = threading.Event(), threading.Event()

    def drain():  # the daemon's link thread: it takes (and here drops) what the child sends
        while True:
            msg = child.get(1.0)
            if msg is None:
                continue
            if msg is EOF or msg[0] == "bye":
                done.set()
                return
            if msg[0] == "taken":
                child.taken = msg[1]
            ready.set()  # its first stats: the engine is built, the models loaded

    threading.Thread(target=drain, daemon=True).start()
    try:
        ready.wait(120)
        rss_start = _proc_rss_mb(proc.pid)
        sent = 0
        cpu0 = _cpu_s(proc.pid)
        for seq in range(per_node):
            ms = fleet_metrics(rng, n_nodes)
            rows = [(n, t0 + seq * 10_000, ms[i]) for i, n in enumerate(ids)]
            n = sum(len(r[2]) for r in rows)
            child.put(marshal.dumps((n, rows)))
            sent += n
        deadline = time.monotonic() + 600
        while child.taken < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # the last batch taken is analysed
        cpu = _cpu_s(proc.pid) - cpu0
        rss, private = _proc_rss_mb(proc.pid), _proc_private_mb(proc.pid)
        kids = sum(_proc_rss_mb(c) for c in _children(proc.pid))
    finally:
        child.close()
        done.wait(60)
        child.end(30)
        shutil.rmtree(work, ignore_errors=True)
    return [
        (
            f"analytics process, {n_nodes:,} nodes x 10 metrics with their forests",
            f"{rss:.0f} MB RSS",
            f"{rss_start:.0f} MB before the first message (Python, numpy, the site, the models "
            f"loaded), {rss:.0f} MB after {per_node} messages a node (every detector's state), "
            f"{private:.0f} MB of it its own (not shared pages); its children {kids:.0f} MB; the "
            f"models {per_node_kb:.0f} kB of arrays a node ({det.n_estimators} trees of "
            f"max_samples {det.max_samples}), {model_mb:.0f} MB on disk; training {train_s:.2f} s "
            "CPU a node-day (in a process of its own for each round)",
        ),
        (
            f"analytics process scoring, {n_nodes:,} nodes",
            f"{sent / max(cpu, 1e-9):,.0f} readings/s",
            f"{sent:,} readings (every detector, the forests' scoring with 41 features a row) in "
            f"{cpu:.1f} s CPU of the child",
        ),
    ]


def _proc_private_mb(pid: int) -> float:
    """What a process has of its own (Private_Clean + Private_Dirty): its RSS less the pages it
    shares (libpython, numpy's libraries, with the daemon and each other), the memory it adds."""
    kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kb += int(line.split()[1])
    return kb / 1024


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def twin_crossing(res: dict):
    """The slow rise's first maintenance alert: how long before the true crossing of 85 degC, and
    the error of the crossing it predicted (from the alert's detail) against the true one."""
    lb = next((x for x in res["labels"] if x["kind"] == "temp_rise"), None)
    if lb is None:
        return None
    rate, base = lb["args"]["rate_c_per_h"], lb["args"]["base_c"]
    true_ms = lb["start_ms"] + (85.0 - base) / rate * 3_600_000
    if true_ms > lb["end_ms"]:
        return None
    hits = [
        a
        for a in res["alerts"]
        if a["kind"] == "maintenance"
        and a["node"] == lb["node"]
        and lb["start_ms"] <= a["raised"] <= true_ms
    ]
    if not hits:
        return (
            "not forecast",
            f"{lb['node']} {lb['metric']}: {rate} degC/h from {base} degC; no alert before "
            f"it reached 85 degC",
        )
    a = hits[0]
    pred = a["detail"].get("crossing")
    lead_h = (true_ms - a["raised"]) / 3_600_000
    err = (
        f", predicted crossing {100 * (pred - true_ms) / (true_ms - a['raised']):+.1f} % of the "
        "lead"
        if pred
        else ""
    )
    return (
        f"{lead_h:.1f} h ahead",
        f"{lb['node']} {lb['metric']} {rate} degC/h from {base} degC: first alert "
        f"{lead_h:.1f} h before it reached 85 degC{err}",
    )


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(ROOT / "host"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--analytics-seed", type=int, default=TUNED_ON)
    ap.add_argument("--analytics-days", type=int, default=3)
    ap.add_argument("--analytics-save", help="write the run's labels and alerts here (JSON)")
    ap.add_argument("--load", help="score a saved run again instead of running one")
    ap.add_argument(
        "--no-ingest", dest="analytics_ingest", action="store_false", help="skip ingest on/off"
    )
    ap.add_argument(
        "--ingest-only", action="store_true", help="only the ingest on/off rows (a few minutes)"
    )
    a = ap.parse_args()
    if a.ingest_only:
        rows = ingest_on_off()
    else:
        rows = report(json.loads(Path(a.load).read_text())) if a.load else run(a)
    for f in rows:
        print(f"  {f[0]:<45} {f[1]:>24}   {f[2]}")
