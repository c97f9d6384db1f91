"""The sensor-type catalog: everything the host knows about each sensor type, in one entry a type.

An entry says how the type is wired (``bus``: i2c, onewire or the ESP32's adc, and a fixed I2C
address), its config rows (the keys of a ``sensors`` table in site.toml and config.json, with
type, default, range or choices and help), what the metrics its driver publishes are (suffix,
quantity, description; ``metrics()`` adds each unit from the driver's own METRICS), which chip
quantity drives each metric on a virtual board and the chip
model's register-level fake (the shim's fakes/<model>.py) with its resolution and noise (``chip``:
the data sheet's figures) and its idle values (``world``).

Who reads it:
- gridtwin.sensors_site: the rows of site.toml's sensors and the checks the chips need;
- gridtwin.vworld: the chips of a virtual board (``world_for``), their noise and tolerances;
- gridtwin.catalog: the metrics, units and descriptions the dashboards are built from;
- the firmware: firmware/gt/drivers/options.py holds the node's compact copy of the rows (types,
  defaults, ranges; no help texts) in a block generated from here (``python -m gridtwin.sensortypes
  --write``), and tests/host/test_sensortypes.py checks it is current;
- docs/sensors.md, generated the same way (``--docs``).

Adding a sensor type: one entry in TYPES, its driver (firmware/gt/drivers/<type>.py: METRICS,
make), and its chip model (the shim's fakes/<model>.py); then regenerate options.py and the docs.
The INA2xx arithmetic (current LSB, calibration register) is the firmware driver's, read from its
source (gridtwin.fwsource), never copied.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gridtwin import fwsource


@dataclass(frozen=True)
class Opt(fwsource.Row):
    """One config row of a sensor type: a range (lo, hi), choices (`what` names them in an error),
    or the name of a check host and firmware both implement (`check`: "rom", "cal")."""

    what: str = ""
    check: str | None = None


class Chip(dict):
    """{"lsb": {quantity: step}, "noise": {quantity: rms}, "source": "..."}: what a chip converts to
    (in the unit of its world key, before the firmware's scaling), the RMS noise its model adds, and
    the data sheet both come from (gridtwin.vworld's CHIPS)."""


@dataclass(frozen=True)
class SensorType:
    name: str
    bus: str  # "i2c", "onewire" or "adc" (the ESP32's own ADC pins)
    rows: dict[str, Opt]
    metrics: tuple[
        tuple[str, str, str], ...
    ] = ()  # (suffix, quantity, description), the driver's order
    # an analog input: one metric named after the sensor, unit and range from its config
    analog: str = ""
    quantities: dict[str, str] = field(default_factory=dict)  # metric suffix -> chip world key
    primary: str | None = None  # the quantity a plain `twin = "metric"` feeds
    addr: int | None = None  # a fixed I2C address (else the row "addr")
    model: str | None = None  # the chip model: the shim's fakes/<model>.py
    chip: Chip | None = None
    # sensor table -> (the chip spec's fixed keys, {world key: idle value}) on a virtual board
    world: Callable[[dict], tuple[dict, dict]] = lambda s: ({}, {})
    shunt_fs: float | None = None  # a shunt monitor's input full scale, volts


# --- shared rows ---------------------------------------------------------------------------------


def _i2c(addr: int, hi: int, pins: str, bus_help: str = "I2C bus number") -> dict[str, Opt]:
    return {
        "bus": Opt(int, 0, bus_help, 0, 1),
        "addr": Opt(int, addr, f"I2C address ({pins})", addr, hi),
    }


def _ina(shunt: float, max_a: float) -> dict[str, Opt]:
    return {
        **_i2c(0x40, 0x4F, "A1, A0 pins"),
        "shunt_ohm": Opt(
            float, shunt, "shunt resistance in ohms (75 mV at 1000 A: 0.000075)", 0.00001, 100
        ),
        "max_a": Opt(float, max_a, "largest current expected, in A", 0.001, 1000),
        "v_div": Opt(
            float,
            1.0,
            "divider ratio in front of VBUS, bus V / VBUS V (1: VBUS on the bus itself)",
            1,
            1000,
        ),
    }


def _linear(rows: dict[str, Opt]) -> dict[str, Opt]:
    # the two-point calibration of the analog inputs (gt/drivers/linear.py)
    return {
        **rows,
        "cal": Opt(
            list, [0, 0, 1, 1], "two points [v0, y0, v1, y1]: v0 volts read y0", check="cal"
        ),
        "unit": Opt(str, "V", "unit of the calibrated value"),
        "lo": Opt(float, -1e9, "lowest plausible value; below it the sensor is marked bad"),
        "hi": Opt(float, 1e9, "highest plausible value; above it the sensor is marked bad"),
    }


FSR = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)  # ADS1115 PGA ranges, volts
MUX = ("0", "1", "2", "3", "0-1", "0-3", "1-3", "2-3")  # ADS1115 inputs
ADC_MAX_V = 3.1  # the ESP32 ADC at 11 dB attenuation (gt/drivers/adc.py)
ADE_V_FS = 0.5 / 2**0.5  # the ADE7953's full-scale input, volts rms (gt/drivers/ade7953.py)
UNSET = 1e9  # the analog inputs' lo/hi defaults: "no bound"

_POWER = (
    ("v", "voltage", "bus voltage at the {}'s input"),
    ("a", "current", "current through the shunt"),
    ("w", "power", "power the chip computes: bus voltage x current"),
)


def cal_volts(sensor: dict, value: float) -> float:
    """The input volts an analog channel's calibration [v0, y0, v1, y1] turns into `value`."""
    v0, y0, v1, y1 = sensor.get("cal", [0, 0, 1, 1])
    return v0 + (value - y0) * (v1 - v0) / (y1 - y0)


def plausible(sensor: dict) -> float:
    """A calibrated value for an analog channel's default: the middle of its plausible range when
    the site gives one, else the calibration's first point."""
    lo, hi = sensor.get("lo", -UNSET), sensor.get("hi", UNSET)
    if -UNSET < lo < hi < UNSET:
        return (lo + hi) / 2
    return sensor.get("cal", [0, 0, 1, 1])[1]


def ain_key(sensor: dict) -> str:
    # a differential pair is driven on its first input; the second stays at 0 V
    return f"ain{sensor.get('input', '0')[0]}"


def _ade_world(s: dict) -> tuple[dict, dict]:
    # 230 V where the divider brings it inside the input's range, else half of that range
    v = 230.0 if 230.0 / s["v_div"] < 0.9 * ADE_V_FS else 0.5 * ADE_V_FS * s["v_div"]
    i = min(5.0, 0.5 * ADE_V_FS / s["i_ohm"])
    return (
        {"v_div": s["v_div"], "i_ohm": s["i_ohm"], "ptr_bytes": 2},
        {"v_rms": v, "i_rms": i, "pf": 0.95, "hz": 50.0},
    )


def _ina_type(name: str, shunt: float, max_a: float, fs: float, chip: Chip) -> SensorType:
    return SensorType(
        name,
        "i2c",
        _ina(shunt, max_a),
        metrics=tuple((sfx, q, d.format(name.upper())) for sfx, q, d in _POWER),
        # power ("w") is computed by the chip from current and voltage: no quantity of its own
        quantities={"v": "bus_v", "a": "current_a"},
        primary="a",
        model=name,
        chip=chip,
        shunt_fs=fs,
        # a quarter of the calibrated range: inside the shunt input whatever the site chose
        world=lambda s: (
            {"shunt_ohm": s["shunt_ohm"]},
            {"current_a": s["max_a"] / 4, "bus_v": 12.0},
        ),
    )


def _thermometer(name: str, bus: str, rows: dict[str, Opt], step: float, source: str) -> SensorType:
    # one temperature in degC, converted in steps of `step`; data sheets give these chips an
    # accuracy but no noise figure, so the model's noise is one step RMS
    return SensorType(
        name,
        bus,
        rows,
        metrics=(("", "temperature", f"temperature ({name.upper()})"),),
        quantities={"": "temp_c"},
        model=name,
        chip=Chip(lsb={"temp_c": step}, noise={"temp_c": step}, source=source),
        world=lambda s: ({}, {"temp_c": 25.0}),
    )


# --- the catalog ----------------------------------------------------------------------------------

TYPES: dict[str, SensorType] = {
    t.name: t
    for t in (
        _thermometer(
            "lm75",
            "i2c",
            _i2c(0x48, 0x4F, "A2..A0 pins"),
            0.125,
            "NXP LM75A data sheet, Temperature register: 11 bits, 0.125 degC (the chip model is an "
            "LM75A; 9-bit LM75B/TI parts: 0.5 degC); accuracy +-2 degC, no noise figure: 1 LSB RMS",
        ),
        _ina_type(
            "ina219",
            0.1,
            3.2,
            0.320,
            Chip(
                lsb={"shunt_v": 10e-6, "bus_v": 4e-3},
                noise={"shunt_v": 10e-6, "bus_v": 4e-3},
                source="TI SBOS448G, Electrical Characteristics: shunt LSB 10 uV, bus LSB 4 mV; "
                "offset typ. +-10 uV. No noise figure: 1 LSB RMS",
            ),
        ),
        _ina_type(
            "ina226",
            0.002,
            20.0,
            0.08192,
            Chip(
                lsb={"shunt_v": 2.5e-6, "bus_v": 1.25e-3},
                noise={"shunt_v": 2.5e-6, "bus_v": 1.25e-3},
                source="TI SBOS547A, Electrical Characteristics: shunt LSB 2.5 uV, bus LSB "
                "1.25 mV; offset typ. +-2.5 uV (shunt), +-1.25 mV (bus). No noise figure: 1 LSB "
                "RMS, the typical offset, at the 16 averages the firmware sets "
                "(gt/drivers/ina226.py CFG)",
            ),
        ),
        SensorType(
            "ade7953",
            "i2c",
            {
                "bus": Opt(int, 0, "I2C bus number (the ADE7953 is always at 0x38)", 0, 1),
                "v_div": Opt(float, 1001.0, "voltage divider ratio, line V / input V", 1, 100000),
                "i_ohm": Opt(
                    float,
                    0.005,
                    "input volts per line amp: shunt ohms, or CT burden ohms / turns",
                    0.00001,
                    1000,
                ),
            },
            metrics=(
                ("v", "voltage", "mains voltage, rms"),
                ("a", "current", "mains current, rms"),
                ("w", "power", "active power"),
                ("pf", "power factor", "power factor"),
                ("hz", "frequency", "mains frequency"),
            ),
            quantities={"v": "v_rms", "a": "i_rms", "pf": "pf", "hz": "hz"},
            addr=0x38,
            model="ade7953",
            chip=Chip(
                lsb={"rms": 1 / 9032007, "period": 1 / 223750},
                noise={"rms": 0.0005, "period": 1 / 223750},
                source="ADI ADE7953 rev. C, specifications: VRMS/IRMS error 0.1 % over 1000:1 "
                "(here 0.05 % RMS of the reading, bounded at 0.15 %); 24-bit RMS codes (9032007 "
                "full scale); the line period in 1/223.75 kHz steps, 1 step RMS",
            ),
            world=_ade_world,
        ),
        SensorType(
            "bme280",
            "i2c",
            _i2c(0x76, 0x77, "SDO pin low 0x76, high 0x77"),
            metrics=(
                ("t", "temperature", "air temperature"),
                ("rh", "humidity", "relative humidity"),
                ("p", "pressure", "air pressure"),
            ),
            quantities={"t": "temp_c", "rh": "rh", "p": "pressure_pa"},
            model="bme280",
            chip=Chip(
                lsb={"temp_c": 0.01, "rh": 0.008, "pressure_pa": 2.62},
                noise={"temp_c": 0.005, "rh": 0.02, "pressure_pa": 3.3},
                source="Bosch BST-BME280-DS002: humidity 0.008 %RH resolution, 0.02 %RH RMS noise "
                "(table 1); pressure at x1 oversampling 2.62 Pa resolution, 3.3 Pa RMS noise "
                "(weather monitoring, 3.5.1; Q24.8 output: 1/256 Pa steps); temperature at x1 16 "
                "bits, 0.005 degC, output in 0.01 degC, no noise figure: 1 LSB of the ADC. The "
                "steps are the resolutions: the output formats' 1/1024 %RH and 1/256 Pa are finer "
                "than the ADC behind them",
            ),
            world=lambda s: ({}, {"temp_c": 21.0, "rh": 45.0, "pressure_pa": 101325.0}),
        ),
        _thermometer(
            "tmp102",
            "i2c",
            _i2c(0x48, 0x4B, "ADD0 pin"),
            0.0625,
            "TI SBOS397C, Temperature Register: 12 bits, 0.0625 degC; accuracy +-0.5 degC "
            "(-25..+85 degC), no noise figure: 1 LSB RMS",
        ),
        _thermometer(
            "ds18b20",
            "onewire",
            {
                "rom": Opt(
                    str, "", "ROM code in hex; empty when it is alone on the wire", check="rom"
                ),
                "bits": Opt(int, 12, "resolution in bits (9: 94 ms .. 12: 750 ms)", 9, 12),
            },
            0.0625,
            "Maxim DS18B20 (19-7487), Operation - Measuring Temperature: 12 bits, 0.0625 degC "
            "(9..11 bits: 0.5..0.125); accuracy +-0.5 degC (-10..+85 degC), no noise figure: 1 "
            "LSB RMS",
        ),
        SensorType(
            "ads1115",
            "i2c",
            _linear(
                {
                    **_i2c(0x48, 0x4B, "ADDR pin"),
                    "input": Opt(
                        str, "0", "AIN0..3 ('0'..'3') or a pair ('0-1', '2-3', ...)", choices=MUX
                    ),
                    "fsr": Opt(
                        float,
                        2.048,
                        "full-scale range in volts (the PGA setting)",
                        choices=FSR,
                        what="an ADS1115 range",
                    ),
                }
            ),
            analog="analog input (ADS1115), calibrated",
            quantities={"": "ain"},
            model="ads1115",
            chip=Chip(
                lsb={"ain": 4.096 / 32768},
                noise={"ain": 4.096 / 32768},
                source="TI SBAS444D, table 1 (noise at 128 SPS, VDD 3.3 V): 1 LSB RMS at every "
                "range, the LSB being FSR / 2^15 (125 uV at +-4.096 V); `ain` here scales with the "
                "sensor's fsr",
            ),
            world=lambda s: ({}, {ain_key(s): cal_volts(s, plausible(s))}),
        ),
        SensorType(
            "adc",
            "adc",
            _linear(
                {
                    "pin": Opt(int, 34, "ADC pin (ADC1 pins: ADC2 stops with Wi-Fi)", 0, 48),
                    "samples": Opt(int, 8, "readings averaged per sample", 1, 256),
                }
            ),
            analog="analog input (ESP32 ADC), calibrated",
            quantities={"": "pin_v"},
            world=lambda s: ({}, {"pin_v": cal_volts(s, plausible(s))}),
        ),
    )
}

# What `twin = "metric"` (a plain string) feeds: a type's one quantity, or its `primary` (a shunt
# monitor is there for its current: its bus input, 26/36 V at most, rarely sees the plant's
# voltage). Types with several quantities and no primary need the table form, e.g. twin = { hz =
# "f_hz" }.
PRIMARY: dict[str, str] = {
    t.name: t.primary or next(iter(t.quantities))
    for t in TYPES.values()
    if t.primary or len(t.quantities) == 1
}


def metrics(t: str) -> tuple[tuple[str, str, str, str], ...]:
    """(suffix, unit, quantity, description) of each metric of type t, in the driver's order: the
    unit is the driver's METRICS' (firmware/gt/drivers/<t>.py), the rest the catalog's. () for an
    analog input (its one metric takes unit and range from the config)."""
    e = TYPES[t]
    if e.analog:
        return ()
    units = {row[0]: row[1] for row in fwsource.firmware_literal(f"gt/drivers/{t}.py", "METRICS")}
    if list(units) != [m[0] for m in e.metrics]:
        raise LookupError(
            f"gridtwin.sensortypes: {t}'s metrics {[m[0] for m in e.metrics]} are not its driver's "
            f"METRICS {list(units)} (firmware/gt/drivers/{t}.py): give the catalog entry the same"
        )
    return tuple((sfx, units[sfx], q, d) for sfx, q, d in e.metrics)


# --- the INA2xx arithmetic: the firmware driver's own ---------------------------------------------


def current_lsb(max_a: float) -> float:
    """gt/drivers/ina219.py's current LSB: max_a / 2^15 rounded up to 1, 2 or 5 x 10^n."""
    return fwsource.firmware_function("gt/drivers/ina219.py", "current_lsb")(max_a)


def ina_constants(t: str) -> dict:
    """The driver class's constants of an INA2xx: K (data sheet eq. 1), P (power LSB / current
    LSB), CAL_BITS (the calibration register's valid bits)."""
    return fwsource.class_constants(f"gt/drivers/{t}.py", t.upper())


def ina_calibration(t: str, shunt_ohm: float, max_a: float) -> int:
    """The calibration register the driver writes for this shunt and max_a (before CAL_BITS)."""
    calibration = fwsource.firmware_function("gt/drivers/ina219.py", "calibration")
    return calibration(ina_constants(t)["K"], current_lsb(max_a), shunt_ohm)


# --- the firmware's compact table (firmware/gt/drivers/options.py) --------------------------------

OPTIONS_PATH = "gt/drivers/options.py"

# options.py is written by hand but for the block between these lines, which holds the catalog's
# rows
OPTIONS_BEGIN = (
    "# --- generated by `python -m gridtwin.sensortypes --write` from "
    "host/gridtwin/sensortypes.py ---\n"
)
OPTIONS_END = "# --- end of the generated block ---\n"


def _lit(v: Any) -> str:
    # Python source for a literal, strings in double quotes as the firmware writes them
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_lit(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def _check_literal(o: Opt) -> str:
    if o.check:
        return _lit(o.check)
    if o.choices:
        return _lit(list(o.choices))
    if o.lo is not None:
        return _lit((o.lo, o.hi))
    return "None"


def options_block() -> str:
    """The generated block of firmware/gt/drivers/options.py: TYPES and every type's rows as
    (key, type, default, check), the check a (lo, hi) range, a list of choices or a check's name."""
    lines = [OPTIONS_BEGIN, f"TYPES = {_lit(tuple(TYPES))}\n", "_ROWS = {\n"]
    for t in TYPES.values():
        lines.append(f"    {_lit(t.name)}: (\n")
        for k, o in t.rows.items():
            lines.append(
                f"        ({_lit(k)}, {o.type.__name__}, {_lit(o.default)}, {_check_literal(o)}),\n"
            )
        lines.append("    ),\n")
    lines += ["}\n", OPTIONS_END]
    return "".join(lines)


def options_source(current: str) -> str:
    """options.py's text `current` with its generated block made the catalog's."""
    head, sep, rest = current.partition(OPTIONS_BEGIN)
    _, sep2, tail = rest.partition(OPTIONS_END)
    if not (sep and sep2):
        raise ValueError(f"{OPTIONS_PATH} has lost its generated block's marker lines")
    return head + options_block() + tail


# --- the docs (docs/sensors.md) ----------------------------------------------------------------

DOCS_PATH = "docs/sensors.md"


def _range(o: Opt) -> str:
    if o.choices:
        return ", ".join(str(c) for c in o.choices)
    if o.lo is not None:
        return f"{o.lo:g}..{o.hi:g}" if isinstance(o.lo, float) else f"{o.lo}..{o.hi}"
    return {"rom": "16 hex digits, family 28", "cal": "[v0, y0, v1, y1], v0 != v1"}.get(o.check, "")


def docs_source() -> str:
    """The text of docs/sensors.md: every sensor type, its keys and its metrics."""
    out = [
        "# Sensor types\n",
        "Generated from `host/gridtwin/sensortypes.py` by `python -m gridtwin.sensortypes "
        "--docs`; do not",
        "edit. A sensor in site.toml is `{ id = \"...\", type = \"...\", ...keys }` in a node's "
        "`sensors`;",
        "its metrics are named `<id>_<suffix>` (`<id>` alone for an empty suffix). `twin` (host "
        "only)",
        "names the twin metric the sensor measures on a virtual board.\n",
    ]
    for t in TYPES.values():
        wired = {
            "i2c": f"I2C{f' at 0x{t.addr:02x}' if t.addr else ''}",
            "onewire": "1-Wire",
            "adc": "an ESP32 ADC1 pin",
        }[t.bus]
        out.append(f"## `{t.name}` ({wired})\n")
        out.append("| key | type | default | range | meaning |\n| --- | --- | --- | --- | --- |")
        for k, o in t.rows.items():
            d = (
                f"0x{o.default:02x}"
                if k == "addr"
                else repr(o.default)
                if isinstance(o.default, str)
                else o.default
            )
            out.append(f"| `{k}` | {o.type.__name__} | `{d}` | {_range(o)} | {o.help} |")
        out.append("")
        if t.analog:
            out.append(f"Metric: `<id>`, {t.analog}, in the config's `unit`.\n")
        else:
            out.append("| metric | unit | quantity | meaning |\n| --- | --- | --- | --- |")
            for sfx, unit, q, d in metrics(t.name):
                out.append(f"| `<id>{'_' + sfx if sfx else ''}` | {unit or '-'} | {q} | {d} |")
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gridtwin.sensortypes",
        description="write what is generated from the sensor-type catalog "
        "(without options: print options.py's generated block)",
    )
    ap.add_argument("--write", action="store_true", help="write firmware/gt/drivers/options.py")
    ap.add_argument("--docs", action="store_true", help="write docs/sensors.md (in the checkout)")
    args = ap.parse_args(argv)
    if not (args.write or args.docs):
        sys.stdout.write(options_block())
    if args.write:
        path = pathlib.Path(fwsource._firmware_dir()) / OPTIONS_PATH
        path.write_text(options_source(path.read_text()))
        print(f"wrote {path}")
    if args.docs:
        path = pathlib.Path(__file__).resolve().parents[2] / DOCS_PATH
        path.write_text(docs_source())
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
