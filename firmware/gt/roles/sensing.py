# Sensing roles: the node reads real chips and adds what follows from them.
#   grid_monitor  an ADE7953 on the mains: adds the frequency deviation from nominal (f_dev, Hz)
#   electrolyser  an INA226 on the stack (and ADC channels for pressure, temperature): adds the
#                 hydrogen production from Faraday's law, h2_nlh (normal litres per hour), with
#                 Ulleberg's Faraday efficiency eta_F = j^2 / (f1 + j^2) * f2 (j in mA/cm2 of the
#                 cell area) when params give f1, f2 and area_m2, as the twin computes it
#                 (gridtwin/twin/electrolyser.py), else the constant faradaic_eff
# (pv, a pyranometer and the array's INA226, has no derived metric: it is the plain role of base.py)
# Which sensor to use comes from params ({"meter": id} / {"stack": id}), else the first of its kind.
from gt.roles.base import Role as Base

_F = 96485.33  # Faraday constant, C/mol
_NL_PER_MOL = 22.414  # normal litres per mole of ideal gas (0 degC, 1 atm)


class Role(Base):
    def __init__(self, app):
        super().__init__(app)
        self.name = n = app.cfg["role"]
        self.last = {}
        self.key = self.out = None  # the metric read, and the (metric, unit) derived from it
        p = self.params
        if n == "grid_monitor":
            sensor, suffix, self.out = p.get("meter"), "_hz", ("f_dev", "Hz")
            self.nominal = float(p.get("nominal_hz", 50))
        elif n == "electrolyser":
            sensor, suffix, self.out = p.get("stack"), "_a", ("h2_nlh", "NL/h")
            # each cell makes one H2 per two electrons: mol/s = I * cells * eff / (2 F)
            self.k = int(p.get("cells", 1)) / (2 * _F) * _NL_PER_MOL * 3600
            self.eff = float(p.get("faradaic_eff", 0.95))
            self.f = None
            if "f1" in p and "f2" in p and "area_m2" in p:
                # j = I / area, in mA/cm2: I * 1000 mA / (area_m2 * 10000 cm2)
                self.f = (float(p["f1"]), float(p["f2"]), 0.1 / float(p["area_m2"]))
        else:
            return
        for s in app.sensors:
            for m in s.names:
                if self.key is None and m.endswith(suffix) and (sensor is None or s.id == sensor):
                    self.key = m

    def sample(self, m, now):
        self.last = m
        v = m.get(self.key) if self.key else None
        if v is None:  # its sensor is bad this time: no derived value either
            return
        if self.name == "grid_monitor":
            m["f_dev"] = round(v - self.nominal, 4)
        else:
            i = max(0.0, v)
            eff = self.eff
            if self.f is not None:
                f1, f2, per_a = self.f
                j2 = (i * per_a) ** 2
                eff = j2 / (f1 + j2) * f2 if j2 else 0.0
            m["h2_nlh"] = round(i * self.k * eff, 3)

    def units(self):
        return dict((self.out,)) if self.out else {}

    def state(self):
        m = self.last
        if self.name == "grid_monitor":
            return "%.3f Hz" % m[self.key] if self.key in m else "no frequency"
        if self.out:
            return "H2 %.1f NL/h" % m["h2_nlh"] if "h2_nlh" in m else "stack unread"
        return ""
