# INA219 current/power monitor on I2C (TI SBOS448). The chip measures the shunt voltage (10 uV/LSB)
# and the bus voltage (4 mV/LSB, in bits 15..3); from the calibration register it also computes
# current and power itself, so what we read back is already scaled by our chosen current LSB.
from micropython import const

_CONFIG = const(0x00)
_SHUNT = const(0x01)
_BUS = const(0x02)
_POWER = const(0x03)
_CURRENT = const(0x04)
_CAL = const(0x05)
# 32 V bus range, PGA /8 (+-320 mV shunt), 12-bit conversions, shunt and bus continuous (POR value)
_CFG = const(0x399F)
_OVF = const(0x01)  # bus voltage register bit 0: current or power calculation overflowed

METRICS = (("v", "V", 0, 32), ("a", "A", -1000, 1000), ("w", "W", -32000, 32000))


def current_lsb(max_a):
    # Datasheet eq. 2: Current_LSB >= Max_Expected_I / 2^15. Like the datasheet example (18.3 uA
    # -> 20 uA) we round up to 1, 2 or 5 x 10^n so readings are round numbers of the LSB.
    m = max_a / 32768
    d = 1e-9
    while d * 10 <= m:
        d *= 10
    for k in (1, 2, 5, 10):
        if k * d >= m * 0.999999:
            return k * d
    return 10 * d


class INA219:
    METRICS = METRICS
    CAL_K = 0.04096  # datasheet eq. 1: Cal = trunc(0.04096 / (Current_LSB * R_shunt))
    P_MUL = 20  # Power_LSB = 20 * Current_LSB
    CAL_MASK = 0xFFFE  # bit 0 of the calibration register is void

    def __init__(self, i2c, addr, shunt_ohm, max_a):
        self.i2c = i2c
        self.addr = addr
        self.lsb = current_lsb(max_a)
        # + 1e-6: the quotient of two rounded floats may land just under the whole number
        self.cal = int(self.CAL_K / (self.lsb * shunt_ohm) + 1e-6) & self.CAL_MASK
        self._b = bytearray(2)
        self.setup()

    def _rd(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b)
        return (self._b[0] << 8) | self._b[1]

    def _wr(self, reg, v):
        self._b[0] = v >> 8
        self._b[1] = v & 0xFF
        self.i2c.writeto_mem(self.addr, reg, self._b)

    def setup(self):
        self._wr(_CONFIG, _CFG)
        self._wr(_CAL, self.cal)

    def _volts(self, raw):
        return (raw >> 3) * 0.004

    def _overflow(self, bus):
        return bus & _OVF

    def read(self):
        # A power glitch resets the chip: calibration 0 makes it report 0 A without complaint.
        if self._rd(_CAL) != self.cal:
            self.setup()
            raise ValueError("lost its calibration (chip reset?); restored")
        bus = self._rd(_BUS)
        if self._overflow(bus):
            raise ValueError("overflow: current or power beyond the calibrated range")
        i = self._rd(_CURRENT)
        if i & 0x8000:
            i -= 0x10000
        a = i * self.lsb
        # the power register holds the magnitude; give it the current's sign (export reads < 0)
        w = self._rd(_POWER) * self.P_MUL * self.lsb
        return (self._volts(bus), a, -w if i < 0 else w)


def options():
    from gt.config import between

    return {"addr": (int, 0x40, between(0x40, 0x4F), "I2C address (A1, A0 pins)"),
            "bus": (int, 0, between(0, 1), "I2C bus number"),
            "shunt_ohm": (float, 0.1, between(0.0001, 100), "shunt resistance in ohms"),
            "max_a": (float, 3.2, between(0.001, 1000), "largest current expected, in A")}


def make(spec, hw):
    return INA219(hw.i2c(spec["bus"]), spec["addr"], spec["shunt_ohm"], spec["max_a"])
