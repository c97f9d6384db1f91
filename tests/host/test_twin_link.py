"""The twin on the bus: alerts raised and cleared, hardware in the loop, state published."""

import json
import sqlite3

import pytest

from gridtwin.daemon.service import Daemon
from gridtwin.nodeconfig import render
from gridtwin.site import example_site_path, load_site
from gridtwin.twin import Twin, demo_scenario
from gridtwin.twin.coupling import TwinLink
from gridtwin.twin.sensorfeed import feed, readings
from gridtwin.vworld import (
    NOISE_BOUND,
    chip_noise,
    plant_hil,
    plant_tolerance,
    tolerance,
    world_for,
)

from fixtures.daemon_fleet import NodeClient, endpoint, telemetry_payload, wait_for


def alerts(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT kind, node, active FROM alerts ORDER BY id").fetchall()


def test_events_become_alerts_and_real_telemetry_drives_the_twin(
    broker, site_pki, mqtt_client, tmp_path
):
    site = site_pki.site
    root = site.topic_root
    watcher = mqtt_client("telegraf")  # a read-only identity sees what Grafana would
    watcher.subscribe(f"{root}/_host/#")
    daemon = Daemon(
        endpoint=endpoint(broker),
        db_path=tmp_path / "gt.db",
        known_nodes=site.node_ids,
        metrics_port=None,
        site=site,
    ).start()
    twin = Twin.from_site(site, seed=3)
    link = TwinLink(twin, daemon, site, state_every_s=0.5)
    el1 = NodeClient(broker, "EL1")
    try:
        wait_for(lambda: daemon.metrics.connected, 10, "the daemon to connect")
        link.after_step()
        doc = json.loads(watcher.wait_for(f"{root}/_host/twin", timeout=10).payload)
        assert doc["components"]["util_a"]["m"]["on"] == 1

        # the utility fails: an alert is stored and published retained while it lasts
        twin.apply("util_a", "set_fault", {"on": True})
        twin.step()
        link.after_step()
        topic = f"{root}/_host/alerts/util_a/utility_lost"
        alert = json.loads(watcher.wait_for(topic, timeout=10).payload)
        assert alert["active"] and alert["severity"] == "major" and alert["component"] == "util_a"
        late = mqtt_client("grafana")  # subscribes after the fact: the alert is retained
        late.subscribe(topic)
        assert late.wait_for(topic, timeout=10).retain
        assert ("utility_lost", "util_a", 1) in alerts(tmp_path / "gt.db")
        twin.apply("util_a", "set_fault", {"on": False})
        twin.run_until(twin.t + 0.5)
        link.after_step()
        cleared = watcher.wait_for(
            f"{root}/_host/alerts/util_a/utility_lost", timeout=10, where=lambda m: m.payload == b""
        )
        assert cleared.payload == b""
        assert ("utility_lost", "util_a", 0) in alerts(tmp_path / "gt.db")

        # a real EL1 reports its stack temperature: the twin takes it (hardware in the loop)
        el1.publish(
            telemetry_payload("EL1", boot=1, seq=1, t_c=71.5).replace(
                b'"t_c": 21.0', b'"t_c": 71.5'
            )
        )
        wait_for(lambda: link._hil, 10, "EL1's reading to reach the twin link")
        twin.run_until(twin.t + 0.6)
        link.after_step()
        st = twin.state()["EL1"]
        assert "t_c" in st["overridden"] and st["m"]["t_c"] == 71.5
        assert link.overrides >= 1
    finally:
        el1.close()
        link.close()
        daemon.stop()


# --- what a virtual node reads, by the twin (issue #11 item 1, issue #13 item 6) -----------------

EXAMPLE = load_site(example_site_path())


def _twin_at(t_s):
    twin = Twin.from_site(EXAMPLE)
    twin.schedule(demo_scenario(twin))
    twin.run_until(t_s)
    return twin


def _expect(twin, node_id, cfg=None):
    parents = list(twin.topo.by_id[node_id].parents)
    return readings(EXAMPLE.node(node_id).role, EXAMPLE.node(node_id), twin.state(), parents, cfg)


def test_readings_say_what_the_twin_says_of_each_component():
    # t = 25 s: the utility failed at 20 s, the generator is still starting, the UPS carries the
    # load
    twin = _twin_at(25.0)
    st = twin.state()
    ups = _expect(twin, "ups_a")
    assert ups["supply"] == 0 and ups["on_batt"] == 1 and ups["out"] == 1
    assert ups["load_kw"] == st["ups_a"]["m"]["p_kw"] > 5 and 99 < ups["batt_pct"] < 100
    assert _expect(twin, "dist_a") == {"supply": 0, "fault": 0, "out": 0, "load_kw": 0.0}
    assert _expect(twin, "util_a")["supply"] == 0 and _expect(twin, "gen_a")["supply"] == 0
    # t = 35 s: on the generator; the UPS is back on its input and charges
    twin.run_until(35.0)
    assert _expect(twin, "gen_a")["supply"] == 1 and _expect(twin, "gen_a")["load_kw"] > 10
    ups = _expect(twin, "ups_a")
    assert ups["supply"] == 1 and ups["on_batt"] == 0
    # sensors: the stack's current, voltage and the power the INA226 computes from them
    el1 = _expect(twin, "EL1", render(EXAMPLE, "EL1"))
    m = twin.state()["EL1"]["m"]
    assert el1["stack_a"] == m["i_a"] and el1["stack_v"] == m["u_stack_v"]
    assert el1["stack_w"] == pytest.approx(m["p_kw"] * 1000, rel=1e-6)
    assert _expect(twin, "grid1")["f_dev"] == pytest.approx(
        twin.state()["grid1"]["m"]["df_hz"], abs=1e-9
    )


def test_a_plant_node_on_the_hil_bench_reports_the_twins_state(vboard, firmware_build, tmp_path):
    # The UPS node's firmware, its HIL inputs fed from the twin at 25 s (on battery): it reports
    # the twin's supply, battery, load and output, which it could not know from commands alone.
    twin = _twin_at(25.0)
    cfg = render(EXAMPLE, "ups_a")
    cfg["mqtt"] = dict(cfg["mqtt"], host="")  # no broker: readings stay in RAM
    cfg["params"] = dict(cfg.get("params") or {}, hil=plant_hil(cfg, 120.0))
    cfg["trace"] = True
    node = EXAMPLE.node("ups_a")
    parents = list(twin.topo.by_id["ups_a"].parents)
    live = tmp_path / "live.json"
    live.write_text(json.dumps(feed(cfg, node, "ups", twin.state(), parents)))
    world = world_for(cfg, clock={"mode": "warp", "stop_at_ms": 4000})
    world["live"] = str(live)
    b = vboard(name="ups_a", config=cfg, world=world, firmware=firmware_build[0])
    assert b.run() == 0
    rows = [json.loads(r[1].replace("'", '"')) for r in b.grep(r"^T \d+ \d+ (\{.*\})")]
    assert len(rows) >= 3, b.lines[-20:]
    want = readings("ups", node, twin.state(), parents, cfg)
    hil = cfg["params"]["hil"]
    for row in rows:
        assert {k: row[k] for k in ("supply", "fault", "out", "on_batt")} == {
            k: want[k] for k in ("supply", "fault", "out", "on_batt")
        }
        for k in ("load_kw", "batt_pct"):
            assert row[k] == pytest.approx(want[k], abs=plant_tolerance(hil, k)), k


def _run_grid1(vboard, firmware_build, seed, name):
    cfg = render(EXAMPLE, "grid1")
    cfg["mqtt"] = dict(cfg["mqtt"], host="")
    cfg["trace"] = True
    b = vboard(
        name=name,
        config=cfg,
        world=world_for(cfg, seed=seed, clock={"mode": "warp", "stop_at_ms": 4000}),
        firmware=firmware_build[0],
    )
    assert b.run() == 0
    rows = [json.loads(r[1].replace("'", '"')) for r in b.grep(r"^T \d+ \d+ (\{.*\})")]
    assert len(rows) >= 10, b.lines[-20:]
    return cfg, rows


def test_chips_add_their_data_sheets_noise_seeded_and_bounded(vboard, firmware_build):
    # grid1: an ADE7953 (230 V, 50 Hz by default) and an LM75 (25 degC): with a seed the readings
    # scatter as the catalog says, within its bound, the same way every run; without one they are
    # exact to the chip's resolution
    cfg, a = _run_grid1(vboard, firmware_build, 7, "a")
    _, again = _run_grid1(vboard, firmware_build, 7, "b")
    _, other = _run_grid1(vboard, firmware_build, 8, "c")
    _, exact = _run_grid1(vboard, firmware_build, None, "d")
    n = min(len(a), len(again), len(other))
    assert a[:n] == again[:n] and a[:n] != other[:n]
    mains, box = (next(s for s in cfg["sensors"] if s["type"] == t) for t in ("ade7953", "lm75"))
    volts = [r["mains_v"] for r in a]
    assert len(set(volts)) > 3 and all(
        abs(v - 230.0) <= tolerance(mains, "v", 230.0) for v in volts
    )
    assert all(abs(r["mains_hz"] - 50.0) <= tolerance(mains, "hz", 50.0) for r in a)
    temps = [r["t_box"] for r in a]
    assert len(set(temps)) > 1 and all(abs(t - 25.0) <= tolerance(box, "", 25.0) for t in temps)
    assert {r["t_box"] for r in exact} == {25.0} and len({r["mains_v"] for r in exact}) == 1
    # the bound is the catalog's: NOISE_BOUND x RMS, plus one step of resolution
    assert tolerance(box, "", 25.0) == pytest.approx(
        0.125 + NOISE_BOUND * chip_noise(box)["temp_c"]
    )
