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
