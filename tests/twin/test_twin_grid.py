"""Grid frequency: the aggregated swing equation with droop against its closed forms.

References: steady state  df = -dP / (D + 1/R)  (per unit; Kundur 1994, eq. 11.13); initial rate of
change  df/dt = -dP f0 / (2H); and the whole trajectory against the linear system's exact step
response computed by scipy (matrix exponential, an independent implementation).
"""

import numpy as np
import pytest

from gridtwin.twin.grid import GridBus
from gridtwin.twin.topology import KINDS

scipy_signal = pytest.importorskip("scipy.signal")


def bus(**over):
    p = {k: v.default for k, v in KINDS["grid_bus"].params.items()}
    p.update(over)
    return GridBus(p, np.random.default_rng(0))


@pytest.mark.parametrize(
    "h, d, r, tg, loss_mw",
    [(5.0, 1.0, 0.05, 0.5, 50.0), (3.0, 0.0, 0.04, 2.0, 30.0), (8.0, 2.0, 0.08, 0.3, 100.0)],
)
def test_settles_at_the_closed_form_frequency(h, d, r, tg, loss_mw):
    g = bus(h_s=h, d_pu=d, r_pu=r, t_gov_s=tg)
    g.lost_mw = loss_mw
    for _ in range(int(120 / 0.1)):
        g.step(0.1)
    dp = loss_mw / 1000.0
    expected = 50.0 * (1 - dp / (d + 1 / r))
    assert g.f_hz == pytest.approx(expected, abs=1e-5)  # 10 uHz after 2 minutes
    assert g.steady_state_hz() == pytest.approx(expected, abs=1e-12)
    # The governors picked up dP / (1 + D R) and the load damping the rest.
    assert g.dpm == pytest.approx(dp / (1 + d * r), rel=1e-4)


def test_trajectory_matches_the_exact_step_response_and_the_nadir_is_realistic():
    h, d, r, tg, dp = 5.0, 1.0, 0.05, 0.5, 0.05
    g = bus(h_s=h, d_pu=d, r_pu=r, t_gov_s=tg)
    g.lost_mw = dp * 1000.0
    dt = 0.05
    t = np.arange(1, 401) * dt
    ours = []
    for _ in t:
        g.step(dt)
        ours.append(g.f_hz - 50.0)
    ours = np.array(ours)
    # w(s)/dP(s) = -(1 + s Tg) / (2H Tg s^2 + (2H + D Tg) s + D + 1/R)
    sys = scipy_signal.lti([-tg, -1.0], [2 * h * tg, 2 * h + d * tg, d + 1 / r])
    _, ref = scipy_signal.step(sys, T=np.concatenate([[0.0], t]))
    ref = ref[1:] * dp * 50.0
    assert np.abs(ours - ref).max() < 1e-4  # 0.1 mHz all along
    nadir, t_nadir = ours.min(), t[ours.argmin()]
    settle = -dp / (d + 1 / r) * 50.0
    # A realistic loss-of-generation response: it overshoots the settling value, bottoms out within
    # seconds, and recovers to the droop value (ENTSO-E style numbers for a 5 % loss, H = 5 s).
    assert settle < 0 and nadir < settle and nadir > 1.6 * settle
    assert 0.5 < t_nadir < 5.0
    assert ours[-1] == pytest.approx(settle, abs=2e-3)


def test_initial_rocof_is_dp_f0_over_2h():
    g = bus(h_s=4.0)
    g.lost_mw = 40.0
    g.step(0.01)
    assert g.rocof == pytest.approx(-0.04 * 50.0 / (2 * 4.0), rel=0.01)


def test_no_imbalance_no_deviation_and_noise_is_seeded():
    g = bus()
    for _ in range(100):
        g.step(0.1)
    assert g.f_hz == 50.0
    a, b = bus(noise_mw=2.0), bus(noise_mw=2.0)
    fa, fb = [], []
    for _ in range(500):
        a.step(0.1), b.step(0.1)
        fa.append(a.f_hz), fb.append(b.f_hz)
    assert fa == fb and max(abs(x - 50.0) for x in fa) > 0
