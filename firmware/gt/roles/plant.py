# Simulated components of the data-centre power chain: utility, transformer, switchgear,
# generator, distribution, ups, pdu, server. Each keeps a little local state that commands change
# and telemetry reports, so the host's twin (and a person at the REPL) can play outages:
#   supply   upstream power present (set_supply; a generator has none: start/stop instead)
#   fault    the component itself has failed (set_fault): no output whatever the supply
#   load_kw  what it carries downstream (set_load)
#   batt_pct the UPS's battery: drains while it carries the load without supply, recharges after
# Output is on when the component is healthy and has something to give: supply, a running
# generator, or UPS battery charge.
#
# On a hardware-in-the-loop bench (params "hil": {"supply_pin", "fault_pin", "load_pin",
# "load_fs_kw", "batt_pin"}) the node does not simulate: every sample it reads what the component
# does from its inputs: supply and fault on digital pins (1 = present / failed), load and battery
# on analog pins, 0..3.0 V for 0..load_fs_kw and 0..100 %. That is how the twin drives a virtual
# node continuously (gridtwin.vworld.plant_hil); commands still work, but a wired input wins at the
# next sample.
import time
from micropython import const
from gt.roles.base import Role as Base

_HIL_FS_UV = const(3000000)  # an analog input's full scale, microvolts (gridtwin.vworld.HIL_FS_V)

_UNITS = {"supply": "", "fault": "", "out": "", "load_kw": "kW", "v": "V"}


def _flag(args, key="on"):
    v = args.get(key) if isinstance(args, dict) else None
    if not isinstance(v, bool):
        raise ValueError("needs {\"%s\": true|false}" % key)
    return v


class Role(Base):
    def __init__(self, app):
        super().__init__(app)
        self.name = app.cfg["role"]
        p = self.params
        self.gen = self.name == "generator"
        self.ups = self.name == "ups"
        self.supply = bool(p.get("supply", not self.gen))  # a generator starts stopped
        self.fault = False
        self.rated_kw = float(p.get("rated_kw", 100))
        self.load_kw = float(p.get("load_kw", self.rated_kw / 4))
        # medium voltage from the utility, 400 V three-phase after the transformer, 230 V at a
        # server
        self.v_nom = float(
            p.get(
                "v_nom", 11000 if self.name == "utility" else 230 if self.name == "server" else 400
            )
        )
        self.batt_kwh = float(p.get("batt_kwh", 20))
        self.charge_kw = float(p.get("charge_kw", 5))
        self.batt = float(p.get("batt_pct", 100)) if self.ups else None
        self._t = None
        self._hil = None
        hil = p.get("hil")
        if hil:
            import machine

            def din(k):
                n = hil.get(k)
                return None if n is None else machine.Pin(n, machine.Pin.IN)

            def ain(k):
                n = hil.get(k)
                return (
                    None if n is None else machine.ADC(machine.Pin(n), atten=machine.ADC.ATTN_11DB)
                )

            self._hil = (
                din("supply_pin"),
                din("fault_pin"),
                ain("load_pin"),
                ain("batt_pin"),
                float(hil.get("load_fs_kw", self.rated_kw)),
            )
        c = self.commands = {"set_fault": self.set_fault, "set_load": self.set_load}
        if self.gen:
            c["start"] = self.start
            c["stop"] = self.stop
        else:
            c["set_supply"] = self.set_supply

    # --- commands: handler(args) -> result; ValueError for a bad argument ---
    def set_fault(self, args):
        self.fault = _flag(args)
        return self.snapshot()

    def set_supply(self, args):
        self.supply = _flag(args)
        return self.snapshot()

    def start(self, args):
        self.supply = True
        return self.snapshot()

    def stop(self, args):
        self.supply = False
        return self.snapshot()

    def set_load(self, args):
        kw = args.get("kw") if isinstance(args, dict) else None
        if not isinstance(kw, (int, float)) or isinstance(kw, bool) or not 0 <= kw <= self.rated_kw:
            raise ValueError("needs {\"kw\": 0..%g}" % self.rated_kw)
        self.load_kw = float(kw)
        return self.snapshot()

    # --- state ---
    def out(self):
        if self.fault:
            return False
        return self.supply or (self.ups and self.batt > 0)

    def snapshot(self):
        d = {"supply": self.supply, "fault": self.fault, "out": self.out(), "load_kw": self.load_kw}
        if self.ups:
            d["batt_pct"] = round(self.batt, 2)
        return d

    def _battery(self, now):
        # integrate over the time since the last sample (ticks: a stable board clock)
        if self._t is None:
            self._t = now
            return
        h = time.ticks_diff(now, self._t) / 3600000
        self._t = now
        if self.fault:
            return
        if self.supply:
            self.batt = min(100.0, self.batt + self.charge_kw * h / self.batt_kwh * 100)
        elif self.batt > 0:
            self.batt = max(0.0, self.batt - self.load_kw * h / self.batt_kwh * 100)

    def _inputs(self):
        supply, fault, load, batt, fs = self._hil
        if supply is not None:
            self.supply = bool(supply.value())
        if fault is not None:
            self.fault = bool(fault.value())
        if load is not None:
            self.load_kw = round(load.read_uv() * fs / _HIL_FS_UV, 3)  # to the watt
        if batt is not None and self.ups:
            self.batt = min(100.0, batt.read_uv() * 100 / _HIL_FS_UV)

    def sample(self, m, now):
        if self._hil is not None:
            self._inputs()
        if self.ups and (self._hil is None or self._hil[3] is None):
            self._battery(now)
        if self.ups:
            m["batt_pct"] = round(self.batt, 2)
            m["on_batt"] = 1 if self.out() and not self.supply else 0
        on = self.out()
        m["supply"] = 1 if self.supply else 0
        m["fault"] = 1 if self.fault else 0
        m["out"] = 1 if on else 0
        m["load_kw"] = self.load_kw if on else 0.0
        m["v"] = self.v_nom if on else 0.0

    def units(self):
        u = dict(_UNITS)
        if self.ups:
            u["batt_pct"] = "%"
            u["on_batt"] = ""
        return u

    def state(self):
        if self.fault:
            return "FAULT"
        if not self.out():
            return "no output" if not self.gen else "stopped"
        s = "%.1fkW" % self.load_kw
        if self.ups:
            s += (" batt " if self.supply else " ON BATT ") + "%d%%" % self.batt
        return s
