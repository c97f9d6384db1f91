"""PV array physics: sun position, clear-sky irradiance, clouds, cell temperature, the I-V curve and
MPPT.

Equations (docs/twin-models.md gives the derivations and sources):

* Sun position: the Astronomical Almanac's low-precision solar coordinates (Michalsky 1988, Solar
  Energy 40, 227): ecliptic longitude from mean longitude and anomaly, right ascension and
  declination, hour angle from Greenwich mean sidereal time; then
  cos(z) = sin(phi) sin(delta) + cos(phi) cos(delta) cos(h). About 0.01 degree.
* Clear sky, Haurwitz (1945) as given by Reno, Hansen & Stein (2012, SAND2012-2389):
  GHI_cs = 1098 cos(z) exp(-0.059 / cos(z)) W/m2, zero with the sun below the horizon.
* Clear sky, Ineichen & Perez (2002, Solar Energy 73, 151), the site's other choice, with the Linke
  turbidity TL of its air (haze and water vapour) and its altitude h (m):
  GHI_cs = cg1 I0 cos(z) exp(-cg2 AM (fh1 + fh2 (TL - 1))), cg1 = 5.09e-5 h + 0.868,
  cg2 = 3.92e-5 h + 0.0387, fh1 = exp(-h/8000), fh2 = exp(-h/1250); AM the pressure-corrected air
  mass (Kasten & Young 1989, standard-atmosphere pressure at h), I0 the extraterrestrial irradiance
  of the day (Spencer 1971: 1366.1 W/m2 times the Earth-Sun distance factor). Without the paper's
  optional exp(0.01 AM^1.8) "enhancement", as pvlib by default.
* Clouds, Kasten & Czeplak (1980): GHI = GHI_cs (1 - 0.75 N^3.4) with cloud cover N in [0, 1]. N is
an
  Ornstein-Uhlenbeck process around the mean cover, seeded, so clouds come and go.
* Cell temperature, Faiman (2008): T_c = T_air + G / (u0 + u1 * wind).
* DC power at the maximum-power point, PVWatts (Dobos 2014): P_mp = G/1000 * P_dc0 (1 + gamma (T_c -
25)).
* The I-V curve the MPPT climbs is the explicit exponential model i = 1 - C1 (exp(v/C2) - 1) in
  per-unit v = V/Voc, i = I/Isc, with C1 = 1/(exp(1/C2) - 1) so that i(1) = 0, and C2 chosen so that
  the maximum of v*i lies at v = Vmp/Voc. Scaling Isc so that the curve passes through (Vmp, Imp)
  with Vmp*Imp equal to PVWatts' P_mp makes the curve's true maximum *exactly* the PVWatts power.
* Perturb and observe (Femia et al. 2005): move the operating voltage by dV; keep going while power
  rises, turn round when it falls.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

_J2000 = datetime(2000, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def solar_zenith_deg(when: datetime, lat_deg: float, lon_deg: float) -> float:
    """Solar zenith angle in degrees (Astronomical Almanac low-precision sun, Michalsky 1988).

    `when` is timezone-aware UTC. Good to ~0.01 degree in declination between 1950 and 2050; no
    refraction (the sun's geometric position).
    """
    n = (when - _J2000).total_seconds() / 86400.0  # days since J2000.0
    L = math.radians((280.460 + 0.9856474 * n) % 360.0)  # mean longitude
    g = math.radians((357.528 + 0.9856003 * n) % 360.0)  # mean anomaly
    lam = (
        L + math.radians(1.915) * math.sin(g) + math.radians(0.020) * math.sin(2 * g)
    )  # ecliptic longitude
    eps = math.radians(23.439 - 0.0000004 * n)  # obliquity of the ecliptic
    ra = math.atan2(math.cos(eps) * math.sin(lam), math.cos(lam))
    decl = math.asin(math.sin(eps) * math.sin(lam))
    gmst_h = (18.697374558 + 24.06570982441908 * n) % 24.0  # Greenwich mean sidereal time
    ha = math.radians(gmst_h * 15.0 + lon_deg) - ra
    lat = math.radians(lat_deg)
    cz = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(ha)
    return math.degrees(math.acos(max(-1.0, min(1.0, cz))))


def haurwitz_ghi(zenith_deg: float) -> float:
    """Clear-sky global horizontal irradiance, W/m2 (Haurwitz 1945)."""
    cz = math.cos(math.radians(zenith_deg))
    if cz <= 0:
        return 0.0
    return 1098.0 * cz * math.exp(-0.059 / cz)


def extraterrestrial_wm2(when: datetime) -> float:
    """Normal irradiance at the top of the atmosphere, W/m2 (Spencer 1971's Fourier series for the
    Earth-Sun distance, day angle from 1 January, solar constant 1366.1 W/m2)."""
    b = 2.0 * math.pi * (when.timetuple().tm_yday - 1) / 365.0
    return 1366.1 * (
        1.00011
        + 0.034221 * math.cos(b)
        + 0.00128 * math.sin(b)
        + 0.000719 * math.cos(2 * b)
        + 0.000077 * math.sin(2 * b)
    )


def relative_airmass(zenith_deg: float) -> float:
    """Kasten & Young (1989); nan with the sun below the horizon."""
    if zenith_deg >= 90.0:
        return math.nan
    return 1.0 / (math.cos(math.radians(zenith_deg)) + 0.50572 * (96.07995 - zenith_deg) ** -1.6364)


def pressure_pa(altitude_m: float) -> float:
    """Pressure of the ICAO standard atmosphere at an altitude, Pa."""
    return 101325.0 * (1.0 - 2.25577e-5 * altitude_m) ** 5.25588


def ineichen_ghi(
    zenith_deg: float, airmass_abs: float, linke_turbidity: float, altitude_m: float, i0_wm2: float
) -> float:
    """Clear-sky global horizontal irradiance, W/m2 (Ineichen & Perez 2002)."""
    cz = math.cos(math.radians(zenith_deg))
    if cz <= 0 or not math.isfinite(airmass_abs):
        return 0.0
    fh1, fh2 = math.exp(-altitude_m / 8000.0), math.exp(-altitude_m / 1250.0)
    cg1, cg2 = 5.09e-5 * altitude_m + 0.868, 3.92e-5 * altitude_m + 0.0387
    return cg1 * i0_wm2 * cz * math.exp(-cg2 * airmass_abs * (fh1 + fh2 * (linke_turbidity - 1.0)))


class ClearSky:
    """The site's clear-sky model, chosen in [twin]: `clear_sky = "haurwitz"` (no parameters) or
    "ineichen" with `linke_turbidity` and `altitude_m`."""

    def __init__(
        self, model: str = "haurwitz", linke_turbidity: float = 3.0, altitude_m: float = 0.0
    ):
        self.model, self.tl, self.alt = model, linke_turbidity, altitude_m
        self.p_ratio = pressure_pa(altitude_m) / 101325.0

    def ghi(self, zenith_deg: float, when: datetime) -> float:
        if self.model == "haurwitz":
            return haurwitz_ghi(zenith_deg)
        am = relative_airmass(zenith_deg) * self.p_ratio
        return ineichen_ghi(zenith_deg, am, self.tl, self.alt, extraterrestrial_wm2(when))


def kasten_czeplak(ghi_cs: float, cover: float) -> float:
    """All-sky GHI from clear-sky GHI and cloud cover fraction (Kasten & Czeplak 1980)."""
    return ghi_cs * (1.0 - 0.75 * min(1.0, max(0.0, cover)) ** 3.4)


def faiman_cell_temp(
    g_wm2: float, t_air_c: float, wind_ms: float = 1.0, u0: float = 25.0, u1: float = 6.84
) -> float:
    return t_air_c + g_wm2 / (u0 + u1 * wind_ms)


def pvwatts_dc(g_wm2: float, t_cell_c: float, p_dc0_w: float, gamma_pdc: float) -> float:
    """DC power at the maximum-power point, W (PVWatts, Dobos 2014)."""
    return g_wm2 / 1000.0 * p_dc0_w * (1.0 + gamma_pdc * (t_cell_c - 25.0))


def _shape_c2(vm: float) -> float:
    """C2 of the per-unit curve whose power maximum lies at v = vm (bisection on d(vi)/dv = 0)."""

    def dpdv(c2: float) -> float:
        c1 = 1.0 / math.expm1(1.0 / c2)
        i = 1.0 - c1 * math.expm1(vm / c2)
        return i - vm * c1 / c2 * math.exp(vm / c2)

    lo, hi = (
        0.005,
        1.0,
    )  # sharp knee (small C2): power still rising at vm; soft curve: already falling
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if dpdv(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class IVCurve:
    """The array's I-V curve at one irradiance and cell temperature (see the module docstring)."""

    def __init__(self, vmp_stc: float, voc_ratio: float, p_dc0_w: float, gamma_pdc: float):
        self.vmp_stc, self.voc_ratio, self.p_dc0_w, self.gamma = (
            vmp_stc,
            voc_ratio,
            p_dc0_w,
            gamma_pdc,
        )
        self.vm = 1.0 / voc_ratio
        self.c2 = _shape_c2(self.vm)
        self.c1 = 1.0 / math.expm1(1.0 / self.c2)
        self.i_m = 1.0 - self.c1 * math.expm1(self.vm / self.c2)  # per-unit current at the MPP
        self.set_conditions(0.0, 25.0)

    def set_conditions(self, g_wm2: float, t_cell_c: float) -> None:
        # Voltages follow the power temperature coefficient (so Vmp*Imp is PVWatts' P_mp exactly);
        # currents follow irradiance.
        scale = max(0.05, 1.0 + self.gamma * (t_cell_c - 25.0))
        self.vmp = self.vmp_stc * scale
        self.voc = self.vmp * self.voc_ratio
        self.p_mp = max(0.0, pvwatts_dc(g_wm2, t_cell_c, self.p_dc0_w, self.gamma))
        imp = self.p_mp / self.vmp
        self.isc = imp / self.i_m

    def current(self, v: float) -> float:
        if v <= 0:
            return self.isc
        if v >= self.voc:
            return 0.0
        return max(0.0, self.isc * (1.0 - self.c1 * math.expm1(v / self.voc / self.c2)))

    def power(self, v: float) -> float:
        return v * self.current(v)


class PerturbObserve:
    """Perturb-and-observe MPPT on the converter's input voltage.

    With a power limit (the load cannot take more), it walks to the right of the maximum until the
    power is under the limit, then holds while the power stays within 3 % under it: a PV array is
    curtailed by raising its voltage, never by shorting it.
    """

    def __init__(self, v0: float, dv: float):
        self.v = v0
        self.dv = dv
        self.direction = 1.0
        self.p_last = 0.0
        self.limiting = False

    def update(self, curve: IVCurve, p_limit: float) -> float:
        p = curve.power(self.v)
        if p > p_limit:
            self.v = min(curve.voc, self.v + self.dv)
            self.direction = 1.0
            self.limiting = True
        elif self.limiting and p >= 0.97 * p_limit:
            pass  # inside the band under the limit: hold, instead of hunting back over it
        else:
            self.limiting = False
            if p < self.p_last:
                self.direction = -self.direction
            self.v = min(curve.voc, max(0.05 * curve.voc, self.v + self.direction * self.dv))
        self.p_last = p
        return self.v


class Clouds:
    """Cloud cover N(t): an Ornstein-Uhlenbeck process around the mean cover, clipped to [0, 1].

    Exact discretisation: x' = mu + (x - mu) a + sigma sqrt(1 - a^2) z, a = exp(-dt/tau), so the
    statistics do not depend on the time step.
    """

    def __init__(self, rng, mean: float, sigma: float, tau_s: float):
        self.rng, self.mu, self.sigma, self.tau = rng, mean, sigma, tau_s
        self.x = mean

    def step(self, dt: float) -> float:
        a = math.exp(-dt / self.tau)
        self.x = (
            self.mu
            + (self.x - self.mu) * a
            + self.sigma * math.sqrt(1 - a * a) * float(self.rng.standard_normal())
        )
        return min(1.0, max(0.0, self.x))


def utc_at(start: datetime, t: float) -> datetime:
    return start + timedelta(seconds=t)
