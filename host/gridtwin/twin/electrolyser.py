"""Alkaline electrolyser stack, gas separator and hydrogen tank.

Ulleberg, O. (2003) "Modeling of advanced alkaline electrolyzers: a system simulation approach",
Int. J. Hydrogen Energy 28, 21-33. Parameters of the PHOEBUS Juelich stack (21 cells, 0.25 m2):

* Cell voltage (his eq. 4), T in degrees C, I in A, A in m2:
  U = U_rev + (r1 + r2 T)/A * I + s * log10((t1 + t2/T + t3/T^2)/A * I + 1)
  r1 = 8.05e-5 ohm m2, r2 = -2.5e-7 ohm m2/C, s = 0.185 V, t1 = -0.1002 m2/A, t2 = 8.424 m2 C/A,
  t3 = 247.3 m2 C2/A. U_rev = 1.229 V: the parameters were fitted with the standard reversible
  voltage, so we keep it (his eq. 1 at 25 C, 1 atm).
* Faraday efficiency (his eq. 9): eta_F = (i^2 / (f1 + i^2)) * f2 with i = I/A in mA/cm2;
  f1 = 150, 200, 250 mA2/cm4 and f2 = 0.990, 0.985, 0.980 at 40, 60, 80 C (his Table 2), linear
  between and held outside.
* Gas production by Faraday's law: n_H2 = eta_F * n_c * I / (2 F) mol/s, n_O2 = n_H2 / 2.
* Lumped thermal model (his eq. 12): C_t dT/dt = Q_gen - Q_loss - Q_cool with
  Q_gen = n_c (U - U_tn) I, U_tn = 1.482 V (thermoneutral voltage, HHV), Q_loss = (T - T_a)/R_t,
  C_t = 625 kJ/C, R_t = 0.167 C/W; Q_cool a proportional cooler above the set point.

Gas purity: hydrogen crosses the diaphragm by diffusion (Fick's law), at a rate proportional to its
partial pressure and independent of current, while oxygen production is proportional to current;
hence H2-in-O2 (HTO) rises at part load (Haug, Koj & Turek 2017, Int. J. Hydrogen Energy 42, 9406):
  n_cross = k * p * A * n_c,   HTO = n_cross / (n_O2 + n_cross)

Tank: ideal gas, p = n R T / V (at 30 bar hydrogen's compressibility factor is 1.02; we ignore it).
"""

from __future__ import annotations

import math

F = 96485.33212           # C/mol, Faraday constant
R_GAS = 8.314462618       # J/(mol K)
U_REV = 1.229             # V, reversible cell voltage at standard conditions
U_TN = 1.482              # V, thermoneutral cell voltage (HHV)
NM3_PER_MOL = 0.022414    # m3 (0 C, 1 atm) per mol of ideal gas
M_H2 = 2.01588e-3         # kg/mol

# Ulleberg (2003), Table 1: PHOEBUS stack.
R1, R2 = 8.05e-5, -2.5e-7
S = 0.185
T1, T2, T3 = -0.1002, 8.424, 247.3
# Ulleberg (2003), Table 2: Faraday-efficiency parameters at 40, 60, 80 C.
_F_TEMPS = (40.0, 60.0, 80.0)
_F1 = (150.0, 200.0, 250.0)
_F2 = (0.990, 0.985, 0.980)


def cell_voltage(i_a: float, t_c: float, area_m2: float = 0.25) -> float:
    """Ulleberg's cell voltage, V. Valid for I >= 0 and T > 0 C (his fit covers 20-80 C)."""
    t = max(t_c, 1.0)   # the t2/T, t3/T^2 terms blow up at 0 C
    ohmic = (R1 + R2 * t) / area_m2 * i_a
    act = S * math.log10(max((T1 + T2 / t + T3 / (t * t)) / area_m2 * i_a + 1.0, 1e-12))
    return U_REV + ohmic + act


def _interp(x: float, xs, ys) -> float:
    if x <= xs[0]:
        return ys[0]
    for k in range(1, len(xs)):
        if x <= xs[k]:
            w = (x - xs[k - 1]) / (xs[k] - xs[k - 1])
            return ys[k - 1] + w * (ys[k] - ys[k - 1])
    return ys[-1]


def faraday_efficiency(i_a: float, t_c: float, area_m2: float = 0.25) -> float:
    j = i_a / area_m2 / 10.0          # A/m2 -> mA/cm2
    f1 = _interp(t_c, _F_TEMPS, _F1)
    f2 = _interp(t_c, _F_TEMPS, _F2)
    return j * j / (f1 + j * j) * f2


def h2_mol_s(i_a: float, cells: int, eta_f: float) -> float:
    """Faraday's law: two electrons per H2 molecule."""
    return eta_f * cells * i_a / (2.0 * F)


def current_for_power(p_w: float, t_c: float, cells: int, area_m2: float, i_max: float) -> float:
    """The stack current that draws p_w, i.e. solves n_c U(I, T) I = P (U rises with I: one root)."""
    if p_w <= 0:
        return 0.0
    lo, hi = 0.0, i_max
    if cells * cell_voltage(hi, t_c, area_m2) * hi <= p_w:
        return hi
    # Newton from a good start, guarded by the bracket (the function is smooth and increasing).
    i = min(hi, p_w / (cells * 1.8))
    for _ in range(30):
        u = cell_voltage(i, t_c, area_m2)
        f = cells * u * i - p_w
        if f > 0:
            hi = i
        else:
            lo = i
        du = (cell_voltage(i + 1e-3, t_c, area_m2) - u) / 1e-3
        step = f / (cells * (u + i * du))
        i_new = i - step
        if not lo < i_new < hi:
            i_new = 0.5 * (lo + hi)
        if abs(i_new - i) < 1e-9 * max(1.0, i):
            return i_new
        i = i_new
    return i


class Stack:
    """One stack's state: temperature, current, gas flows, trips."""

    def __init__(self, p: dict, t_air_c: float):
        self.p = p
        self.t_c = p["t0_c"]
        self.t_air_c = t_air_c
        self.i_a = 0.0
        self.u_cell = U_REV
        self.eta_f = 0.0
        self.n_h2 = 0.0
        self.n_o2 = 0.0
        self.hto_pct = 0.0
        self.q_gen_w = self.q_loss_w = self.q_cool_w = 0.0
        self.cooling_ok = True
        self.tripped: str | None = None   # reason of the active trip
        self.clear_for = 0.0              # seconds the cause has been gone
        self.h2_total_mol = 0.0
        self.energy_in_j = 0.0

    @property
    def p_w(self) -> float:
        return self.p["cells"] * self.u_cell * self.i_a

    def operate(self, p_avail_w: float, dt: float) -> float:
        """Take up to p_avail_w for dt seconds; return the power actually drawn (W)."""
        p = self.p
        if self.tripped:
            i = 0.0
        else:
            i = current_for_power(p_avail_w, self.t_c, p["cells"], p["area_m2"], p["i_max_a"])
            if i < p["min_current_a"]:
                i = 0.0   # below minimum load the controller idles the stack
        self.i_a = i
        self.u_cell = cell_voltage(i, self.t_c, p["area_m2"]) if i > 0 else U_REV
        self.eta_f = faraday_efficiency(i, self.t_c, p["area_m2"]) if i > 0 else 0.0
        self.n_h2 = h2_mol_s(i, p["cells"], self.eta_f)
        self.n_o2 = self.n_h2 / 2.0
        n_cross = p["permeability"] * p["pressure_bar"] * p["area_m2"] * p["cells"]
        # With the stack idle nothing flows through the separator: purity is reported only under load.
        self.hto_pct = 100.0 * n_cross / (self.n_o2 + n_cross) if self.n_o2 > 0 else 0.0
        # Thermal model (forward Euler is stable: the time constant R_t C_t is ~29 h).
        self.q_gen_w = p["cells"] * (self.u_cell - U_TN) * i if i > 0 else 0.0
        self.q_loss_w = (self.t_c - self.t_air_c) / p["r_t"]
        self.q_cool_w = max(0.0, p["cool_w_per_k"] * (self.t_c - p["t_set_c"])) if self.cooling_ok else 0.0
        self.t_c += dt * (self.q_gen_w - self.q_loss_w - self.q_cool_w) / (p["c_t_kj"] * 1000.0)
        self.h2_total_mol += self.n_h2 * dt
        drawn = self.p_w
        self.energy_in_j += drawn * dt
        return drawn

    def check_trips(self, hto_pct: float, tank_over: bool, dt: float) -> tuple[str | None, str | None]:
        """Latch a trip on a cause; clear it reset_s after every cause is gone. Returns (started, cleared)."""
        p = self.p
        cause = None
        if self.u_cell > p["u_cell_max_v"]:
            cause = "cell_overvoltage"
        elif self.t_c > p["t_max_c"]:
            cause = "over_temperature"
        elif hto_pct > p["hto_max_pct"]:
            cause = "h2_in_o2"
        elif tank_over:
            cause = "over_pressure"
        if self.tripped is None:
            if cause:
                self.tripped, self.clear_for = cause, 0.0
                return cause, None
            return None, None
        # Tripped: the causes that persist while idle (temperature, tank) keep it tripped.
        still = (self.t_c > p["t_max_c"] - 5.0 and self.tripped == "over_temperature") or \
                (tank_over and self.tripped == "over_pressure")
        self.clear_for = 0.0 if still else self.clear_for + dt
        if self.clear_for >= p["reset_s"]:
            reason, self.tripped = self.tripped, None
            return None, reason
        return None, None


class Separator:
    """Gas separator: the O2 side's purity seen through the gas space (a first-order lag)."""

    def __init__(self, p: dict):
        self.tau = p["tau_s"]
        self.hto_pct = 0.0

    def update(self, hto_in: float, dt: float) -> float:
        a = math.exp(-dt / self.tau)
        self.hto_pct = hto_in + (self.hto_pct - hto_in) * a
        return self.hto_pct


class Tank:
    def __init__(self, p: dict):
        self.p = p
        self.v = p["volume_m3"]
        self.t_k = p["t_c"] + 273.15
        self.n_mol = p["p0_bar"] * 1e5 * self.v / (R_GAS * self.t_k)
        self.in_total_mol = 0.0
        self.out_total_mol = 0.0

    @property
    def p_bar(self) -> float:
        return self.n_mol * R_GAS * self.t_k / self.v / 1e5

    def update(self, n_in: float, dt: float) -> None:
        out = min(self.n_mol, self.p["offtake_nm3h"] / 3600.0 / NM3_PER_MOL * dt)
        self.n_mol += n_in * dt - out
        self.in_total_mol += n_in * dt
        self.out_total_mol += out
