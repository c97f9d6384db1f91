"""The metric catalog against the firmware, and every dashboard panel against what is published.

What the example site publishes is taken from the firmware itself: every node of the example site
boots on a virtual board (the compiled firmware under the MicroPython unix port, its rendered
config.json, the chips its sensors name), takes one sample and reports its metrics with units and
its birth document. Twin state, alerts and logs are the points the rendered Telegraf script
(test_stack_telegraf.Script, in Go Starlark) makes of the daemon's and the nodes' real payloads.
Each panel's Flux is then evaluated over those points (its `filter` stages, up to a pivot)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import textwrap
import tomllib
from pathlib import Path

import pytest

from gridtwin import catalog
from gridtwin.cli import main
from gridtwin.nodeconfig import render as render_config
from gridtwin.resources import FIRMWARE_DIR, SHIM_DIR
from gridtwin.site import example_site_path, load_site
from gridtwin.vboard import VirtualBoard
from gridtwin.vworld import world_for
from test_stack_telegraf import Script  # tests/host is on sys.path (pytest puts it there)

ROOT = Path(__file__).resolve().parents[2]

# Run on a virtual board: the App as startup builds it, one sample, the birth document.
PROBE = textwrap.dedent("""
    import time, sys, gc, json
    from gt import config
    cfg = config.load()
    del config, sys.modules['gt.config']   # as startup does: the validator's RAM back
    gc.collect()
    from gt.app import App
    from gt.bootstate import BootState
    from gt.log import log
    a = App(cfg, BootState(), log)
    rec = a.sampler.sample(time.ticks_ms())
    print('=UNITS', json.dumps(a.units()))
    print('=SAMPLE', json.dumps(rec[2]))
    from gt.wire import birth
    class Net:
        app = a
        conns = 1
        handshake_ms = 900
        def rssi(self):
            return -61
    print('=BIRTH', birth(Net()).decode())
""")


@pytest.fixture(scope="module")
def published(micropython, firmware_build, tmp_path_factory):
    """{node id: {"units": {metric: unit}, "sample": {metric: value}, "birth": {...}}} from the
    firmware."""
    site = load_site(example_site_path())
    tmp = tmp_path_factory.mktemp("catalog")
    out = {}
    for node in site.nodes:
        cfg = render_config(site, node.id)  # the config.json a deploy writes
        # a roomier heap than a board's: this script holds the App and imports the connection code
        # at once, which the firmware's own start-up never does (its RAM is tested in
        # tests/firmware)
        b = VirtualBoard(
            tmp / node.id,
            config=cfg,
            world=dict(world_for(cfg), clock={"mode": "warp"}),
            firmware=firmware_build[0],
            heap="192k",
        )
        try:
            b.flash.joinpath("main.py").write_text(PROBE)
            assert b.run(timeout=60) == 0, "\n".join(b.lines)
            got = {
                k: json.loads(b.wait_for(rf"^={k.upper()} (.*)$")[1])
                for k in ("units", "sample", "birth")
            }
        finally:
            b.stop()
        out[node.id] = got
    return out


# --- the catalog is the firmware's ---------------------------------------------------------------


def test_sensor_tables_are_the_firmwares(micropython):
    # each driver's METRICS (suffix, unit, lo, hi), read from the firmware under MicroPython
    src = (FIRMWARE_DIR / "gt/drivers/options.py").read_text()
    fw_types = ast.literal_eval(re.search(r"^TYPES = (\(.*\))$", src, re.M).group(1))
    code = (
        "import json\nout = {}\n"
        f"for t in {list(fw_types)!r}:\n"
        "    m = __import__('gt.drivers.' + t, None, None, ('make',))\n"
        "    out[t] = [list(x[:2]) for x in m.METRICS] if hasattr(m, 'METRICS') else None\n"
        "print(json.dumps(out))"
    )
    env = dict(os.environ, MICROPYPATH=f"{SHIM_DIR}:{FIRMWARE_DIR}:.frozen")
    run = subprocess.run(
        [micropython, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    fw = json.loads(run.stdout)
    assert set(fw) == set(catalog.SENSOR_METRICS) | set(catalog.ANALOG)
    for t, rows in fw.items():
        if t in catalog.ANALOG:
            assert rows is None, t  # unit and range come from the config
        else:
            assert rows == [[sfx, unit] for sfx, unit, _, _ in catalog.SENSOR_METRICS[t]], t


def test_catalog_is_what_the_example_firmware_publishes(published):
    site = load_site(example_site_path())
    for node in site.nodes:
        want = catalog.node_metrics(node)
        fw = published[node.id]
        assert {k: m.unit for k, m in want.items()} == fw["units"], (
            node.id
        )  # every metric, its unit
        assert set(fw["sample"]) == set(want), node.id  # and a reading carries exactly those
        assert fw["birth"]["sensors"] == fw["units"]


# --- every panel against what is published -------------------------------------------------------


def universe(published) -> list[dict]:
    """Every series the store holds for the example site: (measurement, tags, field) rows."""
    site = load_site(example_site_path())
    s, root = Script(site), site.topic_root
    rows = []

    def add(points):
        for p in points:
            rows.extend({"_measurement": p["name"], **p["tags"], "_field": f} for f in p["fields"])

    from gridtwin.twin import Twin

    for node, fw in published.items():
        add(
            s.points(
                site.topic(node, "telemetry"),
                {
                    "v": 1,
                    "node": node,
                    "boot": fw["birth"]["boot"],
                    "seq": 1,
                    "ts": fw["birth"]["ts"],
                    "m": fw["sample"],
                },
            )
        )
        add(s.points(site.topic(node, "status"), fw["birth"]))
        add(
            s.points(
                site.topic(node, "log"),
                {"lvl": "W", "msg": "sensor: x bad", "ts": fw["birth"]["ts"]},
            )
        )
    twin = Twin.from_site(site)
    state = twin.state()
    add(
        s.points(
            f"{root}/_host/twin",
            {
                "t": 0.0,
                "components": {
                    cid: {"kind": c["kind"], "status": c["status"], "m": c["m"]}
                    for cid, c in state.items()
                },
            },
        )
    )
    add(
        s.points(
            f"{root}/_host/alerts/twin_EL1_trip",
            {
                "id": 1,
                "t": 1.0,
                "component": "EL1",
                "type": "trip",
                "severity": "critical",
                "message": "EL1: trip",
                "active": True,
            },
        )
    )
    add(
        s.points(
            f"{root}/_host/alerts/node_pdu_a",
            {
                "id": 2,
                "severity": "warning",
                "kind": "node_offline",
                "node": "pdu_a",
                "message": "pdu_a is offline",
                "ts": 1,
            },
        )
    )
    add(s.points(f"{root}/_host/alerts/node_pdu_a", b""))
    return rows


_STAGE = re.compile(r"\|>\s*(\w+)\((.*)\)\s*$")


def flux_filters(query: str, bucket: str) -> tuple[list[str], list[str]]:
    """(filter expressions up to the first pivot, the stages after it) of one panel query."""
    lines = query.splitlines()
    assert lines[0] == f'from(bucket: "{bucket}")', lines[0]
    filters, after, pivoted = [], [], False
    for ln in lines[1:]:
        m = _STAGE.search(ln)
        assert m, f"not a Flux stage: {ln!r}"
        name, args = m.groups()
        pivoted = pivoted or name == "pivot"
        if pivoted:
            after.append(ln)
        elif name == "filter":
            fm = re.fullmatch(r"fn: \(r\) => (.*)", args)
            assert fm, ln
            filters.append(fm.group(1))
    return filters, after


def selects(expr: str, row: dict) -> bool:
    """A Flux predicate of the dashboards' forms (==, !=, =~ /re/, exists, and, or, parentheses)
    on one row; a template variable (${node}) matches any value."""
    py = re.sub(r'r\.(\w+) == "\$\{\w+\}"', "True", expr)
    py = re.sub(
        r"(r\.\w+) =~ /((?:[^/\\]|\\.)*)/", lambda m: f"_re({m.group(1)}, {m.group(2)!r})", py
    )
    py = re.sub(r"exists r\.(\w+)", r"('\1' in row)", py)
    py = re.sub(r"\br\.(\w+)", r"row.get('\1')", py)
    return bool(
        eval(
            py,
            {"__builtins__": {}},
            {
                "row": row,  # noqa: S307 - the test's own translation
                "_re": lambda v, rx: v is not None and re.search(rx, v) is not None,
            },
        )
    )


def panel_matches(panel: dict, rows: list[dict], bucket: str) -> list[tuple[list[dict], list[str]]]:
    """For each target: the rows its filters select, and the columns its later stages use."""
    out = []
    for t in panel["targets"]:
        filters, after = flux_filters(t["query"], bucket)
        chosen = [r for r in rows if all(selects(f, r) for f in filters)]
        used = sorted(
            {c for ln in after for c in re.findall(r"\br\.(\w+)", ln)}
            - {"_time", "_value", "_field"}
        )
        out.append((chosen, used))
    return out


def check_dashboards(
    dashes: dict, rows: list[dict], published: dict, bucket: str, topic
) -> list[str]:
    """What is wrong: panels that select nothing, published metrics no panel names (with its
    unit)."""
    problems, shown = [], {}
    for dname, d in dashes.items():
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            where = f"{dname}: {p['title']!r}"
            if p["datasource"]["type"] != "influxdb":  # the MQTT live panel: a topic, not a query
                (t,) = p["targets"]
                if not any(
                    t["topic"].replace("${node}", n) == topic(n, "telemetry") for n in published
                ):
                    problems.append(f"{where}: topic {t['topic']} is no node's telemetry")
                continue
            for i, (chosen, used) in enumerate(panel_matches(p, rows, bucket)):
                if not chosen:
                    problems.append(f"{where} target {i}: selects nothing that is published")
                    continue
                have = {r["_field"] for r in chosen} | {k for r in chosen for k in r}
                if missing := [c for c in used if c not in have]:
                    problems.append(
                        f"{where} target {i}: computes with {missing}, which it does not select"
                    )
                filters = flux_filters(p["targets"][i]["query"], bucket)[0]
                if any(
                    "r._field ==" in f or "r._field =~" in f for f in filters
                ):  # names its fields
                    for r in chosen:
                        if r["_measurement"] == "telemetry":
                            shown.setdefault((r["node"], r["_field"]), set()).add(
                                p["fieldConfig"]["defaults"]["unit"]
                            )
    for node, fw in published.items():
        for metric, unit in fw["units"].items():
            units = shown.get((node, metric))
            if not units:
                problems.append(f"{node}.{metric} ({unit}) is on no panel")
            elif catalog.grafana_unit(unit) not in units:
                problems.append(
                    f"{node}.{metric} is shown only in {sorted(units)}, not in its unit {unit!r}"
                )
    return problems


def test_stack_render_every_panel_selects_what_the_firmware_publishes_and_shows_every_metric(
    published, site_pki, tmp_path, capsys
):
    # `gridtwin stack render` as a user runs it, then its files: Telegraf's one MQTT identity, and
    # every dashboard panel against what the example site's firmware publishes.
    site = site_pki.site
    assert main(["--site", str(site_pki.path), "stack", "render", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    conf = tomllib.loads((tmp_path / "etc/telegraf/telegraf.d/gridtwin.conf").read_text())
    inputs = conf["inputs"]["mqtt_consumer"]
    ids = [(i["client_id"], i["tls_cert"]) for i in inputs]
    assert len(inputs) == 1 or len({c for c, _ in ids}) == len({c for _, c in ids}) == len(ids), ids
    dash_dir = tmp_path / "var/lib/grafana/dashboards/gridtwin"
    dashes = {p.stem: json.loads(p.read_text()) for p in sorted(dash_dir.glob("*.json"))}
    assert dashes
    rows = universe(published)
    problems = check_dashboards(dashes, rows, published, site.storage.influx_bucket, site.topic)
    assert not problems, "\n".join(problems)


def test_panel_checker_finds_a_panel_that_matches_nothing(published):
    # the checker itself: a misspelt metric, a regex of invented names (today's main had
    # eff|h2_(rate|yield|flow)), a derived value from an unselected input, and a metric shown on
    # no panel of its unit, are each reported
    site = load_site(example_site_path())
    from gridtwin.stack import grafana

    dashes = grafana.dashboards(site)
    el = dashes["electrolysers"]["panels"]
    first = el[0]["targets"][0]
    first["query"] = first["query"].replace('r._field == "stack_a"', 'r._field == "stack_amps"')
    for p in el:
        if p["title"] == "hydrogen yield":
            p["targets"][0]["query"] = p["targets"][0]["query"].replace(
                '(r._field == "h2_nlh")', "r._field =~ /h2_(rate|yield|flow)|hydrogen/"
            )
    problems = check_dashboards(
        dashes, universe(published), published, site.storage.influx_bucket, site.topic
    )
    text = "\n".join(problems)
    assert "'efficiency (HHV)' target 0: computes with ['stack_a']" in text
    assert "'hydrogen yield' target 0: selects nothing" in text
    assert (
        "EL1.h2_nlh is shown only in ['percent', 'suffix: NL', 'suffix: kWh/Nm³'], not in its unit "
        "'NL/h'" in text
    )
    assert "EL1.stack_a" not in text  # still on the "current" panel
