# TMP102 digital temperature sensor (TI SBOS397C):
#   0x00 Temp (2 bytes, read-only): 12-bit two's complement in D15..D4, 0.0625 degC per LSB
#   0x01 Config (2 bytes, power-on 0x60A0), 0x02 T_LOW (75 degC), 0x03 T_HIGH (80 degC)
# World spec: {"model": "tmp102", "addr": 72, "temp_c": 21.5 | schedule}
# "noise": {"temp_c": rms, "seed": n} (optional, fakes/noise.py)
from fakes.i2cdev import I2CDevice, be16, s16
from fakes.noise import Noise


class Device(I2CDevice):
    def __init__(self, spec):
        super().__init__(spec)
        self.regs = [0, 0x60A0, 75 << 8, 80 << 8]
        self.noise = Noise(spec)

    def read(self, ptr, n):
        if ptr == 0:
            t = self.noise.add("temp_c", self.v("temp_c", 25.0))
            r = be16(s16(round(t * 16)) << 4)  # 0.0625 degC steps in D15..D4
        elif ptr < 4:
            r = be16(self.regs[ptr])
        else:
            r = b"\xff"
        return (r * n)[:n]

    def write(self, ptr, data):
        if 0 < ptr < 4 and len(data) >= 2:
            self.regs[ptr] = (data[0] << 8) | data[1]
