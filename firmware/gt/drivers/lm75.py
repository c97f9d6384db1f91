# LM75 / LM75A temperature sensor on I2C (NXP LM75A datasheet). The temperature register holds an
# 11-bit two's complement value in its top bits, 0.125 degC per LSB; 9-bit parts (LM75B/TI) leave
# the low bits zero, so the same conversion serves both. The TMP102 (tmp102.py) keeps the register
# layout with more bits. Config rows: gt/drivers/options.py.
METRICS = (("", "degC", -55, 125),)


class LM75:
    SHIFT = 5  # the value sits in D15..D5
    LSB = 0.125  # degC

    def __init__(self, i2c, addr=0x48):
        self.i2c = i2c
        self.addr = addr
        self._b = bytearray(2)
        self.setup()

    def setup(self):
        self.i2c.writeto_mem(
            self.addr, 1, b"\x00"
        )  # configuration: normal mode, converting continuously

    def read(self):
        b = self._b
        self.i2c.readfrom_mem_into(self.addr, 0, b)  # temperature register
        raw = (b[0] << 8) | b[1]
        if raw & 0x8000:
            raw -= 0x10000
        return ((raw >> self.SHIFT) * self.LSB,)


def make(spec, hw):
    return LM75(hw.i2c(spec["bus"]), spec["addr"])
