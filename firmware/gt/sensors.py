# Sensors: the table of sensor types, and the health of each configured sensor.
#
# TYPES maps a config "type" to its driver module, which provides options() (schema rows for its
# config keys), METRICS, a tuple of (suffix, unit, lo, hi), and make(spec, hw) -> a driver whose
# read() returns a tuple of values in SI units, one per metric. A metric is named after the sensor
# id, plus "_" + suffix when the suffix is not empty.
#
# Health: a read that raises OSError (no answer), ValueError (bad data, CRC) or gives a value
# outside [lo, hi] marks the sensor bad; it is retried with exponential backoff and the node carries
# on with the others. The first good read after that marks it good again: no reboot needed.
import time
from micropython import const

_BACKOFF_MAX = const(60000)

# type -> driver module; the module's options() gives the schema rows of its config keys
TYPES = {
    "lm75": "gt.drivers.lm75",
    "ina219": "gt.drivers.ina219",
    "ina226": "gt.drivers.ina226",
    "ade7953": "gt.drivers.ade7953",
    "bme280": "gt.drivers.bme280",
    "ds18b20": "gt.drivers.ds18b20",
    "ads1115": "gt.drivers.ads1115",
    "adc": "gt.drivers.adc",
}


def driver(t):
    return __import__(TYPES[t], None, None, ("make",))


class Sensor:
    def __init__(self, spec, driver):
        self.id = spec["id"]
        self.type = spec["type"]
        self.drv = driver
        self.names = tuple(self.id + ("_" + m[0] if m[0] else "") for m in driver.METRICS)
        self.ok = True
        self.why = None
        self.errors = 0
        self._backoff = 0
        self._retry_at = 0

    def due(self, now):
        return self.ok or time.ticks_diff(now, self._retry_at) >= 0

    def read_into(self, m, now, log):
        """Read the sensor and put its metrics in m; False when it is bad now."""
        if not self.due(now):
            return False
        try:
            vals = self.drv.read()
            for i, (suffix, unit, lo, hi) in enumerate(self.drv.METRICS):
                v = vals[i]
                if v is None or v != v or not lo <= v <= hi:
                    raise ValueError("%s=%s out of range %s..%s %s" % (self.names[i], v, lo, hi, unit))
        except (OSError, ValueError) as e:
            self.errors += 1
            self._backoff = min(_BACKOFF_MAX, self._backoff * 2 if self._backoff else 1000)
            self._retry_at = time.ticks_add(now, self._backoff)
            why = _why(e)
            if self.ok or why != self.why:
                log.warn("sensor", "%s bad: %s; retry in %d ms" % (self.id, why, self._backoff))
            self.ok = False
            self.why = why
            return False
        if not self.ok:
            log.info("sensor", "%s recovered after %d errors" % (self.id, self.errors))
        self.ok = True
        self.why = None
        self._backoff = 0
        for i, n in enumerate(self.names):
            m[n] = vals[i]
        return True

    def units(self):
        return {n: self.drv.METRICS[i][1] for i, n in enumerate(self.names)}


def _why(e):
    if isinstance(e, OSError):
        return "no answer (OSError %s)" % (e.args[0] if e.args else "")
    return str(e)


def build(specs, hw, log):
    """Sensor objects for the config's specs. A sensor whose driver cannot start is kept, marked bad."""
    out = []
    for s in specs:
        mod = driver(s["type"])
        try:
            drv = mod.make(s, hw)
        except (OSError, ValueError) as e:
            drv = _Absent(mod, s, hw)
            log.warn("sensor", "%s did not start: %s" % (s["id"], _why(e)))
        out.append(Sensor(s, drv))
    return out


class _Absent:
    # stands in for a driver whose chip was missing at boot; retries starting it on each read
    def __init__(self, mod, spec, hw):
        self._mod = mod
        self._spec = spec
        self._hw = hw
        self._drv = None
        # a driver whose unit and range come from the config (adc, ads1115) gives metrics(spec)
        self.METRICS = mod.metrics(spec) if hasattr(mod, "metrics") else mod.METRICS

    def read(self):
        if self._drv is None:
            self._drv = self._mod.make(self._spec, self._hw)
        return self._drv.read()
