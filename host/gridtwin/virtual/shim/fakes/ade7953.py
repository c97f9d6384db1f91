# ADE7953 single-phase energy metering IC on I2C (Analog Devices ADE7953 data sheet, Rev. C).
# Fixed address 0x38; register addresses are 16 bits (sent MSB first) and the address range gives
# the register width: 0x0xx 8-bit, 0x1xx 16-bit, 0x2xx 24-bit, 0x3xx the same data as 32 bits,
# sign-extended. The measurement registers follow the world through the board's front end:
#   VRMS  (0x21C/0x31C): 9032007 for a +-0.5 V peak sine at the voltage input
#   IRMSA (0x21A/0x31A): the same scale on current channel A (PGA gain 1)
#   AWATT (0x212/0x312): 4862401 with full-scale sines in phase on both inputs
#   PFA   (0x10A): power factor, signed, 2^-15/LSB     PERIOD (0x10E): 223750 / f - 1
#   0x0FE unlock (0xAD) enables the write of 0x0030 to 0x120 the data sheet requires at power-up.
# World spec: {"model": "ade7953", "addr": 56, "v_div": 1001, "i_ohm": 0.005,
#              "v_rms": 230, "i_rms": 5, "pf": 0.95, "hz": 50.0}
# "noise": {"rms": relative rms of VRMS/IRMS, "period": rms seconds, "seed": n} (optional)
#
from fakes.noise import Noise
from fakes.powered import PoweredDevice

_V_FS = 0.5 / 2**0.5
_RMS_FS = 9032007
_W_FS = 4862401


class Device(PoweredDevice):
    def __init__(self, spec):
        self.noise = Noise(spec)
        super().__init__(spec)

    def power_on(self):
        self.regs = {0x102: 0x8004, 0x120: 0, 0x0FE: 0, 0x004: 0x40, 0x702: 0x02}

    def _width(self, a):
        return {0: 1, 1: 2, 2: 3, 3: 4}.get(a >> 8, 1)

    def _measured(self, a):
        s = self.spec
        vp = self.v("v_rms", 230.0) / s.get("v_div", 1001.0) * self.noise.add("rms", 1.0)
        ip = self.v("i_rms", 0.0) * s.get("i_ohm", 0.005) * self.noise.add("rms", 1.0)
        pf = max(-1.0, min(1.0, float(self.v("pf", 1.0))))
        low = a & 0xFF
        if low == 0x1C:
            return round(vp / _V_FS * _RMS_FS)
        if low == 0x1A:
            return round(ip / _V_FS * _RMS_FS)
        if low == 0x12:
            return round(vp * ip * pf / (_V_FS * _V_FS) * _W_FS)
        return 0

    def value(self, a):
        if a in (0x21C, 0x31C, 0x21A, 0x31A, 0x212, 0x312):
            return self._measured(a)
        if a == 0x10A:
            return max(-32768, min(32767, round(self.v("pf", 1.0) * 32768)))
        if a == 0x10E:
            hz = self.v("hz", 50.0)
            return (
                0xFFFF
                if hz <= 0
                else max(0, min(0xFFFF, round(self.noise.add("period", 1 / hz) * 223750) - 1))
            )
        return self.regs.get(a, 0)

    def read(self, ptr, n):
        v = self.value(ptr) & ((1 << (8 * n)) - 1)
        return v.to_bytes(n, "big")

    def write(self, ptr, data):
        v = int.from_bytes(data, "big")
        if ptr == 0x120 and self.regs.get(0x0FE) != 0xAD:
            return  # locked: the write is ignored
        self.regs[ptr] = v
