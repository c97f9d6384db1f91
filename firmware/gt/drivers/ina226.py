# INA226 current/power monitor on I2C (TI SBOS547): the INA219's logic (ina219.py) with its own
# constants: shunt 2.5 uV/LSB, bus 1.25 mV/LSB (not shifted), the overflow flag in Mask/Enable, a
# manufacturer id to check. Config rows: gt/drivers/options.py.
from gt.drivers import ina219
from gt.drivers.ina219 import INA219

METRICS = (("v", "V", 0, 36), ("a", "A", -1000, 1000), ("w", "W", -36000, 36000))


class INA226(INA219):
    K = 0.00512  # data sheet eq. 1: CAL = 0.00512 / (Current_LSB * R_shunt)
    P = 25  # Power_LSB = 25 x Current_LSB
    CAL_BITS = 0x7FFF  # bit 15 is reserved
    CFG = 0x4527  # averages of 16, 1.1 ms bus and shunt conversions (~35 ms a result), continuous
    IS226 = True


def metrics(spec):
    return ina219.metrics(spec, INA226, 36)


def make(spec, hw):
    return INA226(
        hw.i2c(spec["bus"]), spec["addr"], spec["shunt_ohm"], spec["max_a"], spec.get("v_div", 1.0)
    )
