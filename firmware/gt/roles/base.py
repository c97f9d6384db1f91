# The plain sensing role, and the base every role extends: it reads the configured sensors.
# A role may add metrics of its own (sample), report units (units) and add command handlers
# (commands: name -> handler(args) -> result), which the command dispatcher looks up.
class Role:
    name = "sensor"

    def __init__(self, app):
        self.app = app
        self.params = app.cfg["params"]
        self.commands = {}

    def sample(self, m, now):
        """Add the role's own metrics to the reading m (sensor metrics are already in it)."""
        pass

    def units(self):
        return {}

    def state(self):
        """A few words for the display and the birth document."""
        return ""


def reads(app, suffix, sensor=None):
    """The metric a deriving role reads: the first ending in suffix ("_hz", "_a") of the sensor
    named (params), of any sensor when none is named; None when there is none."""
    for s in app.sensors:
        for m in s.names:
            if m.endswith(suffix) and (sensor is None or s.id == sensor):
                return m
    return None
