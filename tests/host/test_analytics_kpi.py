"""Issue #15's battery round-trip efficiency KPI (gridtwin.analytics.kpi), against the twin's bess,
whose one-way efficiency is a parameter (round trip: its square)."""

import pytest

from gridtwin.analytics.base import Context
from gridtwin.analytics.kpi import EnergyKpi
from gridtwin.daemon.store_sqlite import SqliteStore
from gridtwin.site import load_site
from gridtwin.twin import Twin

SITE = '''[site]
id = "mg"

[twin]
step_s = 1.0
start = "2026-06-21T00:00:00Z"

[[twin.components]]
id = "meter1"
kind = "grid_meter"

[[twin.components]]
id = "inv1"
kind = "pv_inverter"
parent = "meter1"
params = { rated_kw = 500.0, p_dc0_kw = 550.0 }

[[twin.components]]
id = "bess1"
kind = "bess"
parent = "meter1"
params = { capacity_kwh = 200.0, max_kw = 250.0, efficiency = 0.92, soc0_pct = 50.0 }

[[twin.components]]
id = "panel1"
kind = "load_panel"
parent = "meter1"
params = { load_kw = 300.0, pf = 0.9 }
'''
METRICS = ("p_kw", "soc_pct", "e_stored_kwh", "e_charge_kwh", "e_discharge_kwh")


def _run(tmp_path, kpi, hours, metrics=METRICS, every_s=10, names=None):
    """The twin's bess read every `every_s` as a meter (or the OPC UA bridge) would, into the KPI;
    `names`: {twin metric: the name it arrives under} (an OPC UA collector's tags)."""
    names = names or {}
    p = tmp_path / "site.toml"
    p.write_text(SITE)
    tw = Twin.from_site(load_site(p), seed=3)
    t0 = int(tw.topo.start_datetime().timestamp() * 1000)
    while tw.t < hours * 3600:
        tw.run_until(tw.t + every_s)
        m = tw.state()["bess1"]["m"]
        ts = t0 + int(round(tw.t * 1000))
        kpi.observe([("bess1", names.get(k, k), ts, float(m[k])) for k in metrics])
    return tw.state()["bess1"]["m"]


@pytest.mark.parametrize("via", ["twin", "opcua"])
def test_battery_round_trip_efficiency_is_the_twins(tmp_path, via):
    """A day of self-consumption (the store fills on the PV surplus and empties in the evening and
    the night, ending at another charge than it began): rte_pct is the twin's 0.92^2 = 84.64 %,
    where discharged / charged alone is not; the charge and discharge of each bucket add up to the
    twin's counters; the window survives a restart. The same through the OPC UA collector, whose
    points are the bess's tags (Energy_Charged, Energy_Discharged, Energy_Stored)."""
    from gridtwin.opcua.model import TAGS

    names = {m: tag for tag, m in TAGS["bess"]} if via == "opcua" else None
    store = SqliteStore(tmp_path / "gt.db")
    kpi = EnergyKpi(Context(store=store), aggregation_s=300, rte_window_s=86400)
    m = _run(tmp_path, kpi, 24, names=names)
    assert m["e_charge_kwh"] > 100 and m["e_discharge_kwh"] > 100  # it cycled
    naive = m["e_discharge_kwh"] / m["e_charge_kwh"]
    assert abs(naive - 0.92**2) > 0.02  # the stored energy moved: D / C alone is off
    rte = {b: v for b, n, k, v in store.kpis() if n == "bess1" and k == "rte_pct"}
    assert rte[max(rte)] == pytest.approx(84.64, abs=0.05)
    sums = {}
    for _b, n, k, v in store.kpis():
        if n == "bess1" and k in ("charge_kwh", "discharge_kwh"):
            sums[k] = sums.get(k, 0.0) + v
    # the buckets written so far (the open one is not): within one bucket of the counters
    assert sums["charge_kwh"] == pytest.approx(m["e_charge_kwh"], abs=250 * 300 / 3600)
    assert sums["discharge_kwh"] == pytest.approx(m["e_discharge_kwh"], abs=250 * 300 / 3600)
    again = EnergyKpi(Context(store=store), aggregation_s=300, rte_window_s=86400)
    again.restore(kpi.state())
    assert again.rte("bess1") == pytest.approx(kpi.rte("bess1"))
    store.close()


def test_without_stored_energy_the_round_trip_is_discharged_over_charged(tmp_path):
    """A store that reports only its counters: D / C over the window (a restarted counter counts on
    from its new value); nothing before the window holds charge and discharge."""
    kpi = EnergyKpi(Context(), aggregation_s=300)
    t = 1_780_000_000_000
    feed = [(0, 0.0, 0.0), (60, 5.0, 0.0), (120, 10.0, 0.0)]
    for s, c, d in feed:
        kpi.observe(
            [("b", "e_charge_kwh", t + s * 1000, c), ("b", "e_discharge_kwh", t + s * 1000, d)]
        )
    assert kpi.rte("b") is None  # charge only
    # the meter restarts (its counters from 0), then 8 kWh come out
    for s, c, d in [(180, 0.0, 0.0), (240, 0.0, 4.0), (300, 0.0, 8.0)]:
        kpi.observe(
            [("b", "e_charge_kwh", t + s * 1000, c), ("b", "e_discharge_kwh", t + s * 1000, d)]
        )
    assert kpi.rte("b") == pytest.approx(0.8)
