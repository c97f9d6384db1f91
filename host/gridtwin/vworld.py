"""The fake world of a virtual node: the chips behind every sensor of its rendered config.

``world_for(cfg, live_prefix="", clock=None, wlan=None)`` gives the world document
(tests/shim/_world.py's format) that provides, for each sensor of a rendered config.json, the
register-level chip model (tests/shim/fakes/) its driver talks to, plus the OLED the config names.
Every quantity a chip measures is ``{"live": "<prefix><sensor id>.<key>", "default": <plausible
constant>}``: the shim reads it from the world's ``live`` file (which the twin rewrites, see
gridtwin.twin.sensorfeed) and falls back to the constant while the file does not name it. ``<key>``
is the chip model's own world key (``current_a``, ``bus_v``, ``ain0``..``ain3``, ``temp_c``, ``hz``,
...); the ESP32's ADC, which has no chip model, is keyed ``pin_v``: the volts at its pin.

``QUANTITIES`` says which firmware metric of a sensor (its suffix in gt/drivers/*.py METRICS) a
chip quantity drives, and ``chip_value`` turns a value of that metric into what the chip must see
so that the firmware reads the value back: the inverse of an analog channel's linear calibration,
amps for a shunt monitor, degC for the thermometers, Hz for the ADE7953.
"""

from __future__ import annotations

import zlib

# sensor type -> {firmware metric suffix: chip world key}. Only quantities the chip measures:
# power ("w") is computed by the INA2xx and ADE7953 from current and voltage, so it is not here.
# The analog inputs' key depends on the channel (ads1115: ain<n>; adc: pin_v), see quantity_key().
QUANTITIES: dict[str, dict[str, str]] = {
    "lm75": {"": "temp_c"},
    "ds18b20": {"": "temp_c"},
    "ina219": {"v": "bus_v", "a": "current_a"},
    "ina226": {"v": "bus_v", "a": "current_a"},
    "ade7953": {"v": "v_rms", "a": "i_rms", "pf": "pf", "hz": "hz"},
    "bme280": {"t": "temp_c", "rh": "rh", "p": "pressure_pa"},
    "ads1115": {"": "ain"},
    "adc": {"": "pin_v"},
}
# What `twin = "metric"` (a plain string) feeds on a sensor with several metrics: a shunt monitor
# is there for its current (its bus input, 26/36 V at most, rarely sees the plant's voltage).
# Types not listed here with several metrics need the table form, e.g. twin = { hz = "f_hz" }.
PRIMARY: dict[str, str] = {"ina219": "a", "ina226": "a"}
for _t, _q in QUANTITIES.items():
    if len(_q) == 1:
        PRIMARY[_t] = next(iter(_q))

_ADE_V_FS = 0.5 / 2 ** 0.5  # the ADE7953's full-scale input, volts rms (gt/drivers/ade7953.py)
ADC_MAX_V = 3.1  # the ESP32 ADC at 11 dB attenuation (gt/drivers/adc.py)
_UNSET = 1e9  # the lo/hi defaults of the analog inputs (firmware/gt/drivers/options.py): "no bound"


def quantity_key(sensor: dict, suffix: str) -> str:
    """The chip world key that drives metric `suffix` of `sensor` (a rendered sensor table)."""
    key = QUANTITIES[sensor["type"]][suffix]
    if key == "ain":
        # a differential pair is driven on its first input; the second stays at 0 V
        key = f"ain{sensor.get('input', '0')[0]}"
    return key


def cal_volts(sensor: dict, value: float) -> float:
    """The input volts an analog channel's calibration [v0, y0, v1, y1] turns into `value`."""
    v0, y0, v1, y1 = sensor.get("cal", [0, 0, 1, 1])
    return v0 + (value - y0) * (v1 - v0) / (y1 - y0)


def chip_value(sensor: dict, suffix: str, value: float) -> float:
    """What the chip must measure for the firmware to read `value` as metric `suffix`."""
    if sensor["type"] in ("ads1115", "adc"):
        return cal_volts(sensor, value)
    return value  # the other chips measure in the firmware's own units (A, V, degC, Hz, Pa, %RH)


def plausible(sensor: dict) -> float:
    """A calibrated value for an analog channel's default: the middle of its plausible range when
    the site gives one, else the calibration's first point."""
    lo, hi = sensor.get("lo", -_UNSET), sensor.get("hi", _UNSET)
    if -_UNSET < lo < hi < _UNSET:
        return (lo + hi) / 2
    return sensor.get("cal", [0, 0, 1, 1])[1]


def _live(prefix: str, sensor: dict, key: str, default: float) -> dict:
    return {"live": f"{prefix}{sensor['id']}.{key}", "default": round(float(default), 6)}


def rom_for(sensor_id: str) -> str:
    """A DS18B20 ROM for a sensor the site gives none: family 0x28, a serial made from the id (the
    same every run), and the Dallas CRC-8 the 1-Wire bus checks."""
    serial = zlib.crc32(sensor_id.encode()).to_bytes(4, "big") + b"\x00\x00"
    body = bytes([0x28]) + serial
    return (body + bytes([_crc8(body)])).hex()


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def world_for(cfg: dict, *, live_prefix: str = "", clock: dict | None = None,
              wlan: dict | None = None) -> dict:
    """The world for a rendered node config: its chips (and OLED), every measured quantity live."""
    world: dict = {}
    if clock is not None:
        world["clock"] = dict(clock)
    if wlan is not None:
        world["wlan"] = dict(wlan)
    chips: dict[tuple, dict] = {}  # (bus, addr) -> chip spec: ADS1115 channels share one chip
    onewire: list[dict] = []
    adc: dict[str, dict] = {}
    pins = cfg.get("pins", {})
    p = live_prefix

    def chip(s, model, addr, **extra):
        spec = chips.setdefault((s.get("bus", 0), addr), {"bus": s.get("bus", 0), "model": model, "addr": addr})
        spec.update(extra)
        return spec

    for s in cfg.get("sensors", ()):
        t = s["type"]
        if t == "lm75":
            chip(s, "lm75", s["addr"], temp_c=_live(p, s, "temp_c", 25.0))
        elif t in ("ina219", "ina226"):
            # a quarter of the calibrated range: inside the shunt input whatever the site chose
            chip(s, t, s["addr"], shunt_ohm=s["shunt_ohm"],
                 current_a=_live(p, s, "current_a", s["max_a"] / 4), bus_v=_live(p, s, "bus_v", 12.0))
        elif t == "ade7953":
            # 230 V where the divider brings it inside the input's range, else half of that range
            v = 230.0 if 230.0 / s["v_div"] < 0.9 * _ADE_V_FS else 0.5 * _ADE_V_FS * s["v_div"]
            i = min(5.0, 0.5 * _ADE_V_FS / s["i_ohm"])
            chip(s, "ade7953", 0x38, v_div=s["v_div"], i_ohm=s["i_ohm"], ptr_bytes=2,
                 v_rms=_live(p, s, "v_rms", v), i_rms=_live(p, s, "i_rms", i),
                 pf=_live(p, s, "pf", 0.95), hz=_live(p, s, "hz", 50.0))
        elif t == "bme280":
            chip(s, "bme280", s["addr"], temp_c=_live(p, s, "temp_c", 21.0), rh=_live(p, s, "rh", 45.0),
                 pressure_pa=_live(p, s, "pressure_pa", 101325.0))
        elif t == "ads1115":
            key = quantity_key(s, "")
            chip(s, "ads1115", s["addr"], **{key: _live(p, s, key, cal_volts(s, plausible(s)))})
        elif t == "ds18b20":
            onewire.append({"pin": pins.get("onewire", -1), "model": "ds18b20",
                            "rom": s.get("rom") or rom_for(s["id"]), "temp_c": _live(p, s, "temp_c", 25.0)})
        elif t == "adc":
            adc[str(s["pin"])] = _live(p, s, "pin_v", cal_volts(s, plausible(s)))
        else:
            raise ValueError(f"sensor {s['id']}: no chip model for type {t!r}")
    disp = cfg.get("display", {})
    if disp.get("kind", "none") != "none":
        chip({}, disp["kind"], disp.get("addr", 0x3C))
    if chips:
        world["i2c"] = list(chips.values())
    if onewire:
        world["onewire"] = onewire
    if adc:
        world["adc"] = adc
    return world
