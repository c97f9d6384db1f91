"""A node's sensors, display and pins in site.toml, and their config.json keys (issue #5).

``NODE_KEYS`` holds three `[[nodes]]` keys (gridtwin.schema, the site schema's composition root,
lists them), ``check_sensors`` the whole-site check, and ``hardware(site, node, board)`` the
config.json keys they render to (gridtwin.nodeconfig's pipeline calls it)::

    [[nodes]]
    id = "EL1"
    role = "electrolyser"
    pins = { onewire = 5 }                      # overrides of the board file's pins
    display = { page_ms = 6000 }                # over the board file's "display"
    sensors = [
      { id = "stack", type = "ina226", addr = 0x40, shunt_ohm = 0.000075, max_a = 1000.0, twin =
      "i_a" }, { id = "t_stack", type = "ds18b20", twin = "t_c" },
    ]

A sensor is ``id``, ``type`` and that type's keys: the rows of the sensor-type catalog
(gridtwin.sensortypes), from which the firmware's own rows (firmware/gt/drivers/options.py) are
generated, so the host refuses what the node would refuse, before anything is deployed, with the
file, the key and the fix. Pins and display take their ranges from the firmware's config schema
(gridtwin.fwsource). On top of the firmware's rows the host checks what only shows on the bench: a
shunt that overflows its chip's input at ``max_a``, an analog range beyond the input's full scale,
two sensors on one I2C address, DS18B20s sharing a wire without their ROMs, and (when rendering,
with the board file at hand) ADC pins the board cannot sample and a 1-Wire sensor without a 1-Wire
pin.

``twin`` is host-only (never rendered): the twin metric of the node's own component the sensor
measures, fed to a virtual node's chip (gridtwin.twin.sensorfeed). A string names the metric of
the sensor's main quantity; a table names one per firmware metric, e.g. ``twin = { hz = "f_hz" }``
on an ADE7953 (which measures v, a, pf and hz).
"""

from __future__ import annotations

import difflib

from gridtwin import site as site_mod
from gridtwin.errors import ConfigError
from gridtwin.sensortypes import (
    ADC_MAX_V,
    FSR,
    PRIMARY,
    Opt,
    cal_volts,
    ina_calibration,
    ina_constants,
)
from gridtwin.sensortypes import TYPES as CATALOG
from gridtwin.site import Key, Record, check_id, firmware_key, row_key

# --- the rows, from the sensor-type catalog ------------------------------------------------------


def _check_rom(v: str):
    if v and (len(v) != 16 or v[:2] != "28" or any(c not in "0123456789abcdefABCDEF" for c in v)):
        return (
            f"'{v}' is not a DS18B20 ROM",
            "give the 16 hex digits of its ROM code, starting with the family code 28 (or leave it "
            "out when it is alone on the wire)",
        )
    return None


def _check_cal(v: list):
    if (
        len(v) != 4
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        or v[0] == v[2]
    ):
        return (
            f"{v!r} is not a two-point calibration",
            "write [v0, y0, v1, y1] with v0 != v1: v0 volts read as y0, v1 volts as y1, "
            "e.g. [0.66, 0, 3.3, 2000] for a 0-2000 W/m2 4-20 mA pyranometer on 165 ohm",
        )
    return None


# the catalog's named checks (firmware/gt/drivers/options.py has the node's; a test feeds both)
NAMED_CHECKS = {"rom": _check_rom, "cal": _check_cal}


def _key(o: Opt) -> Key:
    return row_key(o, check=NAMED_CHECKS.get(o.check))


TYPES: dict[str, dict[str, Key]] = {
    t.name: {k: _key(o) for k, o in t.rows.items()} for t in CATALOG.values()
}

COMMON: dict[str, Key] = {
    "id": Key(
        str,
        site_mod.REQUIRED,
        check=check_id,
        help="sensor id, the first part of its metrics' names",
    ),
    "type": Key(str, site_mod.REQUIRED, help="sensor type"),
    "twin": Key(
        (str, dict),
        None,
        help="twin metric(s) of the node's component this sensor measures (host only)",
    ),
}

# --- the node keys -------------------------------------------------------------------------------


def _over_board(dotted: str, help_: str | None = None) -> Key:
    # the firmware's row for the key, without a default: absent, the board file's value stands
    return firmware_key(dotted, help_, default=None)


SENSORS = Key(
    list,
    [],
    item=Key(dict, fix="write each sensor as a table: { id = \"...\", type = \"...\", ... }"),
    help="sensors on this node: tables of id, type and that type's keys",
)
DISPLAY = Key(
    dict,
    {},
    keys={
        "kind": _over_board("display.kind", "OLED controller, or none"),
        "addr": _over_board("display.addr"),
        "page_ms": _over_board("display.page_ms", "how long each page shows, ms"),
    },
    help="the OLED, over the board file's \"display\"",
)
PINS = Key(
    dict,
    {},
    keys={
        k: _over_board(f"pins.{k}")
        for k in ("i2c_scl", "i2c_sda", "i2c_freq", "onewire", "led", "button")
    },
    help="overrides of the board file's pins",
)

NODE_KEYS: dict[str, Key] = {"sensors": SENSORS, "display": DISPLAY, "pins": PINS}


# --- validation ----------------------------------------------------------------------------------


def check_sensors(site) -> None:
    """Each node's sensors against their type's rows and the chips' limits (a whole-site check)."""
    loader = site_mod._Loader(site.path)
    for i, node in enumerate(site.nodes):
        checked = []
        for j, raw in enumerate(node.get("sensors") or []):
            if isinstance(raw, Record):  # validated already (a site checked twice)
                checked.append(raw)
                continue
            where = f"nodes[{i}].sensors[{j}]"
            t = raw.get("type")
            if t is None:
                raise ConfigError(
                    site.path,
                    f"{where}.type",
                    "is missing",
                    f"add the sensor type, one of: {', '.join(TYPES)}",
                )
            if t not in TYPES:
                near = difflib.get_close_matches(str(t), list(TYPES), n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                raise ConfigError(
                    site.path,
                    f"{where}.type",
                    f"unknown sensor type '{t}'",
                    f"{hint}use one of: {', '.join(TYPES)}",
                )
            rec = loader.table(raw, {**COMMON, **TYPES[t]}, where)
            _check_one(site.path, where, rec)
            checked.append(rec)
        if "sensors" in node:
            node.sensors = checked
        _check_together(site.path, i, node.id, checked)


def _fail(path, key, problem, fix):
    raise ConfigError(path, key, problem, fix)


def _check_one(path, where: str, s: Record) -> None:
    t = s.type
    # twin: which firmware metric of this sensor each named twin metric drives
    if s.twin is not None:
        q = CATALOG[t].quantities
        names = ", ".join(x for x in q) or "(one)"
        if isinstance(s.twin, str):
            if t not in PRIMARY:
                _fail(
                    path,
                    f"{where}.twin",
                    f"a {t} measures {names}: a single name does not say which",
                    f"name the quantity, e.g. twin = {{ {next(iter(q))} = \"{s.twin}\" }}",
                )
            s.twin = {PRIMARY[t]: s.twin}
        for suffix, metric in s.twin.items():
            if suffix not in q:
                near = difflib.get_close_matches(suffix, list(q), n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                _fail(
                    path,
                    f"{where}.twin.{suffix}",
                    f"a {t} has no measured quantity '{suffix}'",
                    f"{hint}use one of: {names}"
                    + (" (power is computed by the chip)" if suffix == "w" else ""),
                )
            if not isinstance(metric, str) or not metric:
                _fail(
                    path,
                    f"{where}.twin.{suffix}",
                    f"{metric!r} is not a twin metric name",
                    "name a metric of the node's twin component, e.g. \"i_a\"",
                )
    fs = CATALOG[t].shunt_fs
    if fs is not None:
        # the shunt voltage at max_a must fit the chip's input, or the largest currents overflow
        if s.max_a * s.shunt_ohm > fs * 1.0001:
            _fail(
                path,
                f"{where}.shunt_ohm",
                f"{s.max_a:g} A through {s.shunt_ohm:g} ohm is {s.max_a * s.shunt_ohm * 1000:.1f} "
                f"mV, beyond the {t}'s +-{fs * 1000:g} mV shunt input",
                f"use a shunt of at most {fs / s.max_a:.3g} ohm (e.g. 75 mV at 1000 A: 0.000075) "
                "or lower max_a",
            )
        bits = ina_constants(t)["CAL_BITS"]
        cal = ina_calibration(t, s.shunt_ohm, s.max_a)
        if not 1 <= cal <= bits:
            _fail(
                path,
                f"{where}.max_a",
                f"with shunt_ohm {s.shunt_ohm:g} and max_a {s.max_a:g} the {t}'s calibration "
                f"register would be {cal} (valid: 1..{bits})",
                "raise max_a toward the shunt's rating (max_a x shunt_ohm near the input's full "
                "scale)",
            )
    if CATALOG[t].analog:
        if s.lo >= s.hi:
            _fail(path, f"{where}.lo", f"lo ({s.lo:g}) is not below hi ({s.hi:g})", "give lo < hi")
        lo_set, hi_set = s.lo > -1e9, s.hi < 1e9
        fs = s.fsr if t == "ads1115" else ADC_MAX_V
        for name, value, given in (("hi", s.hi, hi_set), ("lo", s.lo, lo_set)):
            if not given:
                continue
            v = cal_volts(s.as_dict(), value)
            if v > fs * 1.0001 or (t == "ads1115" and v < -fs * 1.0001):
                larger = ", ".join(str(x) for x in sorted(FSR) if x > abs(v))
                fix = (
                    f"choose a larger fsr ({larger}) or a larger divider"
                    if t == "ads1115" and abs(v) < FSR[0]
                    else "divide the signal down further (and change cal)"
                )
                _fail(
                    path,
                    f"{where}.{name}",
                    f"{value:g} {s.unit} is {v:.3f} V at the input by cal, beyond its full scale "
                    f"of {'+-' if t == 'ads1115' else ''}{fs:g} V",
                    fix,
                )


def _check_together(path, i: int, node_id: str, sensors: list) -> None:
    seen: dict[str, int] = {}
    i2c: dict[tuple, tuple[int, Record]] = {}
    wire: list[tuple[int, Record]] = []
    for j, s in enumerate(sensors):
        where = f"nodes[{i}].sensors[{j}]"
        if s.id in seen:
            _fail(
                path,
                f"{where}.id",
                f"sensor id '{s.id}' is already used by sensors[{seen[s.id]}] of node '{node_id}'",
                "give every sensor of a node its own id (it names the sensor's metrics)",
            )
        seen[s.id] = j
        t = CATALOG[s.type]
        if t.bus == "onewire":
            wire.append((j, s))
        elif t.bus == "i2c":
            at = (s.bus, t.addr if t.addr is not None else s.addr)
            other = i2c.get(at)
            if other is not None:
                k, o = other
                same_adc = o.type == s.type == "ads1115"
                if not same_adc:
                    _fail(
                        path,
                        f"{where}.addr",
                        f"I2C bus {at[0]} address 0x{at[1]:02x} is taken by sensors[{k}] "
                        f"({o.type})",
                        "set the chip's address pins to another address and give it here",
                    )
                if o.input == s.input:
                    _fail(
                        path,
                        f"{where}.input",
                        f"ADS1115 0x{at[1]:02x} input '{s.input}' is read by sensors[{k}] already",
                        "wire this signal to another input of the chip",
                    )
            else:
                i2c[at] = (j, s)
    if len(wire) > 1:
        for j, s in wire:
            if not s.rom:
                _fail(
                    path,
                    f"nodes[{i}].sensors[{j}].rom",
                    f"{len(wire)} DS18B20s share the 1-Wire bus and this one has no ROM",
                    "give each its ROM code (16 hex digits, printed by onewire.OneWire.scan() on "
                    "the node)",
                )
        roms = [s.rom.lower() for _, s in wire]
        for j, s in wire:
            if roms.count(s.rom.lower()) > 1:
                _fail(
                    path,
                    f"nodes[{i}].sensors[{j}].rom",
                    f"ROM {s.rom} is given twice",
                    "each DS18B20 has its own ROM code",
                )


# --- config.json ---------------------------------------------------------------------------------


def _plain(v):
    return v.as_dict() if isinstance(v, Record) else dict(v or {})


def hardware(site, node, board) -> dict:
    """config.json's pins (board's, overridden), display (board's "display", overridden) and
    sensors (without the host-only `twin`), checked against what the board has."""
    i = site.node_ids.index(node.id)
    pins = dict(board["pins"])
    pins.update({k: v for k, v in _plain(node.get("pins")).items() if v is not None})
    display = dict(board.get("display") or {"kind": "none"})
    display.update({k: v for k, v in _plain(node.get("display")).items() if v is not None})
    sensors = []
    for s in node.get("sensors") or []:
        d = _plain(s)
        d.pop("twin", None)
        sensors.append(d)
    _check_board(site.path, i, node, board, pins, display, sensors)
    return {"pins": pins, "display": display, "sensors": sensors}


def _check_board(path, i, node, board, pins, display, sensors) -> None:
    used = {
        pins.get(k): k
        for k in ("i2c_scl", "i2c_sda", "onewire", "led", "button")
        if pins.get(k, -1) >= 0
    }
    adc_pins = board.get("adc_pins")
    for j, s in enumerate(sensors):
        where = f"nodes[{i}].sensors[{j}]"
        t = CATALOG[s["type"]]
        if t.bus == "adc":
            pin = s["pin"]
            if adc_pins is not None and pin not in adc_pins:
                _fail(
                    path,
                    f"{where}.pin",
                    f"GPIO {pin} is not an ADC1 pin of board '{node.board}'",
                    f"use one of: {', '.join(map(str, adc_pins))} (boards/{node.board}.json "
                    "adc_pins)",
                )
            if pin in used:
                _fail(
                    path,
                    f"{where}.pin",
                    f"GPIO {pin} is the board's {used[pin]} pin",
                    f"use another ADC pin, or move {used[pin]} with pins = {{ {used[pin]} = ... }}",
                )
        if t.bus == "onewire" and pins.get("onewire", -1) < 0:
            _fail(
                path,
                f"nodes[{i}].pins.onewire",
                f"sensor '{s['id']}' is on 1-Wire but the node has no 1-Wire pin",
                "give it one: pins = { onewire = 4 }",
            )
        if display.get("kind", "none") != "none" and t.bus == "i2c" and s.get("bus", 0) == 0:
            addr = t.addr if t.addr is not None else s["addr"]
            if addr == display.get("addr", 0x3C):
                _fail(
                    path,
                    f"{where}.addr",
                    f"I2C address 0x{addr:02x} is the OLED's",
                    "give the sensor another address, or move the OLED: display = { addr = ... }",
                )
