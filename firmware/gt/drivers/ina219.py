# INA219 current/power monitor on I2C (TI SBOS448), and the base of the INA226 (ina226.py). The
# chip measures the shunt voltage and the bus voltage; from the calibration register it also
# computes current and power itself, so what we read back is already scaled by our current LSB.
# A bus above the chip's input (26/36 V) is measured through a divider in front of VBUS: v_div
# (line V / VBUS V) scales voltage and power back up, so they are the plant's. The metric ranges
# follow the registers: metrics(spec). Config rows: gt/drivers/options.py.
from micropython import const

_CONFIG = const(0x00)
_BUS = const(0x02)
_POWER = const(0x03)
_CURRENT = const(0x04)
_CAL = const(0x05)
_MASK = const(0x06)  # INA226 Mask/Enable: bit 2 flags a math overflow (reading clears it)
_MFR_ID = const(0xFE)  # INA226: "TI"

METRICS = (("v", "V", 0, 32), ("a", "A", -1000, 1000), ("w", "W", -32000, 32000))


def current_lsb(max_a):
    # (pure: the host runs this function and calibration() from this file, gridtwin/fwsource.py)
    # eq. 2: Current_LSB >= Max_Expected_I / 2^15. Like the data sheet example (18.3 uA ->
    # 20 uA) it is rounded up to 1, 2 or 5 x 10^n so readings are round numbers of the LSB.
    m = max_a / 32768 * 0.999999
    d = 1e-9
    while d * 10 <= m:
        d *= 10
    return d * (1 if d >= m else 2 if 2 * d >= m else 5 if 5 * d >= m else 10)


def calibration(k, lsb, shunt_ohm):
    # data sheet eq. 1, Cal = trunc(K / (Current_LSB * R_shunt)); + 1e-6: the quotient of two
    # rounded floats may land just under the whole number. The host reads this function too.
    return int(k / (lsb * shunt_ohm) + 1e-6)


def metrics(spec, cls=None, bus_max=32):
    # what the registers can hold: the bus range and the 16-bit current and power registers,
    # scaled by the divider
    cls = cls or INA219
    lsb = current_lsb(spec["max_a"])
    k = spec.get("v_div", 1.0)
    w = 65535 * cls.P * lsb * k
    return (("v", "V", 0, bus_max * k), ("a", "A", -32768 * lsb, 32767 * lsb), ("w", "W", -w, w))


class INA219:
    # Per chip: data sheet eq. 1, Cal = trunc(K / (Current_LSB * R_shunt)); Power_LSB = P x
    # Current_LSB; the calibration register's valid bits; the configuration (here: 32 V bus range,
    # PGA /8 for +-320 mV, 12-bit conversions, continuous: the power-on value).
    K = 0.04096
    P = 20
    CAL_BITS = 0xFFFE  # bit 0 is void
    CFG = 0x399F
    IS226 = False

    def __init__(self, i2c, addr, shunt_ohm, max_a, v_div=1.0):
        self.i2c = i2c
        self.addr = addr
        self.k = v_div
        self.lsb = current_lsb(max_a)
        self.cal = calibration(self.K, self.lsb, shunt_ohm) & self.CAL_BITS
        self._b = bytearray(2)
        self.setup()

    def _rd(self, reg):
        b = self._b
        self.i2c.readfrom_mem_into(self.addr, reg, b)
        return (b[0] << 8) | b[1]

    def _wr(self, reg, v):
        b = self._b
        b[0] = v >> 8
        b[1] = v & 0xFF
        self.i2c.writeto_mem(self.addr, reg, b)

    def setup(self):
        if self.IS226 and self._rd(_MFR_ID) != 0x5449:
            raise ValueError("not an INA226 at 0x%02x (manufacturer id)" % self.addr)
        self._wr(_CONFIG, self.CFG)
        self._wr(_CAL, self.cal)

    def read(self):
        # A power glitch resets the chip: calibration 0 makes it report 0 A without complaint.
        if self._rd(_CAL) != self.cal:
            self.setup()
            raise ValueError("lost its calibration (chip reset?); restored")
        bus = self._rd(_BUS)
        # INA219: overflow flag in bus register bit 0, voltage in bits 15..3 at 4 mV.
        # INA226: the flag is in Mask/Enable, the voltage the whole register at 1.25 mV.
        if (self._rd(_MASK) & 4) if self.IS226 else (bus & 1):
            raise ValueError("overflow: current or power beyond the calibrated range")
        i = self._rd(_CURRENT)
        if i & 0x8000:
            i -= 0x10000
        # the power register holds the magnitude; give it the current's sign (export reads < 0)
        w = self._rd(_POWER) * self.P * self.lsb * self.k
        v = (bus * 0.00125 if self.IS226 else (bus >> 3) * 0.004) * self.k
        return (v, i * self.lsb, 0.0 - w if i < 0 else w)  # 0.0 - w: no "-0.0" for a zero power


def make(spec, hw):
    return INA219(
        hw.i2c(spec["bus"]), spec["addr"], spec["shunt_ohm"], spec["max_a"], spec.get("v_div", 1.0)
    )
