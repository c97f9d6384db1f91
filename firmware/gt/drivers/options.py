# The config rows of every sensor type (see gt/config.py for the row format). They are needed only
# while config.json is validated: gt/startup.py drops this module with the validator, so the
# running node keeps none of these tables, help texts and checks in RAM (the driver modules, which
# stay loaded, carry only what reading a chip needs).
from gt.config import between, one_of

_FSR = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)  # gt/drivers/ads1115.py's PGA settings
_MUX = ("0", "1", "2", "3", "0-1", "0-3", "1-3", "2-3")  # and its inputs


class _Type:
    # what the validator asks of a sensor type: options() -> its rows
    def __init__(self, fn):
        self.options = fn


def of(t):
    return _Type(globals()[t])


def _bus():
    return {"bus": (int, 0, between(0, 1), "I2C bus number")}


def _i2c(addr, hi, pins):
    r = _bus()
    r["addr"] = (int, addr, between(addr, hi), "I2C address (%s)" % pins)
    return r


def lm75():
    return _i2c(0x48, 0x4F, "A2..A0 pins")


def ina219(shunt=0.1, max_a=3.2):
    r = _i2c(0x40, 0x4F, "A1, A0 pins")
    r["shunt_ohm"] = (float, shunt, between(0.00001, 100),
                      "shunt resistance in ohms (a 75 mV, 1000 A shunt: 0.000075)")
    r["max_a"] = (float, max_a, between(0.001, 1000), "largest current expected, in A")
    r["v_div"] = (float, 1.0, between(1, 1000),
                  "divider ratio in front of VBUS, bus V / VBUS V (1: VBUS on the bus itself)")
    return r


def ina226():
    return ina219(0.002, 20.0)


def ade7953():
    r = _bus()
    r["bus"] = (int, 0, between(0, 1), "I2C bus number (the ADE7953 is always at 0x38)")
    r["v_div"] = (float, 1001.0, between(1, 100000), "voltage divider ratio, line V / input V")
    r["i_ohm"] = (float, 0.005, between(0.00001, 1000),
                  "input volts per line amp: shunt ohms, or CT burden ohms / turns")
    return r


def bme280():
    return _i2c(0x76, 0x77, "SDO pin low 0x76, high 0x77")


def ds18b20():
    def rom(v):
        if v and (len(v) != 16 or v[:2] != "28"):
            return "must be the 16 hex digits of a DS18B20 ROM (family 28), got %r" % v

    return {"rom": (str, "", rom, "ROM code in hex; empty when it is alone on the wire"),
            "bits": (int, 12, between(9, 12), "resolution in bits (9: 94 ms .. 12: 750 ms)")}


def _linear(r):
    # the two-point calibration of the analog inputs (gt/drivers/linear.py)
    def cal(v):
        if len(v) != 4 or not all(isinstance(x, (int, float)) for x in v) or v[0] == v[2]:
            return "must be [v0, y0, v1, y1] with v0 != v1, got %r" % (v,)

    r["cal"] = (list, [0, 0, 1, 1], cal, "two points [v0, y0, v1, y1]: v0 volts read y0")
    r["unit"] = (str, "V", None, "unit of the calibrated value")
    r["lo"] = (float, -1e9, None, "lowest plausible value; below it the sensor is bad")
    r["hi"] = (float, 1e9, None, "highest plausible value")
    return r


def ads1115():
    def fsr(v):
        if v not in _FSR:
            return "must be one of %s, got %r" % (", ".join(str(x) for x in _FSR), v)

    r = _i2c(0x48, 0x4B, "ADDR pin")
    r["input"] = (str, "0", one_of(*_MUX), "AIN0..3 ('0'..'3') or a pair ('0-1', '2-3', ...)")
    r["fsr"] = (float, 2.048, fsr, "full-scale range in volts (the PGA setting)")
    return _linear(r)


def adc():
    return _linear({"pin": (int, 34, between(0, 48), "ADC pin (ADC1 pins: ADC2 stops with Wi-Fi)"),
                    "samples": (int, 8, between(1, 256), "readings averaged per sample")})
