# Sensing roles: the node reads real chips and adds what follows from them.
#   grid_monitor  an ADE7953 on the mains: adds the frequency deviation from nominal (f_dev, Hz)
#   electrolyser  an INA226 on the stack (and ADC channels for pressure, temperature): adds the
#                 hydrogen production from Faraday's law, h2_nlh (normal litres per hour)
#   pv            a pyranometer and the string's INA226: no derived metric; state shows them
# Which sensor to use comes from params (e.g. {"stack": "stack"}), else the first of its kind.
from gt.roles.base import Role as Base

_F = 96485.33  # Faraday constant, C/mol
_NL_PER_MOL = 22.414  # normal litres per mole of ideal gas (0 degC, 1 atm)


class Role(Base):
    def __init__(self, app):
        super().__init__(app)
        self.name = app.cfg["role"]
        self.last = {}
        p = self.params
        if self.name == "grid_monitor":
            self.key = self._metric(p.get("meter"), "_hz")
            self.nominal = float(p.get("nominal_hz", 50))
        elif self.name == "electrolyser":
            self.key = self._metric(p.get("stack"), "_a")
            self.cells = int(p.get("cells", 1))
            self.eff = float(p.get("faradaic_eff", 0.95))
        else:
            self.key = None

    def _metric(self, sensor, suffix):
        for s in self.app.sensors:
            for n in s.names:
                if n.endswith(suffix) and (sensor is None or s.id == sensor):
                    return n
        return None

    def sample(self, m, now):
        self.last = m
        v = m.get(self.key) if self.key else None
        if v is None:  # its sensor is bad this time: no derived value either
            return
        if self.name == "grid_monitor":
            m["f_dev"] = round(v - self.nominal, 4)
        elif self.name == "electrolyser":
            # each cell makes one H2 per two electrons: mol/s = I * cells * eff / (2 F)
            mol_s = max(0.0, v) * self.cells * self.eff / (2 * _F)
            m["h2_nlh"] = round(mol_s * _NL_PER_MOL * 3600, 3)

    def units(self):
        if self.name == "grid_monitor":
            return {"f_dev": "Hz"}
        if self.name == "electrolyser":
            return {"h2_nlh": "NL/h"}
        return {}

    def state(self):
        m = self.last
        if self.name == "grid_monitor":
            return "%.3f Hz" % m[self.key] if self.key in m else "no frequency"
        if self.name == "electrolyser":
            return "H2 %.1f NL/h" % m["h2_nlh"] if "h2_nlh" in m else "stack unread"
        return ""
