"""Booting: a valid config runs; a wrong one lands in safe mode saying which key, without
looping."""

import json

import pytest

LM75 = {"bus": 0, "model": "lm75", "addr": 0x48, "temp_c": 21.5}


def warp(stop_at_ms, **extra):
    world = {"clock": {"mode": "warp", "stop_at_ms": stop_at_ms}, "i2c": [dict(LM75)]}
    world.update(extra)
    return world


def test_valid_config_reaches_running_and_samples(vboard, node_config):
    b = vboard(config=node_config(trace=True), world=warp(5500))
    assert b.run() == 0
    b.wait_for(r"I \d+ app: running node=env1 role=sensor sensors=1 interval=1000ms boot=1")
    samples = b.grep(r"^T (\d+) (\d+) \{'t_amb': ([\d.]+)\}")
    assert [int(m[1]) for m in samples] == [1, 2, 3, 4, 5, 6]
    assert all(float(m[3]) == 21.5 for m in samples)
    assert b.boots == 1


@pytest.mark.parametrize(
    "change, key, words",
    [
        ({"sampel_ms": 500}, "sampel_ms", "unknown key (did you mean 'sample_ms'?)"),
        ({"sample_ms": "1s"}, "sample_ms", "must be an integer, got '1s'"),
        ({"sample_ms": 10}, "sample_ms", "must be between 50 and 3600000, got 10"),
        ({"node": "pdu/a"}, "node", "may hold only letters, digits"),
        ({"pins": {"i2c_scl": 99}}, "pins.i2c_scl", "must be between 0 and 48"),
        (
            {"sensors": [{"id": "x", "type": "lm76"}]},
            "sensors[0].type",
            "unknown sensor type 'lm76'",
        ),
        (
            {"sensors": [{"id": "x", "type": "lm75", "adr": 72}]},
            "sensors[0].adr",
            "unknown key (did you mean 'addr'?)",
        ),
        ({"role": "toaster"}, "role", "unknown role 'toaster'"),
    ],
)
def test_bad_config_lands_in_safe_mode_naming_the_key(vboard, node_config, change, key, words):
    b = vboard(config=node_config(**change), world=warp(120_000))
    assert b.run() == 0
    line = b.wait_for(r"E \d+ safe: SAFE MODE: (.*)")[1]
    assert line.startswith(f"config.json: {key}: ")
    assert words in line
    assert "gridtwin deploy" in line  # says how to fix it
    assert not b.grep("app: running")
    assert not b.grep("Traceback")
    assert b.boots == 1  # two minutes of board time in safe mode, and no reboot
    assert "SAFE MODE" in b.read_flash("log.txt")  # the log on flash keeps the reason


def test_missing_and_unparsable_config_say_so(vboard, node_config):
    b = vboard(world=warp(10_000))
    b.run()
    assert "config.json: (file): not found on the board" in b.wait_for("SAFE MODE: (.*)")[1]
    b = vboard(world=warp(10_000))
    b.write_config('{"node": "env1",')
    b.run()
    assert "is not valid JSON" in b.wait_for("SAFE MODE: (.*)")[1]


def test_boot_counter_and_reset_cause_are_recorded(vboard, node_config):
    b = vboard(config=node_config(), world=warp(3_000))
    b.run()
    b.wait_for(r"boot: GridTwin \S+ boot=1 reset=power-on crash_streak=0")
    b2 = vboard(config=node_config(), world=warp(3_000))
    b2.flash.joinpath("boot.json").write_text(b.read_flash("boot.json"))
    b2.run()
    b2.wait_for(r"boot=2 reset=power-on")
    assert json.loads(b2.read_flash("boot.json"))["boots"] == 2
