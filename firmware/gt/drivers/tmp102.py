# TMP102 temperature sensor on I2C (TI SBOS397C). The temperature register holds a 12-bit two's
# complement value in its top bits, 0.0625 degC per LSB; the chip converts continuously (4 Hz)
# from power-on, so reading needs no setup. Config rows: gt/drivers/options.py.
METRICS = (("", "degC", -55, 128),)


class TMP102:
    def __init__(self, i2c, addr=0x48):
        self.i2c = i2c
        self.addr = addr
        self._b = bytearray(2)
        i2c.readfrom_mem_into(addr, 1, self._b)  # the configuration register: no answer, no chip

    def read(self):
        b = self._b
        self.i2c.readfrom_mem_into(self.addr, 0, b)  # temperature register
        raw = (b[0] << 8) | b[1]
        if raw & 0x8000:
            raw -= 0x10000
        return ((raw >> 4) * 0.0625,)


def make(spec, hw):
    return TMP102(hw.i2c(spec["bus"]), spec["addr"])
