# The electrolyser: an INA226 on the stack (and ADC channels for pressure, temperature); it adds
# the hydrogen production from Faraday's law, h2_nlh (normal litres per hour), with Ulleberg's
# Faraday efficiency eta_F = j^2 / (f1 + j^2) * f2 (j in mA/cm2 of the cell area) when params give
# f1, f2 and area_m2, as the twin computes it (gridtwin/twin/electrolyser.py), else the constant
# faradaic_eff. The stack's current is params {"stack": id}'s, else the first sensor's "_a".
# (Each deriving role has a module of its own, so a node loads only its own: gt/roles/grid.py is the
# grid monitor; pv, which derives nothing, is the plain role of base.py.)
from gt.roles.base import Role as Base, reads

_F = 96485.33  # Faraday constant, C/mol
_NL_PER_MOL = 22.414  # normal litres per mole of ideal gas (0 degC, 1 atm)


class Role(Base):
    name = "electrolyser"

    def __init__(self, app):
        super().__init__(app)
        self.last = {}
        p = self.params
        # each cell makes one H2 per two electrons: mol/s = I * cells * eff / (2 F)
        self.k = int(p.get("cells", 1)) / (2 * _F) * _NL_PER_MOL * 3600
        self.eff = float(p.get("faradaic_eff", 0.95))
        self.f = None
        if "f1" in p and "f2" in p and "area_m2" in p:
            # j = I / area, in mA/cm2: I * 1000 mA / (area_m2 * 10000 cm2)
            self.f = (float(p["f1"]), float(p["f2"]), 0.1 / float(p["area_m2"]))
        self.key = reads(app, "_a", p.get("stack"))

    def sample(self, m, now):
        self.last = m
        v = m.get(self.key) if self.key else None
        if v is None:  # its sensor is bad this time: no derived value either
            return
        i = max(0.0, v)
        eff = self.eff
        if self.f is not None:
            f1, f2, per_a = self.f
            j2 = (i * per_a) ** 2
            eff = j2 / (f1 + j2) * f2 if j2 else 0.0
        m["h2_nlh"] = round(i * self.k * eff, 3)

    def units(self):
        return {"h2_nlh": "NL/h"}

    def state(self):
        m = self.last
        return "H2 %.1f NL/h" % m["h2_nlh"] if "h2_nlh" in m else "stack unread"
