# INA226 current/power monitor (TI SBOS547A). Registers, 16 bits big-endian:
#   0x00 Config (POR 0x4127; bit 15 RST)   0x01 Shunt voltage (signed, 2.5 uV/LSB, +-81.92 mV)
#   0x02 Bus voltage (1.25 mV/LSB, 15 bits)   0x03 Power = Current * Bus / 20000
#   0x04 Current = Shunt * CAL / 2048 (signed)   0x05 Calibration (15 bits)
#   0x06 Mask/Enable: bit 3 CVRF (conversion ready), bit 2 OVF (math overflow); reading it clears
#        both   0xFE Manufacturer ID 0x5449   0xFF Die ID 0x2260
# World spec: {"model": "ina226", "addr": 64, "shunt_ohm": 0.002, "current_a": 10, "bus_v": 12}
from fakes.ina219 import Device as INA219

_SHUNT_FS = 32767  # 81.92 mV / 2.5 uV, clipped to the register


class Device(INA219):
    SHUNT_LSB = 2.5e-6
    BUS_LSB = 0.00125
    CUR_DIV = 2048
    POW_DIV = 20000
    CAL_MASK = 0x7FFF
    BUS_MAX = 0x7FFF
    CONV_MS = 35  # 16 averages of 1.1 ms shunt and bus conversions (gt/drivers/ina226.py CFG)

    def power_on(self):
        self.regs = {0: 0x4127, 5: 0}
        self.flags_read = False

    def shunt_fs(self):
        return _SHUNT_FS

    def reg(self, ptr):
        if ptr == 0xFE:
            return 0x5449
        if ptr == 0xFF:
            return 0x2260
        if ptr == 6:
            ovf = self.computed()[4]
            return 0x08 | (0x04 if ovf else 0)
        if ptr == 2:
            return self.computed()[1]
        return super().reg(ptr)
