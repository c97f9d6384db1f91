# LM75A digital temperature sensor (NXP LM75A datasheet, rev. 9):
#   0x00 Temp  (2 bytes, read-only): 11-bit two's complement in D15..D5, 0.125 degC per LSB
#   0x01 Conf  (1 byte): bit0 SHUTDOWN (conversion stops, Temp holds its last value)
#   0x02 Thyst (2 bytes, default 75 degC), 0x03 Tos (2 bytes, default 80 degC): 9-bit in D15..D7
# The pointer does not auto-increment; reading past a register repeats it.
# World spec: {"model": "lm75", "addr": 72, "temp_c": 21.5 | schedule}
# "noise": {"temp_c": rms, "seed": n} (optional, fakes/noise.py)
from fakes.i2cdev import I2CDevice, be16, s16
from fakes.noise import Noise

_TEMP = const(0)
_CONF = const(1)
_THYST = const(2)
_TOS = const(3)


class Device(I2CDevice):
    def __init__(self, spec):
        super().__init__(spec)
        self.conf = 0
        self.thyst = 75 * 256
        self.tos = 80 * 256
        self.last = 0
        self.noise = Noise(spec)

    def _temp_reg(self):
        if not self.conf & 1:
            t = self.noise.add("temp_c", self.v("temp_c", 25.0))
            self.last = s16(round(t * 8)) << 5  # 0.125 degC steps in D15..D5
        return be16(self.last)

    def read(self, ptr, n):
        if ptr == _TEMP:
            r = self._temp_reg()
        elif ptr == _CONF:
            r = bytes((self.conf,))
        elif ptr == _THYST:
            r = be16(self.thyst)
        elif ptr == _TOS:
            r = be16(self.tos)
        else:
            r = b"\xff"
        return (r * n)[:n]

    def write(self, ptr, data):
        if ptr == _CONF and data:
            self.conf = data[0] & 0x1F
        elif ptr == _THYST and len(data) >= 2:
            self.thyst = ((data[0] << 8) | data[1]) & 0xFF80
        elif ptr == _TOS and len(data) >= 2:
            self.tos = ((data[0] << 8) | data[1]) & 0xFF80
