"""The host renders what the firmware accepts: a rendered config boots to the running state."""

import json

import pytest

from gridtwin.errors import ConfigError
from gridtwin.nodeconfig import load_board, render
from gridtwin.site import load_site
from gridtwin.vworld import world_for

SITE = """
[site]
id = "lab"

[[nodes]]
id = "env1"
role = "sensor"
board = "esp32"
interval_ms = 2000
"""


def test_rendered_config_boots_the_firmware(tmp_path, vboard, firmware_build):
    (tmp_path / "site.toml").write_text(SITE)
    cfg = render(load_site(tmp_path / "site.toml"), "env1")
    assert (
        cfg["pins"]["i2c_scl"] == 22 and cfg["root"] == "gridtwin/lab" and cfg["sample_ms"] == 2000
    )
    assert cfg["display"] == {"kind": "ssd1306", "addr": 0x3C} and cfg["sensors"] == []
    # the compiled build, as a board runs it: from source, compiling gt.net (the rendered config
    # names a broker) alone takes more than a 96 KB heap has in one piece
    b = vboard(
        config=cfg,
        world=world_for(cfg, clock={"mode": "warp", "stop_at_ms": 5000}),
        firmware=firmware_build[0],
    )
    assert b.run() == 0
    b.wait_for(r"app: running node=env1 role=sensor .* interval=2000ms")
    assert not b.grep("SAFE MODE")


def test_board_files_name_chip_offset_and_pins():
    for name, offset in (("esp32", "0x1000"), ("esp32s3", "0x0")):
        b = load_board(name)
        assert b["chip"] == name and b["flash_offset"] == offset
        assert {"i2c_scl", "i2c_sda", "led"} <= set(b["pins"])


def test_unknown_board_is_a_clear_error():
    with pytest.raises(
        ConfigError, match=r"no board file for 'esp8266'.*known boards: esp32, esp32s3"
    ):
        load_board("esp8266")


# --- every node of the example site, on the chips its sensors name (issue #5) --------------------

from gridtwin.site import example_site_path  # noqa: E402
from gridtwin.twin import Twin, demo_scenario  # noqa: E402
from gridtwin.twin.sensorfeed import live_values  # noqa: E402
from gridtwin.vworld import plausible, quantity_key, tolerance  # noqa: E402

EXAMPLE = load_site(example_site_path())
SENSING = ("pv1", "EL1", "EL2", "grid1")


def _offline(cfg):
    # no broker in these tests: readings stay in RAM (gt/config.py: no mqtt.host, no transport)
    cfg["mqtt"] = dict(cfg["mqtt"], host="")
    return cfg


def test_every_example_node_boots_on_its_own_chips(vboard, firmware_build):
    # The compiled build at the default 96k, with the OLED and every sensor the site gives the
    # node: all twelve start together, and each reaches the running state with no sensor marked bad.
    mpy_dir, _ = firmware_build
    boards = {}
    for node_id in EXAMPLE.node_ids:
        cfg = _offline(render(EXAMPLE, node_id))
        world = world_for(cfg, clock={"mode": "warp", "stop_at_ms": 6000})
        boards[node_id] = vboard(name=node_id, config=cfg, world=world, firmware=mpy_dir).start()
    for node_id, b in boards.items():
        assert b.wait_exit(120) == 0, f"{node_id}: {b.lines[-20:]}"
        role = EXAMPLE.node(node_id).role
        assert b.grep(rf"app: running node={node_id} role={role} "), f"{node_id}: {b.lines[-20:]}"
        assert not b.grep(r"bad:|did not start|SAFE MODE|Traceback|MemoryError"), (
            f"{node_id}: {b.lines[-20:]}"
        )
    assert all(EXAMPLE.node(n).sensors for n in SENSING)


def _twin_state(t_s=70.0):
    # the demo's story at 70 s: a June morning (sun on the array, both stacks at ~590 A, the lye
    # at ~65 degC) and the grid at ~49.88 Hz after its unit trip: every fed value is far from the
    # world's defaults, so a reading that matches came through the live file
    twin = Twin.from_site(EXAMPLE)
    twin.schedule(demo_scenario(twin))
    twin.run_until(t_s)
    return twin.state()


def _tolerance(sensor, suffix, value, fed):
    # what the chip resolves, in the firmware metric's units (gridtwin.vworld's catalog; these
    # worlds have no seed, so no noise), plus the 7 digits kept
    return tolerance(sensor, suffix, value, fed, noise=False) + 1e-4


@pytest.mark.parametrize("node_id", SENSING)
def test_the_firmware_reads_back_what_the_twin_feeds(vboard, firmware_build, tmp_path, node_id):
    # live_values() writes chip quantities (volts before a divider's calibration, amps, degC, Hz)
    # into the board's live file; the firmware reads them through its drivers and must report the
    # twin's own values for every sensor that names a twin metric.
    mpy_dir, _ = firmware_build
    node = EXAMPLE.node(node_id)
    cfg = _offline(render(EXAMPLE, node_id))
    cfg["trace"] = True
    m = _twin_state()[node_id]["m"]
    live = tmp_path / f"{node_id}-live.json"
    values = live_values(cfg, node, m)
    live.write_text(json.dumps(values))
    world = world_for(cfg, clock={"mode": "warp", "stop_at_ms": 5000})
    world["live"] = str(live)
    # every key the feed writes is one the world reads: nothing the twin says is lost
    read = {
        v["live"]
        for spec in world.get("i2c", []) + world.get("onewire", [])
        for v in spec.values()
        if isinstance(v, dict)
    } | {v["live"] for v in world.get("adc", {}).values()}
    assert values and set(values) <= read
    defaults = {
        v["live"]: v["default"]
        for spec in world.get("i2c", []) + world.get("onewire", [])
        for v in spec.values()
        if isinstance(v, dict)
    }
    defaults.update({v["live"]: v["default"] for v in world.get("adc", {}).values()})
    b = vboard(name=node_id, config=cfg, world=world, firmware=mpy_dir)
    assert b.run() == 0
    rows = [json.loads(r[1].replace("'", '"')) for r in b.grep(r"^T \d+ \d+ (\{.*\})")]
    assert len(rows) >= 3, b.lines[-20:]
    last = rows[-1]
    checked = 0
    for s in node.sensors:
        spec = next(x for x in cfg["sensors"] if x["id"] == s.id)
        for suffix, metric in (s.twin or {}).items():
            name = s.id + ("_" + suffix if suffix else "")
            fed = {k: m[v] for k, v in (s.twin or {}).items()}
            tol = _tolerance(spec, suffix, m[metric], fed)
            assert last[name] == pytest.approx(m[metric], abs=tol), (name, metric)
            default = defaults[f"{s.id}.{quantity_key(spec, suffix)}"]
            if spec["type"] in ("ads1115", "adc"):
                default = plausible(spec)  # its default volts read as this
            assert abs(default - m[metric]) > 3 * tol, f"{name}: the world's default would pass too"
            checked += 1
    assert checked == sum(len(s.twin or {}) for s in node.sensors) >= 1
