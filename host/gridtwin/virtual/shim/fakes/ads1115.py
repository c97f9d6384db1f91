# ADS1115 16-bit delta-sigma ADC (TI SBAS444D). Registers, 16 bits big-endian:
# 0x00 Conversion (signed; +FS -> 0x7FFF, -FS -> 0x8000, clipped beyond)   0x01 Config (POR 0x8583):
#  bit 15 OS (write 1: start a single conversion; reads 0 while converting, 1 when idle),
#   14..12 MUX (000 AIN0-AIN1, 001 AIN0-AIN3, 010 AIN1-AIN3, 011 AIN2-AIN3, 1xx AINx-GND),
#   11..9 PGA (+-6.144, 4.096, 2.048, 1.024, 0.512, 0.256 V), 8 MODE (1 single-shot),
#   7..5 DR (8..860 SPS; conversion takes 1/DR), 4..0 comparator   0x02/0x03 Lo/Hi threshold
# World spec: {"model": "ads1115", "addr": 72, "ain0": volts, "ain1": ..., "ain2": ..., "ain3": ...}
from _world import clock as _clock
from fakes.noise import Noise
from fakes.powered import PoweredDevice, u16
from fakes.i2cdev import be16

_FSR = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
_PAIRS = ((0, 1), (0, 3), (1, 3), (2, 3))


class Device(PoweredDevice):
    def __init__(self, spec):
        self.noise = Noise(spec)  # "noise": {"ain": rms volts, "seed": n}
        super().__init__(spec)

    def power_on(self):
        self.config = 0x8583
        self.conv = 0
        self.lo, self.hi = 0x8000, 0x7FFF
        self.done_at = None

    def _convert(self):
        m = (self.config >> 12) & 7
        ain = lambda i: float(self.v("ain%d" % i, 0.0))
        v = self.noise.add("ain", ain(m - 4) if m >= 4 else ain(_PAIRS[m][0]) - ain(_PAIRS[m][1]))
        code = int(round(v / _FSR[(self.config >> 9) & 7] * 32768))
        self.conv = max(-32768, min(32767, code)) & 0xFFFF

    def _settle(self):
        if self.done_at is not None and _clock.world_ms() >= self.done_at:
            self._convert()
            self.done_at = None

    def read(self, ptr, n):
        self._settle()
        if ptr == 0:
            r = self.conv
        elif ptr == 1:
            r = (self.config & 0x7FFF) | (0 if self.done_at is not None else 0x8000)
        elif ptr == 2:
            r = self.lo
        else:
            r = self.hi
        return (be16(r) * 2)[:n]

    def write(self, ptr, data):
        v = u16(data)
        if v is None:
            return
        if ptr == 1:
            self.config = v & 0x7FFF
            if v & 0x8000 and v & 0x0100:  # single-shot start
                ms = 1000 / _SPS[(v >> 5) & 7]
                self.done_at = _clock.world_ms() + int(ms + 0.999)
        elif ptr == 2:
            self.lo = v
        elif ptr == 3:
            self.hi = v
