"""Sensors, display and pins in site.toml: the host's rows equal the firmware's, the rendering,
and every mistake named with file, key and fix before a node would refuse it (issue #5)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from gridtwin.errors import ConfigError
from gridtwin.nodeconfig import render
from gridtwin.resources import FIRMWARE_DIR, SHIM_DIR
from gridtwin.sensors_site import TYPES
from gridtwin.site import REQUIRED, example_site_path, load_site
from gridtwin.twin import Twin
from gridtwin.twin.sensorfeed import live_values
from gridtwin.vworld import world_for

ROOT = Path(__file__).resolve().parents[2]
HEAD = '[site]\nid = "s1"\n\n[[nodes]]\nid = "n1"\nrole = "electrolyser"\n'


def load(tmp_path, node_lines: str):
    p = tmp_path / "site.toml"
    p.write_text(HEAD + node_lines)
    return load_site(p)


def error_of(tmp_path, node_lines: str, *, render_node: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        s = load(tmp_path, node_lines)
        if render_node:
            render(s, render_node)
    err = info.value
    assert err.file == str(tmp_path / "site.toml") and err.fix  # every error names file and fix
    return err


def test_host_rows_are_the_firmwares_rows(micropython):
    # The same types, keys and defaults as the node validates with, read from the firmware itself
    # under MicroPython (firmware/gt/drivers/options.py, generated from gridtwin.sensortypes).
    code = (
        "import json; from gt.drivers import options as o; from gt.config import between, one_of; "
        "print(json.dumps([o.TYPES, {t: {k: r[1] for k, r in o.rows(t, between, one_of).items()} "
        "for t in o.TYPES}]))"
    )
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE_DIR}:.frozen")
    out = subprocess.run(
        [micropython, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    fw_types, fw_rows = json.loads(out)
    host = {t: {k: key.default for k, key in rows.items()} for t, rows in TYPES.items()}
    assert list(TYPES) == fw_types and host == fw_rows


def test_example_nodes_render_sensors_display_and_pins():
    site = load_site(example_site_path())
    cfg = render(site, "EL1")
    assert [s["id"] for s in cfg["sensors"]] == ["stack", "u_stack", "t_stack"]
    assert all("twin" not in s for s in cfg["sensors"])  # host only
    assert cfg["sensors"][0] == {
        "id": "stack",
        "type": "ina226",
        "bus": 0,
        "addr": 0x40,
        "shunt_ohm": 0.000075,
        "max_a": 1000.0,
        "v_div": 2.0,
    }
    assert cfg["display"] == {"kind": "ssd1306", "addr": 0x3C}  # boards/esp32s3.json
    assert cfg["pins"]["onewire"] == 4 and cfg["pins"]["i2c_scl"] == 9
    assert render(site, "grid1")["pins"]["i2c_scl"] == 22  # boards/esp32.json
    # every twin metric a sensor names is one its component has
    state = Twin.from_site(site).state()
    for node in site.nodes:
        for s in node.sensors:
            for metric in (s.twin or {}).values():
                assert metric in state[node.id]["m"], (node.id, s.id, metric)


def test_pins_and_display_override_the_board(tmp_path):
    s = load(
        tmp_path,
        'pins = { onewire = 5, led = -1 }\ndisplay = { kind = "sh1106", page_ms = 6000 }\n'
        'sensors = [{ id = "t", type = "ds18b20" }]\n',
    )
    cfg = render(s, "n1")
    assert cfg["pins"]["onewire"] == 5 and cfg["pins"]["led"] == -1 and cfg["pins"]["i2c_sda"] == 8
    assert cfg["display"] == {"kind": "sh1106", "addr": 0x3C, "page_ms": 6000}
    assert cfg["sensors"] == [{"id": "t", "type": "ds18b20", "rom": "", "bits": 12}]
    world = world_for(cfg)
    assert world["onewire"][0]["pin"] == 5 and world["i2c"] == [
        {"bus": 0, "model": "sh1106", "addr": 0x3C}
    ]


def test_live_values_invert_each_chips_calibration():
    site = load_site(example_site_path())
    m = {"i_a": 500.0, "v_v": 90.0, "ghi_wm2": 1000.0, "t_cell_c": 48.5}
    v = live_values(render(site, "pv1"), site.node("pv1"), m)
    assert v == {
        "array.current_a": 500.0,
        "array.bus_v": 22.5,
        "v_array.ain0": pytest.approx(1.8),
        "ghi.ain1": pytest.approx(0.66 + 1000 / 2000 * 2.64),
        "t_cell.temp_c": 48.5,
    }
    v = live_values(render(site, "EL1"), site.node("EL1"), {"u_stack_v": 40.0, "t_c": 70.0})
    # the INA226's bus input through its 2:1 divider; no i_a: the current keeps its default
    assert v == {"stack.bus_v": 20.0, "u_stack.pin_v": pytest.approx(2.0), "t_stack.temp_c": 70.0}
    assert live_values(render(site, "grid1"), site.node("grid1"), {"f_hz": 49.9}) == {
        "mains.hz": 49.9
    }
    assert live_values(render(site, "srv_a"), site.node("srv_a"), {"p_kw": 12.0}) == {}


@pytest.mark.parametrize(
    "lines, key, words",
    [
        (
            'sensors = [{ id = "t", type = "lm57" }]',
            "nodes[n1].sensors[0].type",
            ["unknown sensor type 'lm57'", "did you mean 'lm75'"],
        ),
        ('sensors = [{ id = "t" }]', "nodes[n1].sensors[0].type", ["is missing", "ina226"]),
        ('sensors = [{ type = "lm75" }]', "nodes[n1].sensors[0].id", ["is missing"]),
        (
            'sensors = [{ id = "t/1", type = "lm75" }]',
            "nodes[n1].sensors[0].id",
            ["not a valid id"],
        ),
        (
            'sensors = [{ id = "s", type = "ina226", shunt = 0.001 }]',
            "nodes[n1].sensors[0].shunt",
            ["unknown key", "did you mean 'shunt_ohm'"],
        ),
        (
            'sensors = [{ id = "t", type = "lm75", addr = 0x40 }]',
            "nodes[n1].sensors[0].addr",
            ["out of range", "72..79"],
        ),
        (
            'sensors = [{ id = "s", type = "ina226", shunt_ohm = 0.000001 }]',
            "nodes[n1].sensors[0].shunt_ohm",
            ["out of range"],
        ),
        (
            'sensors = [{ id = "s", type = "ina226", shunt_ohm = 0.0001, max_a = 1000.0 }]',
            "nodes[n1].sensors[0].shunt_ohm",
            ["100.0 mV, beyond the ina226's +-81.92 mV", "at most 8.19e-05 ohm"],
        ),
        (
            'sensors = [{ id = "s", type = "ina219", shunt_ohm = 1.0, max_a = 1.0 }]',
            "nodes[n1].sensors[0].shunt_ohm",
            ["beyond the ina219's +-320 mV"],
        ),
        (
            'sensors = [{ id = "a", type = "ads1115", fsr = 5.0 }]',
            "nodes[n1].sensors[0].fsr",
            ["not an ADS1115 range", "4.096"],
        ),
        (
            'sensors = [{ id = "a", type = "ads1115", input = "4" }]',
            "nodes[n1].sensors[0].input",
            ["'4' is not one of"],
        ),
        (
            'sensors = [{ id = "a", type = "ads1115", cal = [1, 0, 1, 5] }]',
            "nodes[n1].sensors[0].cal",
            ["not a two-point calibration", "v0 != v1"],
        ),
        (
            'sensors = [{ id = "a", type = "ads1115", fsr = 2.048, '
            'cal = [0.0, 0.0, 2.0, 100.0], lo = -1.0, hi = 150.0 }]',
            "nodes[n1].sensors[0].hi",
            ["150 V is 3.000 V at the input", "+-2.048 V", "larger fsr (4.096, 6.144)"],
        ),
        (
            'sensors = [{ id = "a", type = "adc", pin = 1, cal = [0.0, 0.0, 2.0, 40.0], lo = '
            '-1.0, hi = 80.0 }]',
            "nodes[n1].sensors[0].hi",
            ["4.000 V at the input", "3.1 V"],
        ),
        (
            'sensors = [{ id = "a", type = "adc", lo = 5.0, hi = 1.0 }]',
            "nodes[n1].sensors[0].lo",
            ["not below hi"],
        ),
        (
            'sensors = [{ id = "t", type = "ds18b20", rom = "10ff641e8216c3a1" }]',
            "nodes[n1].sensors[0].rom",
            ["not a DS18B20 ROM", "family code 28"],
        ),
        (
            'sensors = [{ id = "t", type = "lm75" }, { id = "t", type = "ds18b20" }]',
            "nodes[n1].sensors[1].id",
            ["already used by sensors[0]"],
        ),
        (
            'sensors = [{ id = "t", type = "lm75" }, { id = "a", type = "ads1115" }]',
            "nodes[n1].sensors[1].addr",
            ["0x48 is taken by sensors[0] (lm75)"],
        ),
        (
            'sensors = [{ id = "a", type = "ads1115" }, { id = "b", type = "ads1115" }]',
            "nodes[n1].sensors[1].input",
            ["input '0' is read by sensors[0]"],
        ),
        (
            'sensors = [{ id = "a", type = "ds18b20" }, { id = "b", type = "ds18b20" }]',
            "nodes[n1].sensors[0].rom",
            ["2 DS18B20s share the 1-Wire bus"],
        ),
        (
            'sensors = [{ id = "m", type = "ade7953", twin = "f_hz" }]',
            "nodes[n1].sensors[0].twin",
            ["measures v, a, pf, hz", 'twin = { v = "f_hz" }'],
        ),
        (
            'sensors = [{ id = "m", type = "ade7953", twin = { hertz = "f_hz" } }]',
            "nodes[n1].sensors[0].twin.hertz",
            ["no measured quantity 'hertz'"],
        ),
        (
            'sensors = [{ id = "s", type = "ina226", twin = { w = "p_kw" } }]',
            "nodes[n1].sensors[0].twin.w",
            ["power is computed by the chip"],
        ),
        (
            'sensors = [{ id = "t", type = "lm75", twin = 5 }]',
            "nodes[n1].sensors[0].twin",
            ["expected a string or a table"],
        ),
        ('sensors = "lm75"', "nodes[n1].sensors", ["expected a list"]),
        ('sensors = ["lm75"]', "nodes[n1].sensors[0]", ["expected a table"]),
        ('display = { kind = "ssd1309" }', "nodes[n1].display.kind", ["did you mean 'ssd1306'"]),
        (
            'display = { adress = 60 }',
            "nodes[n1].display.adress",
            ["unknown key", "did you mean 'addr'"],
        ),
        ('pins = { onewire = 49 }', "nodes[n1].pins.onewire", ["out of range"]),
        ('pins = { sda = 4 }', "nodes[n1].pins.sda", ["did you mean 'i2c_sda'"]),
    ],
)
def test_site_errors_name_the_key_and_the_fix(tmp_path, lines, key, words):
    err = error_of(tmp_path, lines + "\n")
    assert err.key == key, str(err)
    for w in words:
        assert w in str(err), str(err)


@pytest.mark.parametrize(
    "lines, key, words",
    [
        (
            'sensors = [{ id = "v", type = "adc", pin = 34 }]',
            "nodes[0].sensors[0].pin",
            ["GPIO 34 is not an ADC1 pin of board 'esp32s3'", "1, 2, 3, 4, 5, 6, 7, 10"],
        ),
        (
            'sensors = [{ id = "v", type = "adc", pin = 4 }]',
            "nodes[0].sensors[0].pin",
            ["GPIO 4 is the board's onewire pin"],
        ),
        (
            'pins = { onewire = -1 }\nsensors = [{ id = "t", type = "ds18b20" }]',
            "nodes[0].pins.onewire",
            ["no 1-Wire pin", "pins = { onewire = 4 }"],
        ),
        (
            'sensors = [{ id = "e", type = "bme280", addr = 0x76 }, { id = "p", type = "ina226", '
            'addr = 0x40 }]\ndisplay = { addr = 0x40 }',
            "nodes[0].sensors[1].addr",
            ["0x40 is the OLED's"],
        ),
    ],
)
def test_render_errors_check_the_board(tmp_path, lines, key, words):
    err = error_of(tmp_path, lines + "\n", render_node="n1")
    assert err.key == key, str(err)
    for w in words:
        assert w in str(err), str(err)


def test_every_type_has_a_chip_model_and_required_rows_only_for_id_and_type():
    for t, rows in TYPES.items():
        assert (SHIM_DIR / "fakes" / f"{t}.py").exists() or t == "adc"
        assert all(k.default is not REQUIRED for k in rows.values())
