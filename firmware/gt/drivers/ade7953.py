# ADE7953 single-phase energy metering IC over I2C (Analog Devices ADE7953 data sheet). Registers
# have 16-bit addresses; the address range gives the width (0x0xx 8-bit, 0x1xx 16-bit, 0x3xx the
# 32-bit view of the 24-bit measurements, sign-extended). The chip reports in ADC units: we turn
# them into volts and amps with the front end the config describes (voltage divider ratio, and the
# ohms the current input sees per amp of line current: a shunt, or a CT's burden / turns).
# Config rows: gt/drivers/options.py.
from micropython import const

_ADDR = const(0x38)  # fixed I2C address
_UNLOCK = const(0x0FE)
_RESERVED = const(0x120)  # "required register setting": write 0x30 after unlocking with 0xAD
_PFA = const(0x10A)  # power factor, channel A: signed 16-bit, 2^-15 per LSB
_PERIOD = const(0x10E)  # line period in CLKIN/16 ticks (223.75 kHz at CLKIN = 3.58 MHz)
_AWATT = const(0x312)  # instantaneous active power, channel A
_IRMSA = const(0x31A)
_VRMS = const(0x31C)
_PERIOD_HZ = const(223750)
# Full scale: a +-0.5 V peak sine on an input (0.3536 V rms) reads 9032007 in its RMS register;
# full-scale sines on both channels give 4862401 in AWATT.
_V_FS = 0.5 / 1.41421356
_RMS_FS = const(9032007)
_W_FS = const(4862401)

METRICS = (
    ("v", "V", 0, 500),
    ("a", "A", 0, 1000),
    ("w", "W", -500000, 500000),
    ("pf", "", -1, 1),
    ("hz", "Hz", 40, 70),
)


class ADE7953:
    def __init__(self, i2c, v_div, i_ohm):
        self.i2c = i2c
        self.v_lsb = _V_FS * v_div / _RMS_FS
        self.i_lsb = _V_FS / i_ohm / _RMS_FS
        self.w_lsb = (_V_FS * v_div) * (_V_FS / i_ohm) / _W_FS
        self._w = memoryview(bytearray(4))
        self.setup()

    def setup(self):
        # data sheet, "Required register setting": unlock, then 0x30 into register 0x120
        self.i2c.writeto_mem(_ADDR, _UNLOCK, b"\xad", addrsize=16)
        self.i2c.writeto_mem(_ADDR, _RESERVED, b"\x00\x30", addrsize=16)

    def _reg(self, reg, n):
        # big-endian, signed (all the registers read here that can be negative are signed)
        buf = self._w[:n]
        self.i2c.readfrom_mem_into(_ADDR, reg, buf, addrsize=16)
        v = 0
        for b in buf:
            v = (v << 8) | b
        return v - ((v & (0x80 << (8 * n - 8))) << 1)

    def read(self):
        if self._reg(_RESERVED, 2) != 0x30:  # a reset chip lost it: set it again
            self.setup()
        r = self._reg
        return (
            r(_VRMS, 4) * self.v_lsb,
            r(_IRMSA, 4) * self.i_lsb,
            r(_AWATT, 4) * self.w_lsb,
            r(_PFA, 2) / 32768,
            _PERIOD_HZ / ((r(_PERIOD, 2) & 0xFFFF) + 1),
        )


def make(spec, hw):
    return ADE7953(hw.i2c(spec["bus"]), spec["v_div"], spec["i_ohm"])
