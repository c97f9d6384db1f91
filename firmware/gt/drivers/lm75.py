# LM75 / LM75A temperature sensor on I2C (NXP LM75A datasheet). The temperature register holds an
# 11-bit two's complement value in its top bits, 0.125 degC per LSB; 9-bit parts (LM75B/TI) leave
# the low bits zero, so the same conversion serves both.
from micropython import const

_TEMP = const(0x00)
_CONF = const(0x01)

METRICS = (("", "degC", -55, 125),)


class LM75:
    METRICS = METRICS

    def __init__(self, i2c, addr=0x48):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(2)
        i2c.writeto_mem(addr, _CONF, b"\x00")  # normal mode: converting continuously

    def temperature(self):
        self.i2c.readfrom_mem_into(self.addr, _TEMP, self._buf)
        raw = (self._buf[0] << 8) | self._buf[1]
        if raw & 0x8000:
            raw -= 0x10000
        return (raw >> 5) * 0.125

    def read(self):
        return (self.temperature(),)


def options():
    from gt.config import between

    return {"addr": (int, 0x48, between(0x48, 0x4F), "I2C address (A2..A0 pins)"),
            "bus": (int, 0, between(0, 1), "I2C bus number")}


def make(spec, hw):
    return LM75(hw.i2c(spec["bus"]), spec["addr"])
