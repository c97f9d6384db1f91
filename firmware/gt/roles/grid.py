# The grid monitor: an ADE7953 on the mains; it adds the frequency deviation from nominal (f_dev,
# Hz) of params {"meter": id}'s frequency, else the first sensor's "_hz".
from gt.roles.base import Role as Base, reads


class Role(Base):
    name = "grid_monitor"

    def __init__(self, app):
        super().__init__(app)
        self.last = {}
        p = self.params
        self.nominal = float(p.get("nominal_hz", 50))
        self.key = reads(app, "_hz", p.get("meter"))

    def sample(self, m, now):
        self.last = m
        v = m.get(self.key) if self.key else None
        if v is not None:  # None: its sensor is bad this time, no derived value either
            m["f_dev"] = round(v - self.nominal, 4)

    def units(self):
        return {"f_dev": "Hz"}

    def state(self):
        m = self.last
        return "%.3f Hz" % m[self.key] if self.key in m else "no frequency"
