# Linear calibration shared by the analog inputs (adc, ads1115): two points [v0, y0, v1, y1] map
# the measured volts to the quantity (a 4-20 mA transducer on a 150 ohm resistor: 0.6 V -> 0 bar,
# 3.0 V -> 10 bar). The unit and the plausible range come from the config (gt/sensors.py reads
# them), so a broken loop (0 mA reads far below lo) marks the sensor bad instead of reporting a
# pressure of -2.5 bar.


class Linear:
    def __init__(self, spec):
        v0, y0, v1, y1 = spec["cal"]
        self.k = (y1 - y0) / (v1 - v0)
        self.y0 = y0 - self.k * v0
        self.METRICS = (("", spec["unit"], spec["lo"], spec["hi"]),)

    def scale(self, volts):
        return self.y0 + self.k * volts
