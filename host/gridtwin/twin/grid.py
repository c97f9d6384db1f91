"""Grid frequency: the aggregated swing equation with governor droop (one-machine equivalent).

Per unit on the system base S_base, with frequency deviation w = (f - f0)/f0
(Kundur 1994, "Power System Stability and Control", sections 11.1 and 12.2):

  2H dw/dt   = dPm - dPL - D w          (swing equation with load damping D)
  Tg dPm/dt  = -w / R - dPm             (governor-turbine, first order, droop R)

dPL is the imbalance: demand above schedule, or generation lost. In steady state both derivatives
vanish, so  w_ss = -dPL / (D + 1/R)  and the governors pick up dPm = dPL / (1 + D R).
Between, the frequency dips to a nadir set by H, Tg and R (the system is second order:
2H Tg s^2 + (2H + D Tg) s + (D + 1/R) in the denominator).

The aggregate keeps H, D and R fixed after a generator trip (the lost unit's share of inertia and
droop is small in a large system); integration is classic RK4 with sub-steps of at most 10 ms,
which is far below the fastest time constant.
"""

from __future__ import annotations

import math


class GridBus:
    def __init__(self, p: dict, rng):
        self.p = p
        self.rng = rng
        self.s = p["s_base_mw"]
        self.scheduled_mw = p["load_mw"]  # generation dispatched for the initial demand
        self.load_mw = p["load_mw"]
        self.lost_mw = 0.0  # generation lost (set_fault)
        self.noise_mw = 0.0
        self.w = 0.0
        self.dpm = 0.0
        self.rocof = 0.0

    def imbalance_pu(self) -> float:
        return (self.load_mw + self.noise_mw - self.scheduled_mw + self.lost_mw) / self.s

    def _deriv(self, w: float, dpm: float, dpl: float) -> tuple[float, float]:
        p = self.p
        return (
            (dpm - dpl - p["d_pu"] * w) / (2.0 * p["h_s"]),
            (-w / p["r_pu"] - dpm) / p["t_gov_s"],
        )

    def step(self, dt: float) -> None:
        p = self.p
        if p["noise_mw"] > 0:
            # OU load noise with a 30 s correlation time, exact discretisation.
            a = math.exp(-dt / 30.0)
            self.noise_mw = self.noise_mw * a + p["noise_mw"] * math.sqrt(1 - a * a) * float(
                self.rng.standard_normal()
            )
        dpl = self.imbalance_pu()
        n = max(1, math.ceil(dt / 0.01))
        h = dt / n
        w0 = self.w
        for _ in range(n):
            w, m = self.w, self.dpm
            k1 = self._deriv(w, m, dpl)
            k2 = self._deriv(w + h / 2 * k1[0], m + h / 2 * k1[1], dpl)
            k3 = self._deriv(w + h / 2 * k2[0], m + h / 2 * k2[1], dpl)
            k4 = self._deriv(w + h * k3[0], m + h * k3[1], dpl)
            self.w = w + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            self.dpm = m + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        self.rocof = (self.w - w0) * p["f_nom_hz"] / dt

    @property
    def f_hz(self) -> float:
        return self.p["f_nom_hz"] * (1.0 + self.w)

    @property
    def p_mech_mw(self) -> float:
        return self.scheduled_mw - self.lost_mw + self.dpm * self.s

    def steady_state_hz(self) -> float:
        """Closed-form settling frequency for the present imbalance: f0 (1 - dPL / (D + 1/R))."""
        p = self.p
        return p["f_nom_hz"] * (1.0 - self.imbalance_pu() / (p["d_pu"] + 1.0 / p["r_pu"]))
