"""Electrolyser fidelity: Ulleberg (2003) cell voltage and Faraday efficiency with his published PHOEBUS
parameters (values worked by hand below) and the shape of his curves; Faraday's law; the lumped
thermal model's closed-form steady state; gas crossover; the ideal-gas tank."""

import math

import numpy as np
import pytest

from gridtwin.twin import electrolyser as el
from gridtwin.twin.topology import KINDS

A = 0.25   # m2, PHOEBUS cell area


@pytest.mark.parametrize("i_a, t_c, expected", [
    # U = 1.229 + (r1 + r2 T)/A I + s log10((t1 + t2/T + t3/T^2)/A I + 1), Ulleberg (2003) Table 1:
    # 80 C, 2000 A/m2: 1.229 + 6.05e-5/0.25*500 = +0.1210; 0.185*log10(0.1749625*500 + 1) = +0.3602
    (500.0, 80.0, 1.7102),
    # 40 C, 1000 A/m2: +7.05e-5/0.25*250 = 0.0705; 0.185*log10(1.05985*250 + 1) = 0.4486
    (250.0, 40.0, 1.7481),
    # 60 C, 3000 A/m2: +6.55e-5/0.25*750 = 0.1965; 0.185*log10(0.435578*750 + 1) = 0.4654
    (750.0, 60.0, 1.8909),
    (0.0, 80.0, 1.229),   # no current: the reversible voltage
])
def test_ulleberg_cell_voltage_hand_worked(i_a, t_c, expected):
    assert el.cell_voltage(i_a, t_c, A) == pytest.approx(expected, abs=2e-4)


def test_ulleberg_curve_shapes():
    # His Fig. 3: voltage rises with current, steeply at first (activation, logarithmic), then
    # almost linearly (ohmic); a hotter stack needs less voltage at every current.
    i = np.linspace(1, 1000, 200)
    for t in (20.0, 40.0, 60.0, 80.0):
        u = np.array([el.cell_voltage(x, t, A) for x in i])
        assert (np.diff(u) > 0).all()
        assert (np.diff(u, 2) < 1e-12).all()                      # concave: log term flattens
        slope_hi = (u[-1] - u[-20]) / (i[-1] - i[-20])
        assert slope_hi > 0.8 * (el.R1 + el.R2 * t) / A           # ohmic slope dominates at high current
    for x in (50.0, 300.0, 900.0):
        us = [el.cell_voltage(x, t, A) for t in (20.0, 40.0, 60.0, 80.0)]
        assert us == sorted(us, reverse=True)
    # Within his measured range (0-300 mA/cm2, 20-80 C) the cell stays between 1.4 and 2.2 V.
    assert 1.4 < el.cell_voltage(100, 80, A) < el.cell_voltage(750, 20, A) < 2.2


@pytest.mark.parametrize("j_macm2, t_c, expected", [
    (10.0, 80.0, 100 / 350 * 0.980),     # eta_F = j^2/(f1 + j^2) f2, f1 = 250, f2 = 0.980 at 80 C
    (100.0, 80.0, 1e4 / 10250 * 0.980),
    (300.0, 80.0, 9e4 / 90250 * 0.980),
    (20.0, 40.0, 400 / 550 * 0.990),     # f1 = 150, f2 = 0.990 at 40 C
    (20.0, 60.0, 400 / 600 * 0.985),     # f1 = 200, f2 = 0.985 at 60 C
])
def test_faraday_efficiency_table_2(j_macm2, t_c, expected):
    i = j_macm2 * 10 * A   # mA/cm2 -> A/m2 -> A
    assert el.faraday_efficiency(i, t_c, A) == pytest.approx(expected, rel=1e-9)


def test_faraday_efficiency_shape():
    # Rises with current towards f2; falls with temperature at low current (his Fig. 5).
    effs = [el.faraday_efficiency(i, 80, A) for i in (5, 20, 100, 500, 1000)]
    assert effs == sorted(effs) and effs[-1] < 0.98
    assert el.faraday_efficiency(50, 40, A) > el.faraday_efficiency(50, 80, A)


def test_faradays_law():
    # 21 cells, 750 A, eta_F = 1: 15750/192970.66 = 0.0816186 mol/s = 6.586 Nm3/h of H2.
    n = el.h2_mol_s(750.0, 21, 1.0)
    assert n == pytest.approx(0.0816186, rel=1e-5)
    assert n * el.NM3_PER_MOL * 3600 == pytest.approx(6.586, rel=1e-3)


def test_current_for_power_inverts_the_polarisation_curve():
    for p_w, t in ((5000.0, 60.0), (25000.0, 80.0), (40000.0, 30.0)):
        i = el.current_for_power(p_w, t, 21, A, 5000.0)
        assert 21 * el.cell_voltage(i, t, A) * i == pytest.approx(p_w, rel=1e-7)
    assert el.current_for_power(1e9, 60.0, 21, A, 1000.0) == 1000.0


def _params(**over):
    p = {k: v.default for k, v in KINDS["electrolyser"].params.items()}
    p.update(over)
    return p


def test_thermal_model_reaches_its_closed_form_steady_state():
    # No cooler: C_t dT/dt = n_c (U(I,T) - U_tn) I - (T - T_a)/R_t vanishes at T* with
    # T* = T_a + R_t n_c (U(I,T*) - U_tn) I; solve that by bisection and compare.
    p = _params(cool_w_per_k=0.0, t0_c=25.0, t_max_c=150.0, i_max_a=300.0, min_current_a=0.0)
    t_a, i = 20.0, 300.0
    s = el.Stack(p, t_a)
    lo, hi = t_a, 150.0
    for _ in range(100):
        mid = (lo + hi) / 2
        g = t_a + p["r_t"] * 21 * (el.cell_voltage(i, mid, A) - el.U_TN) * i - mid
        lo, hi = (mid, hi) if g > 0 else (lo, mid)
    t_star = (lo + hi) / 2
    for _ in range(20 * 24 * 60):          # 20 days at one-minute steps (R_t C_t = 29 h)
        s.operate(1e9, 60.0)               # offered more than i_max: runs at 300 A
    assert s.i_a == pytest.approx(i)
    assert s.t_c == pytest.approx(t_star, abs=0.05)
    assert t_star > 60.0                  # without its cooler the stack runs hot (~93 C at 300 A)


def test_thermal_time_constant_is_r_c():
    # Idle stack cooling from 80 C to ambient: T - T_a falls by 1/e after R_t C_t = 0.167*625e3 s = 29 h.
    p = _params(t0_c=80.0)
    s = el.Stack(p, 20.0)
    tau = p["r_t"] * p["c_t_kj"] * 1000.0
    steps = int(tau / 10.0)
    for _ in range(steps):
        s.operate(0.0, 10.0)
    assert (s.t_c - 20.0) / 60.0 == pytest.approx(math.exp(-1), abs=2e-3)


def test_h2_in_o2_rises_at_part_load_and_trips_above_2_percent():
    p = _params(t0_c=70.0)
    full = el.Stack(p, 20.0)
    full.operate(21 * 1.85 * 700, 0.1)
    assert full.hto_pct < 0.5
    low = el.Stack(p, 20.0)
    low.operate(21 * 1.5 * 40, 0.1)        # ~40 A: 4 % of the rated current
    assert low.hto_pct > 2.0
    started, _ = low.check_trips(low.hto_pct, False, 0.1)
    assert started == "h2_in_o2" and low.tripped == "h2_in_o2"
    low.operate(21 * 1.5 * 40, 0.1)
    assert low.i_a == 0.0                   # a tripped stack draws nothing
    cleared = None
    for _ in range(int(p["reset_s"] / 0.1) + 2):
        _, c = low.check_trips(0.0, False, 0.1)
        cleared = cleared or c
    assert cleared == "h2_in_o2" and low.tripped is None


def test_tank_is_an_ideal_gas_and_conserves_moles():
    t = el.Tank({"volume_m3": 2.0, "p0_bar": 5.0, "p_max_bar": 30.0, "t_c": 20.0, "offtake_nm3h": 1.0})
    n0 = t.n_mol
    assert n0 == pytest.approx(5e5 * 2.0 / (8.314462618 * 293.15))
    for _ in range(3600):
        t.update(0.01, 1.0)
    assert t.n_mol == pytest.approx(n0 + t.in_total_mol - t.out_total_mol, rel=1e-12)
    assert t.out_total_mol == pytest.approx(1.0 / el.NM3_PER_MOL, rel=1e-9)   # 1 Nm3 in an hour
    assert t.p_bar == pytest.approx(t.n_mol * 8.314462618 * 293.15 / 2.0 / 1e5)
