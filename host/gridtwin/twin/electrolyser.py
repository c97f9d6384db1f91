"""Alkaline electrolyser stack, gas separator and hydrogen tank.

Ulleberg, O. (2003) "Modeling of advanced alkaline electrolyzers: a system simulation approach",
Int. J. Hydrogen Energy 28, 21-33. Every stack parameter is an input (site.toml
`[[twin.components]]` of kind electrolyser); the defaults in `topology.KINDS["electrolyser"]` are
his PHOEBUS Juelich stack (21 cells, 0.25 m2, 7 bar). docs/twin-models.md says where each value
comes from.

* Reversible cell voltage U_rev = dG / (2F) at the stack's temperature and pressure: the temperature
  dependence at 1 bar from LeRoy, Bowen & LeRoy (1980, J. Electrochem. Soc. 127, 1954),
    U_rev0(T) = 1.5184 - 1.5421e-3 T + 9.523e-5 T ln T + 9.84e-8 T^2   (T in K; 1.2291 V at 25 C),
  plus the Nernst term of ideal, dry product gases at the stack pressure p (bar, water activity 1):
    U_rev = U_rev0(T) + R T / (2F) ln(p^1.5).
  At 80 C that is 1.1834 V at 1 bar and 1.2278 V at PHOEBUS' 7 bar; with it his I-U parameters
  reproduce his measured PHOEBUS cell voltages (30-80 C) to 7 mV rms
  (tests/twin/test_twin_electrolyser.py).
* Cell voltage (his I-U relation), T in degrees C, I in A, A in m2:
    U = U_rev + (r1 + r2 T)/A * I + s * log10((t1 + t2/T + t3/T^2)/A * I + 1)
* Faraday efficiency: eta_F = (j^2 / (f1 + j^2)) * f2 with j = I/A in mA/cm2 (PHOEBUS: f1 = 250
  mA2/cm4, f2 = 0.96, one set for its 80 C operation).
* Gas production by Faraday's law: n_H2 = eta_F * n_c * I / (2 F) mol/s, n_O2 = n_H2 / 2.
* Lumped thermal model: C_t dT/dt = Q_gen - Q_loss - Q_cool with Q_gen = n_c (U - U_tn) I,
  U_tn = 1.482 V (thermoneutral voltage, HHV; it hardly moves with T), Q_loss = (T - T_a)/R_t,
  Q_cool a proportional cooler above the set point.

Gas purity: hydrogen crosses the diaphragm by diffusion (Fick's law), at a rate proportional to its
partial pressure and independent of current, while oxygen production is proportional to current;
hence H2-in-O2 (HTO) rises at part load (Haug, Koj & Turek 2017, Int. J. Hydrogen Energy 42, 9406):
  n_cross = k * p * A * n_c,   HTO = n_cross / (n_O2 + n_cross)

Tank: ideal gas, p = n R T / V (at 30 bar hydrogen's compressibility factor is 1.02; we ignore it).
"""

from __future__ import annotations

import math

F = 96485.33212  # C/mol, Faraday constant
R_GAS = 8.314462618  # J/(mol K)
U_TN = 1.482  # V, thermoneutral cell voltage (HHV)
NM3_PER_MOL = 0.022414  # m3 (0 C, 1 atm) per mol of ideal gas
M_H2 = 2.01588e-3  # kg/mol
_LN10 = math.log(10.0)


def reversible_voltage(t_c: float, p_bar: float = 1.0) -> float:
    """U_rev at t_c (degrees C) and p_bar (LeRoy et al. 1980 at 1 bar, plus the Nernst pressure
    term)."""
    tk = t_c + 273.15
    u0 = 1.5184 - 1.5421e-3 * tk + 9.523e-5 * tk * math.log(tk) + 9.84e-8 * tk * tk
    return u0 + R_GAS * tk / (2.0 * F) * 1.5 * math.log(p_bar)


def coefficients(t_c: float, p: dict) -> tuple[float, float, float, float]:
    """(U_rev, a, b, s) so that U(I) = U_rev + a I + s log10(b I + 1) at temperature t_c for stack
    p."""
    t = max(t_c, 1.0)  # the t2/T, t3/T^2 terms blow up at 0 C (his fit covers 20-80 C)
    area = p["area_m2"]
    # Above ~105 C (PHOEBUS values) t1 + t2/T + t3/T^2 turns negative, far outside the fit: no
    # activation term then, rather than the logarithm of a negative number.
    b = max(0.0, (p["t1"] + p["t2"] / t + p["t3"] / (t * t)) / area)
    return reversible_voltage(t_c, p["pressure_bar"]), (p["r1"] + p["r2"] * t) / area, b, p["s"]


def _u(i_a: float, c: tuple[float, float, float, float]) -> float:
    u_rev, a, b, s = c
    return u_rev + a * i_a + s * math.log10(b * i_a + 1.0)


def cell_voltage(i_a: float, t_c: float, p: dict) -> float:
    """Ulleberg's cell voltage, V, for a stack with parameters p. Valid for I >= 0 and T > 0 C."""
    return _u(i_a, coefficients(t_c, p))


def faraday_efficiency(i_a: float, p: dict) -> float:
    j = i_a / p["area_m2"] / 10.0  # A/m2 -> mA/cm2
    return j * j / (p["f1"] + j * j) * p["f2"]


def h2_mol_s(i_a: float, cells: int, eta_f: float) -> float:
    """Faraday's law: two electrons per H2 molecule."""
    return eta_f * cells * i_a / (2.0 * F)


def current_for_power(p_w: float, t_c: float, p: dict, i_max: float | None = None) -> float:
    """The stack current that draws p_w, i.e. solves n_c U(I, T) I = P (U rises with I: one
    root)."""
    if p_w <= 0:
        return 0.0
    cells = p["cells"]
    c = coefficients(t_c, p)
    lo, hi = 0.0, p["i_max_a"] if i_max is None else i_max
    if cells * _u(hi, c) * hi <= p_w:
        return hi
    _, a, b, s = c
    # Newton from a good start, guarded by the bracket (the function is smooth and increasing).
    i = min(hi, p_w / (cells * 1.8))
    for _ in range(30):
        u = _u(i, c)
        f = cells * u * i - p_w
        if f > 0:
            hi = i
        else:
            lo = i
        du = a + s * b / ((b * i + 1.0) * _LN10)
        i_new = i - f / (cells * (u + i * du))
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
        self.u_cell = reversible_voltage(self.t_c, p["pressure_bar"])
        self.eta_f = 0.0
        self.n_h2 = 0.0
        self.n_o2 = 0.0
        self.hto_pct = 0.0
        self.q_gen_w = self.q_loss_w = self.q_cool_w = 0.0
        self.cooling_ok = True
        self.tripped: str | None = None  # reason of the active trip
        self.clear_for = 0.0  # seconds the cause has been gone
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
            i = current_for_power(p_avail_w, self.t_c, p)
            if i < p["min_current_a"]:
                i = 0.0  # below minimum load the controller idles the stack
        self.i_a = i
        # Idle, the cell sits at its open-circuit (reversible) voltage.
        self.u_cell = cell_voltage(i, self.t_c, p)
        self.eta_f = faraday_efficiency(i, p) if i > 0 else 0.0
        self.n_h2 = h2_mol_s(i, p["cells"], self.eta_f)
        self.n_o2 = self.n_h2 / 2.0
        n_cross = p["permeability"] * p["pressure_bar"] * p["area_m2"] * p["cells"]
        # With the stack idle nothing flows through the separator: purity is reported only under
        # load.
        self.hto_pct = 100.0 * n_cross / (self.n_o2 + n_cross) if self.n_o2 > 0 else 0.0
        # Thermal model (forward Euler is stable: the time constant R_t C_t is ~29 h).
        self.q_gen_w = p["cells"] * (self.u_cell - U_TN) * i if i > 0 else 0.0
        self.q_loss_w = (self.t_c - self.t_air_c) / p["r_t"]
        self.q_cool_w = (
            max(0.0, p["cool_w_per_k"] * (self.t_c - p["t_set_c"])) if self.cooling_ok else 0.0
        )
        self.t_c += dt * (self.q_gen_w - self.q_loss_w - self.q_cool_w) / (p["c_t_kj"] * 1000.0)
        self.h2_total_mol += self.n_h2 * dt
        drawn = self.p_w
        self.energy_in_j += drawn * dt
        return drawn

    def check_trips(
        self, hto_pct: float, tank_over: bool, dt: float
    ) -> tuple[str | None, str | None]:
        """Latch a trip on a cause; clear it reset_s after every cause is gone. Returns (started,
        cleared)."""
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
        still = (self.t_c > p["t_max_c"] - 5.0 and self.tripped == "over_temperature") or (
            tank_over and self.tripped == "over_pressure"
        )
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
