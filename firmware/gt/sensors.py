# Sensors: the sensor types, and the health of each configured sensor.
#
# The sensor types are the host's catalog (host/gridtwin/sensortypes.py), whose rows the validator
# gets from gt/drivers/options.py, generated from it. Type t is read by the module gt.drivers.<t>:
# its METRICS is a tuple of (suffix, unit, lo, hi), and make(spec, hw) gives a driver whose read()
# returns a tuple of values in SI units, one per metric. The analog inputs (adc, ads1115) take unit
# and range from the config instead. A metric is named after the sensor id, plus "_" + suffix when
# the suffix is not empty.
#
# Health: a read that raises OSError (no answer), ValueError (bad data, CRC) or gives a value
# outside [lo, hi] marks the sensor bad; it is retried with exponential backoff and the node carries
# on with the others. The first good read after that marks it good again: no reboot needed. A chip
# missing at boot is the same: its driver is started again on each retry.
import time
from micropython import const

_BACKOFF_MAX = const(60000)


class Sensor:
    def __init__(self, spec, hw, log):
        self.id = spec["id"]
        self.spec = spec
        self.hw = hw
        self.mod = mod = __import__("gt.drivers." + spec["type"], None, None, ("make",))
        # a type whose ranges depend on its config (a divider, a calibrated range) has metrics(spec)
        self.metrics = m = (
            (("", spec["unit"], spec["lo"], spec["hi"]),)
            if "unit" in spec
            else mod.metrics(spec)
            if hasattr(mod, "metrics")
            else mod.METRICS
        )
        self.names = tuple(self.id + ("_" + x[0] if x[0] else "") for x in m)
        self.ok = True
        self.why = None
        self.errors = 0
        self._backoff = 0
        self._retry_at = 0
        self.drv = None
        try:
            self.drv = mod.make(spec, hw)
        except (OSError, ValueError) as e:
            log.warn("sensor", "%s did not start: %s" % (self.id, _why(e)))

    def read_into(self, m, now, log):
        """Read the sensor and put its metrics in m; False when it is bad now (or not due yet)."""
        if not self.ok and time.ticks_diff(now, self._retry_at) < 0:
            return False
        try:
            if self.drv is None:
                self.drv = self.mod.make(self.spec, self.hw)
            vals = self.drv.read()
            for i, (suffix, unit, lo, hi) in enumerate(self.metrics):
                v = vals[i]
                if v is None or v != v or not lo <= v <= hi:
                    raise ValueError(
                        "%s=%s out of range %s..%s %s" % (self.names[i], v, lo, hi, unit)
                    )
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
            # 7 significant digits: more than any of these chips resolves (24-bit ADCs), and the
            # reading's JSON (outbox RAM, flash, MQTT) stays short: 231.0 V, not 231.00000108361004
            m[n] = float("%.7g" % vals[i])
        return True

    def units(self):
        return {n: self.metrics[i][1] for i, n in enumerate(self.names)}


def _why(e):
    if isinstance(e, OSError):
        return "no answer (OSError %s)" % (e.args[0] if e.args else "")
    return str(e)


def build(specs, hw, log):
    """Sensor objects for the config's specs. A sensor whose chip cannot start is kept, marked bad
    on its first read, and retried."""
    return [Sensor(s, hw, log) for s in specs]
