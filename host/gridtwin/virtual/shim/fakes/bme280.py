# BME280 humidity / pressure / temperature sensor (Bosch BST-BME280-DS002). One register map with
# auto-incrementing burst reads:
#   0x88..0xA1 trimming dig_T1..dig_P9 (little-endian), dig_H1   0xD0 chip id 0x60
#   0xE0 reset (0xB6)   0xE1..0xE7 dig_H2..dig_H6 (H4/H5 12-bit, sharing 0xE5)
#   0xF2 ctrl_hum (osrs_h; applies at the next ctrl_meas write)   0xF3 status
#   0xF4 ctrl_meas (osrs_t, osrs_p, mode: 00 sleep, 01/10 forced, 11 normal)   0xF5 config
#   0xF7..0xFE press(20 bit) temp(20 bit) hum(16 bit), 0x80000/0x8000 until a conversion ran
# A measurement turns the world's temperature, humidity and pressure into the raw ADC codes the
# chip would report for these trimming values, by inverting the data sheet's compensation.
# World spec: {"model": "bme280", "addr": 118, "temp_c": 21.0, "rh": 45.0, "pressure_pa": 101325,
# "calib": {...} (optional: dig_T1.. dig_H6), "raw": {"t": n, "p": n, "h": n} (optional)}
#
import struct
from fakes.noise import Noise
from fakes.powered import PoweredDevice

# dig_T*/dig_P* of the BMP280 data sheet's compensation example (same formulas in the BME280);
# dig_H* typical of real parts.
CALIB = {
    "T1": 27504,
    "T2": 26435,
    "T3": -1000,
    "P1": 36477,
    "P2": -10685,
    "P3": 3024,
    "P4": 2855,
    "P5": 140,
    "P6": -7,
    "P7": 15500,
    "P8": -14600,
    "P9": 6000,
    "H1": 75,
    "H2": 362,
    "H3": 0,
    "H4": 313,
    "H5": 50,
    "H6": 30,
}


def comp_t(c, adc):
    v1 = (((adc >> 3) - (c["T1"] << 1)) * c["T2"]) >> 11
    v2 = (((((adc >> 4) - c["T1"]) * ((adc >> 4) - c["T1"])) >> 12) * c["T3"]) >> 14
    return v1 + v2, ((v1 + v2) * 5 + 128) >> 8


def comp_p(c, adc, tf):
    v1 = tf - 128000
    v2 = v1 * v1 * c["P6"] + ((v1 * c["P5"]) << 17) + (c["P4"] << 35)
    v1 = (((1 << 47) + ((v1 * v1 * c["P3"]) >> 8) + ((v1 * c["P2"]) << 12)) * c["P1"]) >> 33
    p = (((1048576 - adc) << 31) - v2) * 3125 // v1
    return ((p + ((c["P9"] * (p >> 13) * (p >> 13)) >> 25) + ((c["P8"] * p) >> 19)) >> 8) + (
        c["P7"] << 4
    )


def comp_h(c, adc, tf):
    x = tf - 76800
    x = ((((adc << 14) - (c["H4"] << 20) - (c["H5"] * x)) + 16384) >> 15) * (
        (
            (((((x * c["H6"]) >> 10) * (((x * c["H3"]) >> 11) + 32768)) >> 10) + 2097152) * c["H2"]
            + 8192
        )
        >> 14
    )
    x -= ((((x >> 15) * (x >> 15)) >> 7) * c["H1"]) >> 4
    return min(max(x, 0), 419430400) >> 12


def _solve(f, target, lo, hi, rising=True):
    # the raw code whose compensated value is closest to target (f is monotonic)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi


class Device(PoweredDevice):
    def __init__(self, spec):
        self.c = dict(CALIB)
        self.c.update(spec.get("calib", {}))
        self.noise = Noise(
            spec
        )  # "noise": {"temp_c": rms, "rh": rms, "pressure_pa": rms, "seed": n}
        super().__init__(spec)

    def power_on(self):
        self.ctrl_hum = 0
        self.osrs_h = 0
        self.ctrl_meas = 0
        self.config = 0
        self.data = bytes((0x80, 0, 0, 0x80, 0, 0, 0x80, 0))

    def _trim(self):
        c = self.c
        a = struct.pack(
            "<HhhHhhhhhhhh",
            c["T1"],
            c["T2"],
            c["T3"],
            c["P1"],
            c["P2"],
            c["P3"],
            c["P4"],
            c["P5"],
            c["P6"],
            c["P7"],
            c["P8"],
            c["P9"],
        )
        b = (
            struct.pack("<hB", c["H2"], c["H3"])
            + bytes(
                (
                    (c["H4"] >> 4) & 0xFF,
                    (c["H4"] & 0x0F) | ((c["H5"] & 0x0F) << 4),
                    (c["H5"] >> 4) & 0xFF,
                )
            )
            + struct.pack("<b", c["H6"])
        )
        return a, b

    def measure(self):
        c = self.c
        raw = self.spec.get("raw", {})
        t = raw.get("t")
        if t is None:
            want = round(self.noise.add("temp_c", self.v("temp_c", 21.0)) * 100)
            t = _solve(lambda a: comp_t(c, a)[1], want, 0, 0xFFFFF)
        tf = comp_t(c, t)[0]
        p = raw.get("p")
        if p is None:
            want = self.noise.add("pressure_pa", self.v("pressure_pa", 101325.0)) * 256
            p = _solve(lambda a: comp_p(c, a, tf), want, 0, 0xFFFFF, False)
        h = raw.get("h")
        if h is None:
            h = _solve(
                lambda a: comp_h(c, a, tf),
                self.noise.add("rh", self.v("rh", 45.0)) * 1024,
                0,
                0xFFFF,
            )
        if not self.osrs_h:
            h = 0x8000  # humidity skipped
        if not (self.ctrl_meas >> 2) & 7:
            p = 0x80000
        if not self.ctrl_meas >> 5:
            t = 0x80000
        self.data = bytes(
            (
                p >> 12,
                (p >> 4) & 0xFF,
                (p & 0xF) << 4,
                t >> 12,
                (t >> 4) & 0xFF,
                (t & 0xF) << 4,
                h >> 8,
                h & 0xFF,
            )
        )

    def read(self, ptr, n):
        if ptr == 0xF7 and self.ctrl_meas & 3 == 3:
            self.measure()  # normal mode: a fresh result is always waiting
        a, b = self._trim()
        out = bytearray()
        for r in range(ptr, ptr + n):
            if 0x88 <= r < 0xA0:
                out.append(a[r - 0x88])
            elif r == 0xA1:
                out.append(self.c["H1"])
            elif r == 0xD0:
                out.append(0x60)
            elif 0xE1 <= r <= 0xE7:
                out.append(b[r - 0xE1])
            elif r == 0xF2:
                out.append(self.ctrl_hum)
            elif r == 0xF3:
                out.append(0)
            elif r == 0xF4:
                out.append(self.ctrl_meas)
            elif r == 0xF5:
                out.append(self.config)
            elif 0xF7 <= r <= 0xFE:
                out.append(self.data[r - 0xF7])
            else:
                out.append(0)
        return bytes(out)

    def write(self, ptr, data):
        # several register/value pairs may follow in one write: the first register is ptr
        pairs = [(ptr, data[0])] + [(data[i], data[i + 1]) for i in range(1, len(data) - 1, 2)]
        for r, v in pairs:
            if r == 0xE0 and v == 0xB6:
                self.power_on()
            elif r == 0xF2:
                self.ctrl_hum = v & 7
            elif r == 0xF4:
                self.ctrl_meas = v
                self.osrs_h = self.ctrl_hum
                if v & 3 in (1, 2):  # forced: one measurement, then back to sleep
                    self.measure()
                    self.ctrl_meas &= 0xFC
            elif r == 0xF5:
                self.config = v
