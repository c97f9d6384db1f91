"""The host renders what the firmware accepts: a rendered config boots to the running state."""

import json
import pathlib

import pytest

from gridtwin.errors import ConfigError
from gridtwin.nodeconfig import load_board, render
from gridtwin.site import load_site

SITE = """
[site]
id = "lab"

[[nodes]]
id = "env1"
role = "sensor"
board = "esp32"
interval_ms = 2000
"""


def test_rendered_config_boots_the_firmware(tmp_path, vboard):
    (tmp_path / "site.toml").write_text(SITE)
    cfg = render(load_site(tmp_path / "site.toml"), "env1")
    assert cfg["pins"]["i2c_scl"] == 22 and cfg["root"] == "gridtwin/lab" and cfg["sample_ms"] == 2000
    b = vboard(config=cfg, world={"clock": {"mode": "warp", "stop_at_ms": 5000}})
    assert b.run() == 0
    b.wait_for(r"app: running node=env1 role=sensor .* interval=2000ms")
    assert not b.grep("SAFE MODE")


def test_board_files_name_chip_offset_and_pins():
    for name, offset in (("esp32", "0x1000"), ("esp32s3", "0x0")):
        b = load_board(name)
        assert b["chip"] == name and b["flash_offset"] == offset
        assert {"i2c_scl", "i2c_sda", "led"} <= set(b["pins"])


def test_unknown_board_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"no board file for 'esp8266'.*known boards: esp32, esp32s3"):
        load_board("esp8266")
