# INA226 current/power monitor on I2C (TI SBOS547). Same idea as the INA219 (our ina219 module):
# shunt voltage 2.5 uV/LSB, bus voltage 1.25 mV/LSB (not shifted), the chip computes current and
# power from the calibration register; the overflow flag lives in the Mask/Enable register.
from micropython import const
from gt.drivers.ina219 import INA219

_CONFIG = const(0x00)
_MASK = const(0x06)
_MFR_ID = const(0xFE)
_TI = const(0x5449)  # "TI"
# averages of 16, 1.1 ms bus and shunt conversions (~35 ms per result), continuous
_CFG = const(0x4527)
_MOF = const(0x04)  # Mask/Enable bit 2: math overflow

METRICS = (("v", "V", 0, 36), ("a", "A", -1000, 1000), ("w", "W", -36000, 36000))


class INA226(INA219):
    METRICS = METRICS
    CAL_K = 0.00512  # datasheet eq. 1: CAL = 0.00512 / (Current_LSB * R_shunt)
    P_MUL = 25  # Power_LSB = 25 * Current_LSB
    CAL_MASK = 0x7FFF  # bit 15 is reserved

    def setup(self):
        if self._rd(_MFR_ID) != _TI:
            raise ValueError("not an INA226 at 0x%02x (manufacturer id)" % self.addr)
        self._wr(_CONFIG, _CFG)
        self._wr(0x05, self.cal)

    def _volts(self, raw):
        return raw * 0.00125

    def _overflow(self, bus):
        # the bus register has no flag bits here; Mask/Enable has it, and reading clears it
        return self._rd(_MASK) & _MOF


def options():
    from gt.config import between

    return {"addr": (int, 0x40, between(0x40, 0x4F), "I2C address (A1, A0 pins)"),
            "bus": (int, 0, between(0, 1), "I2C bus number"),
            "shunt_ohm": (float, 0.002, between(0.0001, 100), "shunt resistance in ohms"),
            "max_a": (float, 20.0, between(0.001, 1000), "largest current expected, in A")}


def make(spec, hw):
    return INA226(hw.i2c(spec["bus"]), spec["addr"], spec["shunt_ohm"], spec["max_a"])
