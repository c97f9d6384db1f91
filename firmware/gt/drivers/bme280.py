# BME280 temperature / humidity / pressure sensor on I2C (Bosch BST-BME280-DS002). Raw ADC values
# become SI units through the factory trimming values and the data sheet's integer compensation
# (section 4.2.3: 32-bit temperature and humidity, 64-bit pressure), so results match the data
# sheet to the last digit. Config rows: gt/drivers/options.py.
from micropython import const
import struct

_CALIB0 = const(0x88)  # dig_T1..dig_P9 (24 bytes), 0xA1 dig_H1
_CALIB1 = const(0xE1)  # dig_H2..dig_H6 (7 bytes)
_ID = const(0xD0)
_CTRL_HUM = const(0xF2)
_CTRL_MEAS = const(0xF4)
_CONFIG = const(0xF5)
_DATA = const(0xF7)  # press[3] temp[3] hum[2]
_CHIP_ID = const(0x60)
_SKIPPED = const(0x80000)  # what a data register holds when no conversion has run

METRICS = (("t", "degC", -40, 85), ("rh", "%RH", 0, 100), ("p", "Pa", 30000, 110000))


class BME280:
    def __init__(self, i2c, addr=0x76):
        self.i2c = i2c
        self.addr = addr
        self._d = bytearray(8)
        if i2c.readfrom_mem(addr, _ID, 1)[0] != _CHIP_ID:
            raise ValueError("not a BME280 at 0x%02x (chip id)" % addr)
        c = i2c.readfrom_mem(addr, _CALIB0, 26)
        self.t = struct.unpack_from("<Hhh", c, 0)
        self.p = struct.unpack_from("<Hhhhhhhhh", c, 6)
        h = i2c.readfrom_mem(addr, _CALIB1, 7)
        e4, e5, e6 = h[3], h[4], h[5]
        if e4 & 0x80:
            e4 -= 256
        if e6 & 0x80:
            e6 -= 256
        self.h = (
            c[25],
            struct.unpack_from("<h", h, 0)[0],
            h[2],
            (e4 << 4) | (e5 & 0x0F),
            (e6 << 4) | (e5 >> 4),
            struct.unpack_from("<b", h, 6)[0],
        )
        self.setup()

    def setup(self):
        w = self.i2c.writeto_mem
        w(self.addr, _CTRL_HUM, b"\x01")  # humidity x1 (takes effect with the ctrl_meas write)
        w(self.addr, _CONFIG, b"\xa0")  # 1000 ms standby in normal mode, filter off
        w(self.addr, _CTRL_MEAS, b"\x27")  # temperature x1, pressure x1, normal mode

    def temperature(self, adc):
        # -> (t_fine, degC)
        t1, t2, t3 = self.t
        v1 = (((adc >> 3) - (t1 << 1)) * t2) >> 11
        v2 = (((((adc >> 4) - t1) * ((adc >> 4) - t1)) >> 12) * t3) >> 14
        f = v1 + v2
        return f, ((f * 5 + 128) >> 8) / 100

    def read(self):
        d = self._d
        self.i2c.readfrom_mem_into(self.addr, _DATA, d)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        if adc_t == _SKIPPED:
            # sleep mode: the chip was reset (power glitch) or never started; start it again
            self.setup()
            raise ValueError("no conversion (chip in sleep mode); restarted")
        t_fine, t = self.temperature(adc_t)
        # pressure, 64-bit integer version: Pa in Q24.8
        p1, p2, p3, p4, p5, p6, p7, p8, p9 = self.p
        v1 = t_fine - 128000
        v2 = v1 * v1 * p6 + ((v1 * p5) << 17) + (p4 << 35)
        v1 = ((v1 * v1 * p3) >> 8) + ((v1 * p2) << 12)
        v1 = (((1 << 47) + v1) * p1) >> 33
        if v1 == 0:
            raise ValueError("pressure compensation: division by zero (bad trimming values)")
        p = 1048576 - ((d[0] << 12) | (d[1] << 4) | (d[2] >> 4))
        p = (((p << 31) - v2) * 3125) // v1
        v1 = (p9 * (p >> 13) * (p >> 13)) >> 25
        v2 = (p8 * p) >> 19
        p = (((p + v1 + v2) >> 8) + (p7 << 4)) / 256
        # humidity: %RH in Q22.10
        h1, h2, h3, h4, h5, h6 = self.h
        x = t_fine - 76800
        x = (((((d[6] << 8) | d[7]) << 14) - (h4 << 20) - (h5 * x) + 16384) >> 15) * (
            ((((((x * h6) >> 10) * (((x * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14
        )
        x -= ((((x >> 15) * (x >> 15)) >> 7) * h1) >> 4
        x = 0 if x < 0 else 419430400 if x > 419430400 else x
        return (t, (x >> 12) / 1024, p)


def make(spec, hw):
    return BME280(hw.i2c(spec["bus"]), spec["addr"])
