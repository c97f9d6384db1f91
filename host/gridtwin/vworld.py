"""The fake world of a virtual node: the chips behind every sensor of its rendered config.

``world_for(cfg, live_prefix="", clock=None, wlan=None)`` gives the world document
(virtual/shim/_world.py's format) that provides, for each sensor of a rendered config.json, the
register-level chip model (virtual/shim/fakes/) its driver talks to, plus the OLED the config names.
Every quantity a chip measures is ``{"live": "<prefix><sensor id>.<key>", "default": <plausible
constant>}``: the shim reads it from the world's ``live`` file (which the twin rewrites, see
gridtwin.twin.sensorfeed) and falls back to the constant while the file does not name it. ``<key>``
is the chip model's own world key (``current_a``, ``bus_v``, ``ain0``..``ain3``, ``temp_c``, ``hz``,
...); the ESP32's ADC, which has no chip model, is keyed ``pin_v``: the volts at its pin.

``QUANTITIES`` says which firmware metric of a sensor (its suffix in gt/drivers/*.py METRICS) a
chip quantity drives, and ``chip_value`` turns a value of that metric into what the chip must see
so that the firmware reads the value back: the inverse of an analog channel's linear calibration,
amps for a shunt monitor (and its bus volts after the VBUS divider, ``v_div``), degC for the
thermometers, Hz for the ADE7953.

``CHIPS`` is the one catalog of what each chip resolves and how noisy its readings are, from its
data sheet: the chip models add that noise (seeded per sensor, when ``world_for`` is given a seed)
and ``tolerance()`` gives the error a reading may have against the value fed: what tests allow.

A plant-role node (gt/roles/plant.py) on a virtual board is wired as on a hardware-in-the-loop
bench (``PLANT_INPUTS``): digital inputs for supply and fault, analog inputs for load and battery,
which the twin drives like any chip (``plant_inputs``, ``plant_hil``).
"""

from __future__ import annotations

import zlib

from gridtwin import fwsource
from gridtwin.sensortypes import (  # noqa: F401
    ADC_MAX_V,
    PRIMARY,
    TYPES,
    UNSET,
    Chip,
    ain_key,
    cal_volts,
    current_lsb,
    ina_calibration,
    ina_constants,
    plausible,
)

# sensor type -> {firmware metric suffix: chip world key}, from the sensor-type catalog. Only
# quantities the chip measures: power ("w") is computed by the INA2xx and ADE7953 from current and
# voltage. The analog inputs' key depends on the channel (ads1115: ain<n>; adc: pin_v), see
# quantity_key(). PRIMARY: what `twin = "metric"` (a plain string) feeds.
QUANTITIES: dict[str, dict[str, str]] = {t.name: t.quantities for t in TYPES.values()}

# --- the chip catalog -----------------------------------------------------------------------------
#
# Per chip (each sensor type's `chip` in gridtwin.sensortypes): `lsb`, the step of each quantity the
# chip converts (in the unit of its world key, before the firmware's scaling), and `noise`, the RMS
# noise the chip model adds to it (same unit), each from the data sheet named in `source`. The
# models draw the noise as the sum of three uniform variates (Irwin-Hall): near-normal with that
# RMS, but bounded at NOISE_BOUND x RMS, so a test can state a hard tolerance. Data sheets give
# accuracy (offset, gain error) more often than noise; where one gives no noise figure the catalog
# says so and takes one LSB, the chip's own resolution. Offset and gain errors are not modelled: the
# twin stays the truth a reading is compared with.
NOISE_BOUND = 3.0

CHIPS: dict[str, Chip] = {t.name: t.chip for t in TYPES.values() if t.chip is not None}


def chip_noise(sensor: dict) -> dict:
    """The RMS noise of each converted quantity of a sensor's chip (CHIPS), for its world spec."""
    c = CHIPS.get(sensor["type"])
    if c is None:
        return {}
    noise = dict(c["noise"])
    if sensor["type"] == "ads1115":
        noise["ain"] = sensor.get("fsr", 2.048) / 32768
    return noise


def tolerance(
    sensor: dict, suffix: str, value: float, fed: dict | None = None, *, noise: bool = True
) -> float:
    """How far a firmware reading of metric `suffix` may be from the value fed (`value`, in the
    metric's units), from the catalog: one step of each quantity it is made of, plus the noise
    bound (noise=False: a world without a seed, whose chips add none); `fed` holds the sensor's
    other fed metrics (a power reading depends on v and a)."""
    t = sensor["type"]
    kind = TYPES[t]
    nb = NOISE_BOUND if noise else 0.0
    if kind.shunt_fs is not None:  # a shunt monitor (INA2xx)
        c = CHIPS[t]
        lsb = current_lsb(sensor["max_a"])
        cal = ina_calibration(t, sensor["shunt_ohm"], sensor["max_a"])
        shunt = c["lsb"]["shunt_v"] + nb * c["noise"]["shunt_v"]
        # the current register truncates (1 LSB) a shunt reading of its own step and noise, scaled
        # by a calibration register that is a whole number (eq. 1 truncated)
        da = (
            2 * lsb
            + shunt / sensor["shunt_ohm"]
            + abs((fed or {}).get("a", value if suffix == "a" else 0)) / cal
        )
        dv = (c["lsb"]["bus_v"] + nb * c["noise"]["bus_v"]) * sensor.get("v_div", 1.0)
        if suffix == "a":
            return da
        if suffix == "v":
            return dv
        f = fed or {}
        return (
            abs(f.get("v", 0.0)) * da
            + abs(f.get("a", 0.0)) * dv
            + da * dv
            + ina_constants(t)["P"] * lsb * sensor.get("v_div", 1.0)
        )
    if kind.analog:
        v0, y0, v1, y1 = sensor.get("cal", [0, 0, 1, 1])
        slope = abs((y1 - y0) / (v1 - v0))
        if kind.bus == "adc":
            return slope * 2e-6  # the shim's read_uv: whole microvolts (no ESP32 ADC model yet)
        step = sensor.get("fsr", 2.048) / 32768
        return slope * step * (1 + nb)
    if t == "ade7953":
        if suffix == "hz":
            # one period step (and its noise) at this frequency: f^2 / 223750 each
            return value * value / 223750 * (1 + nb) + 1e-6
        if suffix == "pf":
            return 2 / 32768
        rel = CHIPS[t]["noise"]["rms"] * nb + 1 / 9032007  # noise, and one step of the RMS code
        return abs(value) * rel * (3 if suffix == "w" else 1) + 1e-3
    key = QUANTITIES[t][suffix]
    c = CHIPS[t]
    step = c["lsb"][key]
    if t == "ds18b20":  # 9..11 bits: the undefined low bits are masked off (gt/drivers/ds18b20.py)
        step *= 2 ** (12 - sensor.get("bits", 12))
    return step + nb * c["noise"][key]


# --- plant-role nodes on a hardware-in-the-loop bench ---------------------------------------------
#
# A plant-role node simulates its component from commands; wired to a HIL bench (params "hil"), it
# reads what the component does from its inputs instead, every sample: digital inputs for supply
# (upstream power present; a generator: running) and fault, analog inputs (0..HIL_FS_V) for load
# (0..load_fs_kw) and a UPS's battery (0..100 %). The twin drives them on a virtual board.
HIL_FS_V = 3.0
PLANT_INPUTS = ("supply", "fault", "load", "batt")


def plant_hil(cfg: dict, load_fs_kw: float) -> dict:
    """The params "hil" of a plant-role node: free pins of its board for each input."""
    pins = cfg.get("pins", {})
    used = {
        v
        for k, v in pins.items()
        if k in ("i2c_scl", "i2c_sda", "onewire", "led", "button") and v >= 0
    }
    used |= {s["pin"] for s in cfg.get("sensors", ()) if TYPES[s["type"]].bus == "adc"}
    free = [p for p in range(1, 40) if p not in used]
    names = PLANT_INPUTS if cfg.get("role") == "ups" else PLANT_INPUTS[:3]
    hil = {f"{n}_pin": free[i] for i, n in enumerate(names)}
    hil["load_fs_kw"] = float(load_fs_kw)
    return hil


def plant_values(hil: dict, m: dict) -> dict:
    """The HIL inputs' live values (pins: 0/1, analog: volts) for plant metrics `m` (supply, fault,
    load_kw, batt_pct, as gt/roles/plant.py reports them)."""
    out = {}
    if "supply" in m:
        out["hil.supply"] = int(bool(m["supply"]))
    if "fault" in m:
        out["hil.fault"] = int(bool(m["fault"]))
    if "load_kw" in m:
        out["hil.load"] = round(max(0.0, min(m["load_kw"] / hil["load_fs_kw"], 1.0)) * HIL_FS_V, 7)
    if "batt_pct" in m and "batt_pin" in hil:
        out["hil.batt"] = round(max(0.0, min(m["batt_pct"] / 100.0, 1.0)) * HIL_FS_V, 7)
    return out


def plant_tolerance(hil: dict, metric: str) -> float:
    """What a HIL input resolves, in the plant metric's units (the shim's ADC: whole microvolts)."""
    if metric == "load_kw":
        return hil["load_fs_kw"] / HIL_FS_V * 2e-6 + 0.0005  # the role rounds to the watt
    if metric == "batt_pct":
        return 100.0 / HIL_FS_V * 2e-6 + 0.005  # the role rounds to 0.01 %
    return 0.0


def quantity_key(sensor: dict, suffix: str) -> str:
    """The chip world key that drives metric `suffix` of `sensor` (a rendered sensor table)."""
    key = QUANTITIES[sensor["type"]][suffix]
    return ain_key(sensor) if key == "ain" else key


def chip_value(sensor: dict, suffix: str, value: float) -> float:
    """What the chip must measure for the firmware to read `value` as metric `suffix`."""
    kind = TYPES[sensor["type"]]
    if kind.analog:
        return cal_volts(sensor, value)
    if suffix == "v" and kind.shunt_fs is not None:
        return value / sensor.get("v_div", 1.0)  # VBUS sees the bus through its divider
    return value  # the other chips measure in the firmware's own units (A, V, degC, Hz, Pa, %RH)


def _live(prefix: str, sensor: dict, key: str, default: float) -> dict:
    return {"live": f"{prefix}{sensor['id']}.{key}", "default": round(float(default), 6)}


def rom_for(sensor_id: str) -> str:
    """A DS18B20 ROM for a sensor the site gives none: family 0x28, a serial made from the id (the
    same every run), and the Dallas CRC-8 the 1-Wire bus checks."""
    serial = zlib.crc32(sensor_id.encode()).to_bytes(4, "big") + b"\x00\x00"
    body = bytes([0x28]) + serial
    return (body + bytes([_crc8(body)])).hex()


def _crc8(data: bytes) -> int:
    # the Dallas CRC-8 of the shim's 1-Wire bus (virtual/shim/onewire.py), which checks the ROM
    return fwsource.shim_function("onewire.py", "crc8")(data)


def world_for(
    cfg: dict,
    *,
    live_prefix: str = "",
    clock: dict | None = None,
    wlan: dict | None = None,
    seed: int | None = None,
) -> dict:
    """The world for a rendered node config: its chips (and OLED), every measured quantity live.
    With a seed every chip adds its data sheet's noise (CHIPS), its own stream per sensor; without
    one the chips convert exactly (to their resolution). A plant-role node wired to a HIL bench
    (params "hil") gets its inputs, live as "hil.<input>"."""
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
        spec = chips.setdefault(
            (s.get("bus", 0), addr), {"bus": s.get("bus", 0), "model": model, "addr": addr}
        )
        spec.update(extra)
        if seed is not None and s.get("type") in CHIPS:
            spec.setdefault("noise", {}).update(_noise(s))
        return spec

    def _noise(s):
        n = chip_noise(s)
        if s["type"] == "ads1115":  # one chip, several channels: the noise is the chip's
            n = {"ain": n["ain"]}
        n["seed"] = zlib.crc32(f"{cfg.get('node', '')}/{s['id']}".encode()) ^ (seed or 0)
        return n

    for s in cfg.get("sensors", ()):
        t = TYPES.get(s["type"])
        if t is None:
            raise ValueError(f"sensor {s['id']}: no chip model for type {s['type']!r}")
        fixed, idle = t.world(s)
        live = {key: _live(p, s, key, value) for key, value in idle.items()}
        if t.bus == "i2c":
            chip(s, t.model, t.addr if t.addr is not None else s["addr"], **fixed, **live)
        elif t.bus == "onewire":
            ow = {
                "pin": pins.get("onewire", -1),
                "model": t.model,
                "rom": s.get("rom") or rom_for(s["id"]),
                **fixed,
                **live,
            }
            if seed is not None:
                ow["noise"] = _noise(s)
            onewire.append(ow)
        else:  # the ESP32's own ADC: the volts at the pin
            adc[str(s["pin"])] = live["pin_v"]
    hil = (cfg.get("params") or {}).get("hil")
    if hil:
        # the bench's idle state: supply present, no fault, a quarter load, a full battery
        digital = {"supply": 1, "fault": 0}
        analog = {"load": 0.25 * HIL_FS_V, "batt": HIL_FS_V}
        for name in PLANT_INPUTS:
            pin = hil.get(f"{name}_pin")
            if pin is None:
                continue
            if name in digital:
                world.setdefault("pins", {})[str(pin)] = {
                    "live": f"{p}hil.{name}",
                    "default": digital[name],
                }
            else:
                adc[str(pin)] = {"live": f"{p}hil.{name}", "default": analog[name]}
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
