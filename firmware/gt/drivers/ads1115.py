# ADS1115 16-bit ADC on I2C (TI SBAS444), single-shot: each read writes the config with OS=1 to
# start one conversion, waits for OS to read back 1 (done), then reads the signed result. A result
# at either end of the scale (0x7FFF / 0x8000) means the input is beyond the full-scale range.
# Config rows: gt/drivers/options.py. Unit and range come from the config.
import time
from micropython import const
from gt.drivers.linear import Linear

_CONV = const(0x00)
_CONFIG = const(0x01)
# OS (start), single-shot, 128 samples/s (7.8 ms a conversion), comparator off
_CFG = const(0x8000 | 0x0100 | 0x0080 | 0x0003)


class ADS1115(Linear):
    def __init__(self, i2c, addr, spec):
        super().__init__(spec)
        self.i2c = i2c
        self.addr = addr
        fsr = spec["fsr"]
        self.lsb = fsr / 32768
        # PGA bits 11..9: 0 for +-6.144 V, 1 for +-4.096 V, then each step halves the range
        pga, f = 1, 4.096
        while f > fsr * 1.001:
            f /= 2
            pga += 1
        if fsr > 5:
            pga = 0
        # MUX bits 14..12: 4..7 single-ended AIN0..3; pairs 0-1, 0-3, 1-3, 2-3 are 0..3
        s = spec["input"]
        mux = 4 + int(s) if len(s) == 1 else 0 if s[2] == "1" else int(s[0]) + 1
        cfg = _CFG | (mux << 12) | (pga << 9)
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


def make(spec, hw):
    return ADS1115(hw.i2c(spec["bus"]), spec["addr"], spec)
