# Linear calibration shared by the analog inputs (adc, ads1115): two points [v0, y0, v1, y1] map
# the measured volts to the quantity (a 4-20 mA transducer on a 150 ohm resistor: 0.6 V -> 0 bar,
# 3.0 V -> 10 bar). The unit and the plausible range come from the config, so a broken loop
# (0 mA reads far below lo) marks the sensor bad instead of reporting a pressure of -2.5 bar.


def options(rows):
    def cal(v):
        if len(v) != 4 or not all(isinstance(x, (int, float)) for x in v) or v[0] == v[2]:
            return "must be [v0, y0, v1, y1] with v0 != v1, got %r" % (v,)

    rows["cal"] = (list, [0, 0, 1, 1], cal, "two points [v0, y0, v1, y1]: v0 volts read y0")
    rows["unit"] = (str, "V", None, "unit of the calibrated value")
    rows["lo"] = (float, -1e9, None, "lowest plausible value; below it the sensor is bad")
    rows["hi"] = (float, 1e9, None, "highest plausible value")
    return rows


def metrics(spec):
    return (("", spec["unit"], spec["lo"], spec["hi"]),)


class Linear:
    def __init__(self, spec):
        v0, y0, v1, y1 = spec["cal"]
        self.k = (y1 - y0) / (v1 - v0)
        self.y0 = y0 - self.k * v0
        self.METRICS = metrics(spec)

    def scale(self, volts):
        return self.y0 + self.k * volts
