# INA219 current/power monitor (TI SBOS448G). Registers, 16 bits big-endian, pointer-addressed:
#   0x00 Config (POR 0x399F; bit 15 RST; BRNG bit 13: 16/32 V; PG bits 12..11: /1../8 shunt range
#        40/80/160/320 mV)   0x01 Shunt voltage (signed, 10 uV/LSB, saturates at the PGA range)
#   0x02 Bus voltage (bits 15..3, 4 mV/LSB; bit 1 CNVR; bit 0 OVF: current or power overflowed)
#   0x03 Power = Current * Bus / 5000    0x04 Current = Shunt * Cal / 4096 (signed)
#   0x05 Calibration (bit 0 reads 0); while it is 0 current and power read 0.
# The chip computes current and power from its own registers, exactly as below.
# World spec: {"model": "ina219", "addr": 64, "shunt_ohm": 0.1, "current_a": 1.5, "bus_v": 12.0,
#              "noise": {"shunt_v": rms, "bus_v": rms, "seed": n} (optional, fakes/noise.py)}
# A conversion's result holds for CONV_MS of world time (every register of one read agrees).
from _world import clock as _clock
from fakes.noise import Noise
from fakes.powered import PoweredDevice, u16
from fakes.i2cdev import be16

_PG_COUNTS = (4000, 8000, 16000, 32000)  # shunt full scale per PGA setting, in 10 uV LSBs


class Device(PoweredDevice):
    SHUNT_LSB = 10e-6
    BUS_LSB = 0.004
    CUR_DIV = 4096
    POW_DIV = 5000
    CAL_MASK = 0xFFFE
    BUS_MAX = 0x1FFF  # 13 bits, in bits 15..3
    CONV_MS = 1  # 12-bit shunt and bus conversions: 532 us each

    def __init__(self, spec):
        self.noise = Noise(spec)
        self._conv = None  # (world ms, result) of the latest conversion
        super().__init__(spec)

    def power_on(self):
        self.regs = {0: 0x399F, 5: 0}

    def shunt_fs(self):
        return _PG_COUNTS[(self.regs[0] >> 11) & 3]

    def measure(self):
        """(shunt counts, bus counts, overflow) from the world's current and bus voltage."""
        now = _clock.world_ms()
        if self._conv is not None and 0 <= now - self._conv[0] < self.CONV_MS:
            return self._conv[1]
        shunt_v = self.noise.add(
            "shunt_v", self.v("current_a", 0.0) * self.spec.get("shunt_ohm", 0.1)
        )
        n = round(shunt_v / self.SHUNT_LSB)
        fs = self.shunt_fs()
        ovf = abs(n) > fs
        n = max(-fs, min(fs, n))
        bus = round(self.noise.add("bus_v", self.v("bus_v", 0.0)) / self.BUS_LSB)
        r = (n, max(0, min(bus, self.BUS_MAX)), ovf)
        self._conv = (now, r)
        return r

    def computed(self):
        shunt, bus, ovf = self.measure()
        cal = self.regs[5]
        cur = int(shunt * cal / self.CUR_DIV)  # the chip truncates
        if not -32768 <= cur <= 32767:
            ovf = True
            cur = max(-32768, min(32767, cur))
        pw = abs(cur) * bus // self.POW_DIV
        if pw > 0xFFFF:
            ovf = True
            pw = 0xFFFF
        return shunt, bus, cur, pw, ovf

    def reg(self, ptr):
        if ptr in (0, 5):
            return self.regs[ptr]
        shunt, bus, cur, pw, ovf = self.computed()
        if ptr == 1:
            return shunt & 0xFFFF
        if ptr == 2:
            return self.bus_reg(bus, ovf)
        if ptr == 3:
            return pw if self.regs[5] else 0
        if ptr == 4:
            return cur & 0xFFFF
        return 0xFFFF

    def bus_reg(self, bus, ovf):
        return (bus << 3) | 0x02 | (1 if ovf else 0)  # CNVR: a conversion is always complete here

    def read(self, ptr, n):
        return (be16(self.reg(ptr)) * ((n + 1) // 2))[:n]

    def write(self, ptr, data):
        v = u16(data)
        if v is None:
            return
        if ptr == 0:
            if v & 0x8000:  # RST: everything back to power-on values
                self.power_on()
            else:
                self.regs[0] = v
        elif ptr == 5:
            self.regs[5] = v & self.CAL_MASK
