"""A node's sensors, display and pins in site.toml, and their config.json keys (issue #5).

Importing this module (``gridtwin.site.EXTENSIONS`` lists it) registers three `[[nodes]]` keys and
a contributor to ``gridtwin.nodeconfig.CONTRIBUTORS``::

    [[nodes]]
    id = "EL1"
    role = "electrolyser"
    pins = { onewire = 5 }                      # overrides of the board file's pins
    display = { page_ms = 6000 }                # over the board file's "display"
    sensors = [
      { id = "stack", type = "ina226", addr = 0x40, shunt_ohm = 0.000075, max_a = 1000.0, twin = "i_a" },
      { id = "t_stack", type = "ds18b20", twin = "t_c" },
    ]

A sensor is ``id``, ``type`` and that type's keys, the same rows as the firmware's
(firmware/gt/drivers/options.py; a test keeps the two equal), so the host refuses what the node
would refuse, before anything is deployed, with the file, the key and the fix. On top of the
firmware's rows the host checks what only shows on the bench: a shunt that overflows its chip's
input at ``max_a``, an analog range beyond the input's full scale, two sensors on one I2C
address, DS18B20s sharing a wire without their ROMs, and (when rendering, with the board file at
hand) ADC pins the board cannot sample and a 1-Wire sensor without a 1-Wire pin.

``twin`` is host-only (never rendered): the twin metric of the node's own component the sensor
measures, fed to a virtual node's chip (gridtwin.twin.sensorfeed). A string names the metric of
the sensor's main quantity; a table names one per firmware metric, e.g. ``twin = { hz = "f_hz" }``
on an ADE7953 (which measures v, a, pf and hz).
"""

from __future__ import annotations

import difflib

from gridtwin import site as site_mod
from gridtwin.errors import ConfigError
from gridtwin.nodeconfig import CONTRIBUTORS
from gridtwin.site import NODE_KEYS, SITE_CHECKS, Key, Record, check_id, in_range, one_of
from gridtwin.vworld import ADC_MAX_V, PRIMARY, QUANTITIES, cal_volts
from gridtwin.vworld import INA_CAL as CAL
from gridtwin.vworld import current_lsb as _current_lsb

# --- the firmware's rows, in the site's terms (firmware/gt/drivers/options.py) -------------------

FSR = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)  # ADS1115 PGA ranges, volts
MUX = ("0", "1", "2", "3", "0-1", "0-3", "1-3", "2-3")  # ADS1115 inputs
ADE7953_ADDR = 0x38  # fixed
# INA2xx shunt input full scale in volts (the calibration register's constant and valid bits, CAL,
# and the current LSB are gridtwin.vworld's, with the chips' other figures)
SHUNT_FS = {"ina219": 0.320, "ina226": 0.08192}


def _i2c(addr: int, hi: int, pins: str) -> dict[str, Key]:
    return {"bus": Key(int, 0, check=in_range(0, 1), help="I2C bus number"),
            "addr": Key(int, addr, check=in_range(addr, hi), help=f"I2C address ({pins})")}


def _ina(shunt: float, max_a: float) -> dict[str, Key]:
    r = _i2c(0x40, 0x4F, "A1, A0 pins")
    r["shunt_ohm"] = Key(float, shunt, check=in_range(0.00001, 100),
                         help="shunt resistance in ohms (75 mV at 1000 A: 0.000075)")
    r["max_a"] = Key(float, max_a, check=in_range(0.001, 1000), help="largest current expected, in A")
    r["v_div"] = Key(float, 1.0, check=in_range(1, 1000),
                     help="divider ratio in front of VBUS, bus V / VBUS V (1: VBUS on the bus itself)")
    return r


def _check_rom(v: str):
    if v and (len(v) != 16 or v[:2] != "28" or any(c not in "0123456789abcdefABCDEF" for c in v)):
        return (f"'{v}' is not a DS18B20 ROM",
                "give the 16 hex digits of its ROM code, starting with the family code 28 (or leave it out "
                "when it is alone on the wire)")
    return None


def _check_cal(v: list):
    if len(v) != 4 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) or v[0] == v[2]:
        return (f"{v!r} is not a two-point calibration",
                "write [v0, y0, v1, y1] with v0 != v1: v0 volts read as y0, v1 volts as y1, "
                "e.g. [0.66, 0, 3.3, 2000] for a 0-2000 W/m2 4-20 mA pyranometer on 165 ohm")
    return None


def _linear(r: dict[str, Key]) -> dict[str, Key]:
    r["cal"] = Key(list, [0, 0, 1, 1], check=_check_cal, help="two points [v0, y0, v1, y1]: v0 volts read y0")
    r["unit"] = Key(str, "V", help="unit of the calibrated value")
    r["lo"] = Key(float, -1e9, help="lowest plausible value; below it the sensor is marked bad")
    r["hi"] = Key(float, 1e9, help="highest plausible value; above it the sensor is marked bad")
    return r


def _check_fsr(v: float):
    if v not in FSR:
        return f"{v} is not an ADS1115 range", f"use one of: {', '.join(str(x) for x in FSR)} (volts)"
    return None


TYPES: dict[str, dict[str, Key]] = {
    "lm75": _i2c(0x48, 0x4F, "A2..A0 pins"),
    "ina219": _ina(0.1, 3.2),
    "ina226": _ina(0.002, 20.0),
    "ade7953": {
        "bus": Key(int, 0, check=in_range(0, 1), help="I2C bus number (the ADE7953 is always at 0x38)"),
        "v_div": Key(float, 1001.0, check=in_range(1, 100000), help="voltage divider ratio, line V / input V"),
        "i_ohm": Key(float, 0.005, check=in_range(0.00001, 1000),
                     help="input volts per line amp: shunt ohms, or CT burden ohms / turns"),
    },
    "bme280": _i2c(0x76, 0x77, "SDO pin low 0x76, high 0x77"),
    "ds18b20": {
        "rom": Key(str, "", check=_check_rom, help="ROM code in hex; empty when it is alone on the wire"),
        "bits": Key(int, 12, check=in_range(9, 12), help="resolution in bits (9: 94 ms .. 12: 750 ms)"),
    },
    "ads1115": _linear({**_i2c(0x48, 0x4B, "ADDR pin"),
                        "input": Key(str, "0", check=one_of(*MUX), help="AIN0..3 ('0'..'3') or a pair ('0-1', '2-3', ...)"),
                        "fsr": Key(float, 2.048, check=_check_fsr, help="full-scale range in volts (the PGA setting)")}),
    "adc": _linear({"pin": Key(int, 34, check=in_range(0, 48), help="ADC pin (ADC1 pins: ADC2 stops with Wi-Fi)"),
                    "samples": Key(int, 8, check=in_range(1, 256), help="readings averaged per sample")}),
}

COMMON: dict[str, Key] = {
    "id": Key(str, site_mod.REQUIRED, check=check_id, help="sensor id, the first part of its metrics' names"),
    "type": Key(str, site_mod.REQUIRED, help="sensor type"),
    "twin": Key((str, dict), None, help="twin metric(s) of the node's component this sensor measures (host only)"),
}

# --- the node keys -------------------------------------------------------------------------------

SENSORS = Key(list, [], item=Key(dict, fix="write each sensor as a table: { id = \"...\", type = \"...\", ... }"),
              help="sensors on this node: tables of id, type and that type's keys")
DISPLAY = Key(dict, {}, keys={
    "kind": Key(str, None, check=one_of("ssd1306", "sh1106", "none"), help="OLED controller, or none"),
    "addr": Key(int, None, check=in_range(0, 127), help="OLED I2C address"),
    "page_ms": Key(int, None, check=in_range(500, 60000), help="how long each page shows, ms"),
}, help="the OLED, over the board file's \"display\"")
PINS = Key(dict, {}, keys={
    "i2c_scl": Key(int, None, check=in_range(0, 48), help="I2C clock pin"),
    "i2c_sda": Key(int, None, check=in_range(0, 48), help="I2C data pin"),
    "i2c_freq": Key(int, None, check=in_range(10000, 1000000), help="I2C clock in Hz"),
    "onewire": Key(int, None, check=in_range(-1, 48), help="1-Wire data pin, -1 when unused"),
    "led": Key(int, None, check=in_range(-1, 48), help="status LED pin, -1 when none"),
    "button": Key(int, None, check=in_range(-1, 48), help="button pin, -1 when none"),
}, help="overrides of the board file's pins")

NODE_KEYS["sensors"] = SENSORS
NODE_KEYS["display"] = DISPLAY
NODE_KEYS["pins"] = PINS


# --- validation ----------------------------------------------------------------------------------

def _check_sensors(site) -> None:
    # Another module (or a test) may own the `sensors` rows: then they are not ours to check.
    if NODE_KEYS.get("sensors") is not SENSORS:
        return
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
                raise ConfigError(site.path, f"{where}.type", "is missing",
                                  f"add the sensor type, one of: {', '.join(TYPES)}")
            if t not in TYPES:
                near = difflib.get_close_matches(str(t), list(TYPES), n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                raise ConfigError(site.path, f"{where}.type", f"unknown sensor type '{t}'",
                                  f"{hint}use one of: {', '.join(TYPES)}")
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
        q = QUANTITIES[t]
        names = ", ".join(x for x in q) or "(one)"
        if isinstance(s.twin, str):
            if t not in PRIMARY:
                _fail(path, f"{where}.twin", f"a {t} measures {names}: a single name does not say which",
                      f"name the quantity, e.g. twin = {{ {next(iter(q))} = \"{s.twin}\" }}")
            s.twin = {PRIMARY[t]: s.twin}
        for suffix, metric in s.twin.items():
            if suffix not in q:
                near = difflib.get_close_matches(suffix, list(q), n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                _fail(path, f"{where}.twin.{suffix}", f"a {t} has no measured quantity '{suffix}'",
                      f"{hint}use one of: {names}" + (" (power is computed by the chip)" if suffix == "w" else ""))
            if not isinstance(metric, str) or not metric:
                _fail(path, f"{where}.twin.{suffix}", f"{metric!r} is not a twin metric name",
                      "name a metric of the node's twin component, e.g. \"i_a\"")
    if t in SHUNT_FS:
        # the shunt voltage at max_a must fit the chip's input, or the largest currents overflow
        fs = SHUNT_FS[t]
        if s.max_a * s.shunt_ohm > fs * 1.0001:
            _fail(path, f"{where}.shunt_ohm",
                  f"{s.max_a:g} A through {s.shunt_ohm:g} ohm is {s.max_a * s.shunt_ohm * 1000:.1f} mV, "
                  f"beyond the {t}'s +-{fs * 1000:g} mV shunt input",
                  f"use a shunt of at most {fs / s.max_a:.3g} ohm (e.g. 75 mV at 1000 A: 0.000075) or lower max_a")
        k, bits = CAL[t]
        lsb = _current_lsb(s.max_a)
        cal = int(k / (lsb * s.shunt_ohm) + 1e-6)
        if not 1 <= cal <= bits:
            _fail(path, f"{where}.max_a",
                  f"with shunt_ohm {s.shunt_ohm:g} and max_a {s.max_a:g} the {t}'s calibration register "
                  f"would be {cal} (valid: 1..{bits})",
                  "raise max_a toward the shunt's rating (max_a x shunt_ohm near the input's full scale)")
    if t in ("ads1115", "adc"):
        if s.lo >= s.hi:
            _fail(path, f"{where}.lo", f"lo ({s.lo:g}) is not below hi ({s.hi:g})", "give lo < hi")
        lo_set, hi_set = s.lo > -1e9, s.hi < 1e9
        fs = s.fsr if t == "ads1115" else ADC_MAX_V
        for name, value, given in (("hi", s.hi, hi_set), ("lo", s.lo, lo_set)):
            if not given:
                continue
            v = cal_volts(s.as_dict(), value)
            if v > fs * 1.0001 or (t == "ads1115" and v < -fs * 1.0001):
                fix = ("choose a larger fsr (" + ", ".join(str(x) for x in sorted(FSR) if x > abs(v)) + ") or a larger divider"
                       if t == "ads1115" and abs(v) < FSR[0] else "divide the signal down further (and change cal)")
                _fail(path, f"{where}.{name}",
                      f"{value:g} {s.unit} is {v:.3f} V at the input by cal, beyond its full scale of "
                      f"{'+-' if t == 'ads1115' else ''}{fs:g} V", fix)


def _check_together(path, i: int, node_id: str, sensors: list) -> None:
    seen: dict[str, int] = {}
    i2c: dict[tuple, tuple[int, Record]] = {}
    wire: list[tuple[int, Record]] = []
    for j, s in enumerate(sensors):
        where = f"nodes[{i}].sensors[{j}]"
        if s.id in seen:
            _fail(path, f"{where}.id", f"sensor id '{s.id}' is already used by sensors[{seen[s.id]}] of node '{node_id}'",
                  "give every sensor of a node its own id (it names the sensor's metrics)")
        seen[s.id] = j
        if s.type in ("ds18b20",):
            wire.append((j, s))
        elif s.type != "adc":
            at = (s.bus, ADE7953_ADDR if s.type == "ade7953" else s.addr)
            other = i2c.get(at)
            if other is not None:
                k, o = other
                same_adc = o.type == s.type == "ads1115"
                if not same_adc:
                    _fail(path, f"{where}.addr", f"I2C bus {at[0]} address 0x{at[1]:02x} is taken by sensors[{k}] ({o.type})",
                          "set the chip's address pins to another address and give it here")
                if o.input == s.input:
                    _fail(path, f"{where}.input", f"ADS1115 0x{at[1]:02x} input '{s.input}' is read by sensors[{k}] already",
                          "wire this signal to another input of the chip")
            else:
                i2c[at] = (j, s)
    if len(wire) > 1:
        for j, s in wire:
            if not s.rom:
                _fail(path, f"nodes[{i}].sensors[{j}].rom", f"{len(wire)} DS18B20s share the 1-Wire bus and this one has no ROM",
                      "give each its ROM code (16 hex digits, printed by onewire.OneWire.scan() on the node)")
        roms = [s.rom.lower() for _, s in wire]
        for j, s in wire:
            if roms.count(s.rom.lower()) > 1:
                _fail(path, f"nodes[{i}].sensors[{j}].rom", f"ROM {s.rom} is given twice", "each DS18B20 has its own ROM code")


SITE_CHECKS.append(_check_sensors)


# --- config.json ---------------------------------------------------------------------------------

def _plain(v):
    return v.as_dict() if isinstance(v, Record) else dict(v or {})


def contribute(site, node, board, cfg: dict) -> None:
    """pins (board's, overridden), display (board's "display", overridden) and sensors (without
    the host-only `twin`), checked against what the board has."""
    i = site.node_ids.index(node.id)
    pins = dict(board["pins"])
    pins.update({k: v for k, v in _plain(node.get("pins")).items() if v is not None})
    cfg["pins"] = pins
    display = dict(board.get("display") or {"kind": "none"})
    display.update({k: v for k, v in _plain(node.get("display")).items() if v is not None})
    cfg["display"] = display
    sensors = []
    for s in node.get("sensors") or []:
        d = _plain(s)
        d.pop("twin", None)
        sensors.append(d)
    cfg["sensors"] = sensors
    _check_board(site.path, i, node, board, pins, display, sensors)


def _check_board(path, i, node, board, pins, display, sensors) -> None:
    used = {pins.get(k): k for k in ("i2c_scl", "i2c_sda", "onewire", "led", "button") if pins.get(k, -1) >= 0}
    adc_pins = board.get("adc_pins")
    for j, s in enumerate(sensors):
        where = f"nodes[{i}].sensors[{j}]"
        if s["type"] == "adc":
            pin = s["pin"]
            if adc_pins is not None and pin not in adc_pins:
                _fail(path, f"{where}.pin", f"GPIO {pin} is not an ADC1 pin of board '{node.board}'",
                      f"use one of: {', '.join(map(str, adc_pins))} (boards/{node.board}.json adc_pins)")
            if pin in used:
                _fail(path, f"{where}.pin", f"GPIO {pin} is the board's {used[pin]} pin",
                      f"use another ADC pin, or move {used[pin]} with pins = {{ {used[pin]} = ... }}")
        if s["type"] == "ds18b20" and pins.get("onewire", -1) < 0:
            _fail(path, f"nodes[{i}].pins.onewire", f"sensor '{s['id']}' is on 1-Wire but the node has no 1-Wire pin",
                  "give it one: pins = { onewire = 4 }")
        if display.get("kind", "none") != "none" and s["type"] not in ("ds18b20", "adc") and s.get("bus", 0) == 0:
            addr = ADE7953_ADDR if s["type"] == "ade7953" else s["addr"]
            if addr == display.get("addr", 0x3C):
                _fail(path, f"{where}.addr", f"I2C address 0x{addr:02x} is the OLED's",
                      "give the sensor another address, or move the OLED: display = { addr = ... }")


if contribute not in CONTRIBUTORS:
    CONTRIBUTORS.append(contribute)
