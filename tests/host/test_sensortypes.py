"""One home per fact (issue #14 item 2): the sensor-type catalog and what is generated from it, the
facts the host reads from the firmware (roles, config defaults, the INA2xx arithmetic) and the
shim (the Dallas CRC-8)."""

import json
import os
import subprocess
from pathlib import Path

from gridtwin import catalog, fwsource, nodenet, sensortypes, site, vworld
from gridtwin.resources import FIRMWARE_DIR, SHIM_DIR
from gridtwin.sensors_site import NAMED_CHECKS
from gridtwin.sensors_site import TYPES as HOST_ROWS

ROOT = Path(__file__).resolve().parents[2]


def test_the_firmwares_table_and_the_docs_are_generated_from_the_catalog():
    # regenerate with: python -m gridtwin.sensortypes --write --docs
    text = (FIRMWARE_DIR / sensortypes.OPTIONS_PATH).read_text()
    assert text == sensortypes.options_source(text) and sensortypes.options_block() in text
    assert (ROOT / sensortypes.DOCS_PATH).read_text() == sensortypes.docs_source()


def test_every_reader_takes_its_facts_from_the_catalog():
    types = sensortypes.TYPES
    assert list(HOST_ROWS) == list(types)  # the host's site.toml rows
    assert vworld.QUANTITIES == {t: e.quantities for t, e in types.items()}  # the virtual world
    assert vworld.CHIPS == {t: e.chip for t, e in types.items() if e.chip}
    assert catalog.SENSOR_METRICS == {
        t: sensortypes.metrics(t) for t, e in types.items() if not e.analog
    }
    for t, e in types.items():
        assert e.model is None or (SHIM_DIR / "fakes" / f"{e.model}.py").exists(), (
            t
        )  # a chip model each
        assert e.bus in ("i2c", "onewire", "adc") and (
            e.bus != "i2c" or e.addr or "addr" in e.rows
        ), t


def _samples(o: sensortypes.Opt) -> list:
    if o.check == "rom":
        return [
            "",
            "28ff641e8216c3a1",
            "28FF641E8216C3A1",
            "10ff641e8216c3a1",
            "28ff",
            "28zz641e8216c3a1",
        ]
    if o.check == "cal":
        return [
            [0, 0, 1, 1],
            [0.66, 0, 3.3, 2000],
            [1, 0, 1, 5],
            [0, 0, 1],
            [0, True, 1, 1],
            [0, "a", 1, 1],
        ]
    if o.choices:
        return [*o.choices, "9" if isinstance(o.choices[0], str) else 5.0]
    if o.lo is not None:
        step = 1 if o.type is int else abs(o.lo) * 1e-3 or 1e-3
        return [o.lo, o.hi, o.lo - step, o.hi + step, o.type((o.lo + o.hi) / 2)]
    return []


def test_host_and_node_refuse_the_same_values(micropython):
    # every check of every row, fed the same values on both sides: the firmware's (under
    # MicroPython, from the generated table) and the host's (site.toml) agree on what is wrong
    cases = [
        (t, k, v)
        for t, e in sensortypes.TYPES.items()
        for k, o in e.rows.items()
        for v in _samples(o)
    ]
    code = (
        "import json\nfrom gt.drivers import options as o\nfrom gt.config import between, "
        f"one_of\nout = []\nfor t, k, v in json.loads({json.dumps(json.dumps(cases))}):\n"
        "    c = o.rows(t, between, one_of)[k][2]\n"
        "    out.append(c is None or not c(v))\n"
        "print(json.dumps(out))"
    )
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE_DIR}:.frozen")
    run = subprocess.run(
        [micropython, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    node_ok = json.loads(run.stdout)
    host_ok = [HOST_ROWS[t][k].check is None or not HOST_ROWS[t][k].check(v) for t, k, v in cases]
    assert len(cases) > 100 and node_ok == host_ok, [
        c for c, a, b in zip(cases, node_ok, host_ok) if a != b
    ]
    assert set(NAMED_CHECKS) == {
        o.check for e in sensortypes.TYPES.values() for o in e.rows.values() if o.check
    }


def test_the_firmwares_config_defaults_are_the_sites():
    # rendered keys take type, default and range from firmware/gt/config.py: no second copy
    for key, row in (
        ("queue", "queue"),
        ("keepalive", "mqtt.keepalive"),
        ("spill_kb", "spill_kb"),
        ("replay_per_s", "mqtt.replay_per_s"),
        ("health_s", "health_s"),
        ("log_level", "log_level"),
    ):
        assert nodenet.NETWORK.keys[key].default == fwsource.firmware_row(row).default, key
    assert (
        fwsource.firmware_row("queue").default == 16
        and fwsource.firmware_row("board").default == "esp32s3"
    )
    assert (
        site.NODE_KEYS["board"].default == "esp32s3"
        and site.NODE_KEYS["interval_ms"].default == 1000
    )
    err = nodenet.NETWORK.keys["queue"].check(3)
    assert err and "4..4096" in err[1]


def test_roles_are_the_firmwares():
    roles = fwsource.firmware_literal("gt/roles/__init__.py", "ROLES")
    assert site.ROLES == set(roles) and site.PLANT_ROLES == {
        r for r, m in roles.items() if m == "plant"
    }
    assert set(catalog.ROLE_METRICS) == site.ROLES


def test_the_ina_arithmetic_and_the_crc_are_the_firmwares_and_the_shims():
    # the host runs the driver's own current LSB and calibration (18.3 uA -> 20 uA, data sheet eq.
    # 2)
    assert (
        abs(sensortypes.current_lsb(0.6) - 2e-5) < 1e-15
        and sensortypes.ina_constants("ina226")["K"] == 0.00512
    )
    assert sensortypes.ina_calibration("ina226", 0.002, 20.0) == int(
        0.00512 / (1e-3 * 0.002) + 1e-6
    )
    # a made-up ROM carries the CRC the shim's 1-Wire bus computes: over all 8 bytes it is 0
    rom = bytes.fromhex(vworld.rom_for("t_stack"))
    assert rom[0] == 0x28 and fwsource.shim_function("onewire.py", "crc8")(rom) == 0
    # Maxim AN27's example ROM: family 02, serial 1C B8 01 00 00 00, CRC A2
    assert vworld._crc8(bytes.fromhex("021cb801000000")) == 0xA2


def _one_of_each(board: dict) -> str:
    # a node with a sensor of every catalog type, each at a free address or pin of the board
    used = {0x3C}  # the OLED's
    pins = set(board["pins"].values())
    lines = []
    for t in sensortypes.TYPES.values():
        extra = ""
        if t.bus == "i2c" and t.addr is None:
            addr = next(a for a in range(t.rows["addr"].lo, t.rows["addr"].hi + 1) if a not in used)
            used.add(addr)
            extra = f", addr = {addr}"
        elif t.bus == "i2c":
            assert t.addr not in used
            used.add(t.addr)
        elif t.bus == "adc":
            extra = f", pin = {next(p for p in board['adc_pins'] if p not in pins)}"
        lines.append(f'  {{ id = "x_{t.name}", type = "{t.name}"{extra} }},')
    return "sensors = [\n" + "\n".join(lines) + "\n]\n"


def test_every_type_reads_back_what_its_chip_is_fed(tmp_path, vboard, firmware_build):
    # Whatever the catalog holds, on a virtual board: one node with a sensor of every type, every
    # quantity its chip measures fed a value off the chip's idle one; the firmware (its driver,
    # validated by the generated rows) reads each back within the chip's resolution. A type added
    # to the catalog with its driver and chip model is covered here without another line.
    from gridtwin.nodeconfig import load_board, render
    from gridtwin.site import load_site

    mpy_dir, _ = firmware_build
    p = tmp_path / "site.toml"
    p.write_text(
        '[site]\nid = "lab"\n\n[[nodes]]\nid = "all"\nrole = "sensor"\nboard = "esp32s3"\n'
        + _one_of_each(load_board("esp32s3"))
    )
    cfg = render(load_site(p), "all")
    cfg["mqtt"] = dict(cfg["mqtt"], host="")  # no broker: readings stay in RAM
    cfg["trace"] = True
    fed, live = {}, {}
    for s in cfg["sensors"]:
        t = sensortypes.TYPES[s["type"]]
        idle = t.world(s)[1]
        for suffix in t.quantities:
            key = vworld.quantity_key(s, suffix)
            chip = round(idle[key] * 0.96 + 0.02, 4)
            live[f"{s['id']}.{key}"] = chip
            fed[(s["id"], suffix)] = chip * (
                s.get("v_div", 1.0) if t.shunt_fs and suffix == "v" else 1.0
            )
    (tmp_path / "live.json").write_text(json.dumps(live))
    world = vworld.world_for(cfg, clock={"mode": "warp", "stop_at_ms": 5000})
    world["live"] = str(tmp_path / "live.json")
    b = vboard(name="all", config=cfg, world=world, firmware=mpy_dir, heap="128k")
    assert b.run() == 0
    assert not b.grep(r"bad:|did not start|SAFE MODE|Traceback|MemoryError"), b.lines[-20:]
    rows = [json.loads(r[1].replace("'", '"')) for r in b.grep(r"^T \d+ \d+ (\{.*\})")]
    assert len(rows) >= 3, b.lines[-20:]
    spec = {s["id"]: s for s in cfg["sensors"]}
    for (sid, suffix), value in fed.items():
        name = sid + ("_" + suffix if suffix else "")
        metrics = {k[1]: v for k, v in fed.items() if k[0] == sid}
        tol = vworld.tolerance(spec[sid], suffix, value, metrics, noise=False) + 1e-4
        assert abs(rows[-1][name] - value) <= tol, (name, rows[-1][name], value, tol)
    assert {s["type"] for s in cfg["sensors"]} == set(sensortypes.TYPES)
