# TMP102 temperature sensor on I2C (TI SBOS397C): the LM75's register layout (lm75.py) with a 12-bit
# value in D15..D4, 0.0625 degC per LSB. It converts continuously (4 Hz) from power-on, so reading
# needs no setup. Config rows: gt/drivers/options.py.
from gt.drivers.lm75 import LM75

METRICS = (("", "degC", -55, 128),)


class TMP102(LM75):
    SHIFT = 4
    LSB = 0.0625

    def setup(self):
        self.i2c.readfrom_mem_into(
            self.addr, 1, self._b
        )  # the configuration register: no answer, no chip


def make(spec, hw):
    return TMP102(hw.i2c(spec["bus"]), spec["addr"])
