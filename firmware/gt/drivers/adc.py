# A generic analog channel on the ESP32's own ADC with linear calibration (gt/drivers/linear.py):
# a 4-20 mA pressure transducer across a resistor, a pyranometer behind an amplifier. read_uv()
# gives the factory-calibrated voltage; averaging a few readings takes out the ADC's noise.
# Config rows: gt/drivers/options.py. Unit and range come from the config.
import machine
from gt.drivers.linear import Linear


class ADC(Linear):
    def __init__(self, pin, spec):
        super().__init__(spec)
        self.adc = machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)  # 0..3.1 V
        self.n = spec["samples"]

    def read(self):
        uv = 0
        for _ in range(self.n):
            uv += self.adc.read_uv()
        return (self.scale(uv / self.n / 1000000),)


def make(spec, hw):
    return ADC(spec["pin"], spec)
