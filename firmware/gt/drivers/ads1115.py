# ADS1115 16-bit ADC on I2C (TI SBAS444), single-shot: each read writes the config with OS=1 to
# start one conversion, waits for OS to read back 1 (done), then reads the signed result. A result
# at either end of the scale (0x7FFF / 0x8000) means the input is beyond the full-scale range.
import time
from micropython import const
from gt.drivers import linear

_CONV = const(0x00)
_CONFIG = const(0x01)
_OS = const(0x8000)
_SINGLE = const(0x0100)
_DR_128 = const(0x0080)  # 128 samples/s: 7.8 ms per conversion
_COMP_OFF = const(0x0003)
# full-scale range (V) -> PGA bits 11..9
_FSR = {6.144: 0, 4.096: 1, 2.048: 2, 1.024: 3, 0.512: 4, 0.256: 5}
# input -> MUX bits 14..12: single-ended AIN0..3 against GND, or the differential pairs
_MUX = {"0": 4, "1": 5, "2": 6, "3": 7, "0-1": 0, "0-3": 1, "1-3": 2, "2-3": 3}

METRICS = (("", "V", -1e9, 1e9),)


class ADS1115(linear.Linear):
    def __init__(self, i2c, addr, spec):
        super().__init__(spec)
        self.i2c = i2c
        self.addr = addr
        self.lsb = spec["fsr"] / 32768
        cfg = _OS | (_MUX[spec["input"]] << 12) | (_FSR[spec["fsr"]] << 9) | _SINGLE | _DR_128 | _COMP_OFF
        self._cfg = bytes((cfg >> 8, cfg & 0xFF))
        self._b = bytearray(2)
        i2c.readfrom_mem_into(addr, _CONFIG, self._b)  # probe: NACK -> OSError now

    def read(self):
        i2c, a, b = self.i2c, self.addr, self._b
        i2c.writeto_mem(a, _CONFIG, self._cfg)
        for _ in range(10):
            time.sleep_ms(8)
            i2c.readfrom_mem_into(a, _CONFIG, b)
            if b[0] & 0x80:
                break
        else:
            raise OSError(116)  # ETIMEDOUT: the conversion never finished
        i2c.readfrom_mem_into(a, _CONV, b)
        raw = (b[0] << 8) | b[1]
        if raw == 0x7FFF or raw == 0x8000:
            raise ValueError("input beyond the +-%s V full-scale range" % (self.lsb * 32768))
        if raw & 0x8000:
            raw -= 0x10000
        return (self.scale(raw * self.lsb),)


def options():
    from gt.config import between, one_of

    def fsr(v):
        if v not in _FSR:
            return "must be one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256, got %r" % v

    return linear.options({
        "addr": (int, 0x48, between(0x48, 0x4B), "I2C address (ADDR pin)"),
        "bus": (int, 0, between(0, 1), "I2C bus number"),
        "input": (str, "0", one_of(*_MUX), "AIN0..3 ('0'..'3') or a pair ('0-1', '2-3', ...)"),
        "fsr": (float, 2.048, fsr, "full-scale range in volts (the PGA setting)")})


metrics = linear.metrics


def make(spec, hw):
    return ADS1115(hw.i2c(spec["bus"]), spec["addr"], spec)
