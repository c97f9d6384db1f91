"""The OLED: pages rendered by the real firmware into the SSD1306/SH1106 chip models' GDDRAM,
compared as PNG with the golden images in tests/firmware/golden/ (README shows them).
GT_UPDATE_GOLDEN=1 rewrites them."""

import textwrap

from fixtures.netnode import crashed
from oled import frames, image, last_before, matches_golden, pixels

# Every board here runs the compiled build (.mpy, what `gridtwin deploy` puts on a node) in the
# default 96 KB firmware heap, as a node does. (From source, the compiler's own transient RAM for
# the larger modules does not fit next to everything else: a board never compiles them.)
OLED = {"bus": 0, "model": "ssd1306", "addr": 0x3C, "frames": True}
# An electrolyser cell-stack node: stack voltage/current on an INA226, H2 pressure on a 4-20 mA
# transducer (ADC pin 34), stack temperature on a DS18B20 that is unplugged from 5 s on.
EL_SENSORS = [
    {"id": "stack", "type": "ina226", "addr": 0x40, "shunt_ohm": 0.002, "max_a": 20.0},
    {
        "id": "h2_p",
        "type": "adc",
        "pin": 34,
        "cal": [0.6, 0, 3.0, 10],
        "unit": "bar",
        "lo": -0.25,
        "hi": 10.5,
    },
    {"id": "t_stk", "type": "ds18b20"},
]
EL_WORLD = {
    "i2c": [
        OLED,
        {
            "bus": 0,
            "model": "ina226",
            "addr": 0x40,
            "shunt_ohm": 0.002,
            "current_a": 12.5,
            "bus_v": 1.92,
        },
    ],
    "adc": {"34": 1.56},
    "onewire": [
        {
            "pin": 4,
            "model": "ds18b20",
            "rom": "28ff641e8216c3a1",
            "temp_c": 61.25,
            "unplugged": [[5000, 10_000_000]],
        }
    ],
}


def el_config(node_config, **kw):
    return node_config(
        node="EL1",
        role="electrolyser",
        pins={"i2c_scl": 22, "i2c_sda": 21, "onewire": 4, "led": 2},
        sensors=EL_SENSORS,
        display={"kind": "ssd1306", "addr": 0x3C, "page_ms": 4000},
        params={"stack": "stack", "cells": 1},
        **kw,
    )


def test_pages_rotate_and_match_golden_images(vboard, node_config, firmware_build, tmp_path):
    world = dict(EL_WORLD, clock={"mode": "warp", "stop_at_ms": 72_500})
    b = vboard(config=el_config(node_config), world=world, firmware=firmware_build[0])
    assert b.run() == 0
    fs = frames(b)
    assert fs and all(f["addr"] == 0x3C and f["on"] for f in fs)
    # three pages (overview, readings, faults), 4 s each; the shift starts at 60 s
    overview, readings, faults = (
        last_before(fs, 3900),
        last_before(fs, 7900),
        last_before(fs, 11_900),
    )
    matches_golden(overview, "overview", tmp_path)
    matches_golden(readings, "readings", tmp_path)
    matches_golden(faults, "faults", tmp_path)
    # the faults page at 68-72 s is the one at 8-12 s moved one pixel right (burn-in shift)
    later = last_before(fs, 71_900)
    a, s = pixels(faults), pixels(later)
    assert s != a
    assert all(s[y][1:] == a[y][:127] for y in range(64))
    assert not any(s[y][0] for y in range(8, 64))  # (the header bar spans the full width)
    # the node never stopped sampling for the display's sake
    assert not b.grep("Traceback|display: update failed")


def test_identify_banner_and_sh1106_column_offset(vboard, node_config, firmware_build, tmp_path):
    # The same banner on an SSD1306 and on an SH1106 (132-column RAM, panel from column 2) must
    # look the same on the glass. The banner is what the `identify` command shows.
    code = textwrap.dedent("""
        import time
        from gt import config
        from gt.app import App
        from gt.bootstate import BootState
        from gt.log import log
        a = App(config.load(), BootState(), log)
        a.sampler.sample(time.ticks_ms())
        a.display.banner("IDENTIFY " + a.cfg["node"], 3000)
        time.sleep_ms(3500)
        a.display.update(a)       # the banner has expired: back to the pages
    """)
    imgs = {}
    for kind in ("ssd1306", "sh1106"):
        cfg = el_config(node_config)
        cfg["display"]["kind"] = kind
        world = dict(EL_WORLD, clock={"mode": "warp"})
        world["i2c"] = [dict(OLED, model=kind)] + EL_WORLD["i2c"][1:]
        b = vboard(name=kind, config=cfg, world=world, firmware=firmware_build[0])
        b.flash.joinpath("main.py").write_text(code)
        assert b.run(timeout=30) == 0, "\n".join(b.lines)
        fs = frames(b)
        imgs[kind] = [image(f).tobytes() for f in fs]
        banner = [f for f in fs if sum(map(sum, pixels(f))) > 4000]  # mostly lit: the banner
        assert banner
        if kind == "sh1106":
            matches_golden(banner[-1], "banner", tmp_path)
    assert imgs["ssd1306"] == imgs["sh1106"]


def test_missing_or_failing_display_never_stops_the_node(vboard, node_config, firmware_build):
    # No OLED at boot: the node says so and runs. An OLED that drops off the bus mid-run is
    # retried and comes back, while sampling carries on.
    world = dict(EL_WORLD, clock={"mode": "warp", "stop_at_ms": 6_500})
    world["i2c"] = EL_WORLD["i2c"][1:]
    b = vboard(config=el_config(node_config, trace=True), world=world, firmware=firmware_build[0])
    assert b.run() == 0
    b.wait_for(r"W \d+ display: no ssd1306 display")
    assert len(b.grep(r"^T \d+ ")) == 7

    world = dict(EL_WORLD, clock={"mode": "warp", "stop_at_ms": 60_500})
    world["i2c"] = [dict(OLED, unplugged=[[10_000, 20_000]])] + EL_WORLD["i2c"][1:]
    b = vboard(
        name="flaky",
        config=el_config(node_config, trace=True),
        world=world,
        firmware=firmware_build[0],
    )
    assert b.run() == 0
    b.wait_for(r"W \d+ display: OLED stopped answering")
    assert len(b.grep(r"^T \d+ ")) == 61
    assert [f for f in frames(b) if f["ms"] > 40_000]  # drawing again after the retry


def test_safe_mode_shows_the_reason(vboard, node_config, firmware_build, tmp_path):
    # The config is good but the last boots crashed (boot.json: a streak of 2, this boot makes 3
    # = crash_limit): the node stays in safe mode and the OLED says why, so a person at the node
    # needs no laptop to know what happened.
    b = vboard(
        config=el_config(node_config),
        firmware=firmware_build[0],
        world=dict(EL_WORLD, clock={"mode": "warp", "stop_at_ms": 5_000}),
    )
    b.flash.joinpath("boot.json").write_text(
        '{"boots": 7, "streak": 2, "crash": "sampler: ValueError(\'boom\')"}'
    )
    assert b.run() == 0
    b.wait_for(
        r"E \d+ safe: SAFE MODE: crashed 3 boots in a row \(last: sampler: ValueError\('boom'\)\)"
    )
    assert not b.grep(r"app: running|Traceback")
    fs = frames(b)
    assert fs and fs[-1]["on"]
    matches_golden(fs[-1], "safemode", tmp_path)


def test_pages_leave_ram_while_connecting_and_come_back(net_node, broker):
    # Issue #20: the TLS handshake is a node's tightest moment for RAM, so the OLED's pages (their
    # module and driver, ~8 KB here) are out of RAM while the node connects: the panel keeps its
    # last frame, then the pages go on once the attempt is over. The node says how much it had
    # free at the connect; the pages then draw again, the link shown "up".
    world = dict(EL_WORLD, clock={"mode": "real", "speed": 1})
    world["i2c"] = [dict(OLED, frames=True)] + EL_WORLD["i2c"][1:]
    b = net_node(
        node="EL1",
        world=world,
        role="electrolyser",
        pins={"i2c_scl": 22, "i2c_sda": 21, "onewire": 4, "led": 2},
        sensors=EL_SENSORS,
        display={"kind": "ssd1306", "addr": 0x3C, "page_ms": 1000},
        params={"stack": "stack", "cells": 1},
    )
    b.start()
    up = b.wait_for(r"mqtt: connected in \d+ ms .* free=(\d+)", timeout=30)
    at = next(i for i, ln in enumerate(b.lines) if ln is up.string)
    b.wait_for(r"#world oled ", timeout=10, start=at + 1)  # drawn again after the connect
    b.stop()
    assert frames(b) and all(f["on"] for f in frames(b))
    # up to our stop (crashed): a Ctrl-C inside a collection can print a MemoryError as it exits
    assert not crashed(b) and not b.grep("display: update failed")


def test_a_moment_short_of_ram_skips_one_drawing_not_the_oled(vboard, node_config, firmware_build):
    # CI (issue #20): at 96 KB, pv1's display update met a MemoryError while a TLS handshake held
    # its buffers, and the node switched its OLED off for good ("display: update failed"), as it
    # does for a chip that is broken. A MemoryError is a moment's shortage: that second is skipped.
    world = dict(EL_WORLD, clock={"mode": "warp", "stop_at_ms": 12_500})
    b = vboard(config=el_config(node_config), world=world, firmware=firmware_build[0])
    b.flash.joinpath("gt_oom_hook.py").write_text(
        "import time\n"
        "import gt.screens as s\n"
        "_orig = s.Screens.update\n"
        "_n = [0]\n"
        "def update(self, app):\n"
        "    _n[0] += 1\n"
        "    if _n[0] == 3:\n"
        "        raise MemoryError('memory allocation failed, allocating 32 bytes')\n"
        "    _orig(self, app)\n"
        "s.Screens.update = update\n"
    )
    b.flash.joinpath("boot.py").write_text("import gt_oom_hook\n")
    assert b.run() == 0
    assert not b.grep("display: update failed")
    assert [f for f in frames(b) if f["ms"] > 8_000]  # still drawing after the short moment
