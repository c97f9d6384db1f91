"""Issue #16's energy assets (gridtwin/twin/assets.py): energy balance at the grid meter, the
store's energy against its efficiency, and the inverter's efficiency curve against the loss model it
states."""

import math

import pytest

from gridtwin.site import load_site
from gridtwin.twin import Twin
from gridtwin.twin.assets import inverter_ac_pu, inverter_efficiency

SITE = '''[site]
id = "mg"

[twin]
step_s = 1.0
start = "{start}"

[[twin.components]]
id = "meter1"
kind = "grid_meter"

[[twin.components]]
id = "inv1"
kind = "pv_inverter"
parent = "meter1"
params = {{ rated_kw = 500.0, p_dc0_kw = 550.0 }}

[[twin.components]]
id = "bess1"
kind = "bess"
parent = "meter1"
params = {{ capacity_kwh = {cap}, max_kw = 250.0, efficiency = 0.95, soc0_pct = 50.0 }}

[[twin.components]]
id = "panel1"
kind = "load_panel"
parent = "meter1"
params = {{ load_kw = 300.0, pf = 0.9 }}
'''


def _twin(tmp_path, start="2026-06-21T06:00:00Z", cap=1000.0):
    p = tmp_path / "site.toml"
    p.write_text(SITE.format(start=start, cap=cap))
    return Twin.from_site(load_site(p), seed=3)


def test_energy_balance_at_the_meter_over_a_day(tmp_path):
    # a small store fills and empties within the day, so every branch (charge, discharge, limits)
    # runs
    tw = _twin(tmp_path, start="2026-06-21T00:00:00Z", cap=200.0)
    tw.run_until(24 * 3600)
    s = tw.state()
    m, inv, b, pan = s["meter1"]["m"], s["inv1"]["m"], s["bess1"]["m"], s["panel1"]["m"]
    lhs = m["e_import_kwh"] - m["e_export_kwh"]
    rhs = pan["e_total_kwh"] + b["e_charge_kwh"] - b["e_discharge_kwh"] - inv["e_total_kwh"]
    assert inv["e_total_kwh"] > 1000 and b["e_charge_kwh"] > 100 and b["e_discharge_kwh"] > 100
    assert m["e_import_kwh"] > 0 and m["e_export_kwh"] > 0
    assert lhs == pytest.approx(rhs, abs=1e-3)
    # the store: stored energy moves by charge x eff - discharge / eff (round trip = eff^2)
    stored = b["e_stored_kwh"] - 100.0
    assert stored == pytest.approx(b["e_charge_kwh"] * 0.95 - b["e_discharge_kwh"] / 0.95, abs=1e-3)
    assert 10.0 - 1e-6 <= b["soc_pct"] <= 95.0 + 1e-6


def test_power_balance_and_phase_values_every_step(tmp_path):
    tw = _twin(tmp_path)
    for _ in range(200):
        tw.step()
        s = tw.state()
        m, inv, b, pan = s["meter1"]["m"], s["inv1"]["m"], s["bess1"]["m"], s["panel1"]["m"]
        assert m["p_kw"] == pytest.approx(pan["p_kw"] - inv["p_kw"] - b["p_kw"], abs=1e-4)
        assert abs(b["p_kw"]) <= 250.0 + 1e-6
        # three phases: S = 3 V_ln I, and the panel's P / S is its power factor
        s_kva = 3 * pan["v_l1_v"] * pan["i_l1_a"] / 1000.0
        assert pan["p_kw"] / s_kva == pytest.approx(0.9, abs=1e-4)
        assert m["v_l1_v"] == pytest.approx(400.0 / math.sqrt(3), abs=1e-4)
        assert 0.0 <= m["pf"] <= 1.0 and abs(m["f_hz"] - 50.0) < 0.1


def test_inverter_efficiency_curve(tmp_path):
    l0, l1, l2 = 0.005, 0.01, 0.015
    # the model solved for P_ac gives back its DC input: P_dc = P_ac + losses
    for d in (0.006, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0):
        x = inverter_ac_pu(d, l0, l1, l2)
        assert x + l0 + l1 * x + l2 * x * x == pytest.approx(d, rel=1e-12)
    eff = {x: inverter_efficiency(x, l0, l1, l2) for x in (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)}
    # a grid-tied inverter's shape: poor at 5 %, peak in the middle, a little lower at full load
    assert eff[0.05] < eff[0.1] < eff[0.3] and eff[1.0] < max(eff.values())
    assert 0.96 < max(eff.values()) < 0.985
    # EU efficiency (EN 50530 weights) in the range data sheets quote for this class
    eu = (
        0.03 * eff[0.05]
        + 0.06 * eff[0.1]
        + 0.13 * eff[0.2]
        + 0.10 * eff[0.3]
        + 0.48 * eff[0.5]
        + 0.20 * eff[1.0]
    )
    assert 0.95 < eu < 0.98
    assert inverter_ac_pu(0.004, l0, l1, l2) == 0.0  # below the no-load losses: standby
    # in the twin: AC = DC minus the curve's losses, and it clips at the rating
    tw = _twin(tmp_path, start="2026-06-21T11:00:00Z")
    tw.run_until(30)
    inv = tw.state()["inv1"]
    m = inv["m"]
    assert m["p_kw"] <= 500.0 + 1e-9
    assert m["eff_pct"] == pytest.approx(100.0 * m["p_kw"] / m["p_dc_kw"], abs=1e-3)
    assert inv["status"] in ("mppt", "clipping") and inv["units"]["irr_wm2"] == "W/m²"


def test_night_standby_and_unknown_parent_kind(tmp_path):
    tw = _twin(tmp_path, start="2026-06-21T23:00:00Z")
    tw.run_until(60)
    s = tw.state()
    assert s["inv1"]["status"] == "standby" and s["inv1"]["m"]["p_kw"] == 0.0
    assert s["bess1"]["status"] == "discharging"
    p = tmp_path / "bad.toml"
    p.write_text(
        SITE.format(start="2026-06-21T06:00:00Z", cap=1.0).replace(
            'id = "panel1"\nkind = "load_panel"\nparent = "meter1"',
            'id = "panel1"\nkind = "load_panel"\nparent = "inv1"',
        )
    )
    from gridtwin.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_site(p)
    assert "twin.components[3]" in str(e.value)


def test_set_load_moves_a_panels_mean_and_the_meter_follows(tmp_path):
    tw = _twin(
        tmp_path, start="2026-06-21T23:00:00Z", cap=0.001
    )  # night, an empty store: the grid carries it
    tw.run_until(10)
    tw.apply("panel1", "set_load", {"kw": 600.0})
    tw.run_until(400)
    s = tw.state()
    assert 450.0 < s["panel1"]["m"]["p_kw"] < 750.0
    assert s["meter1"]["m"]["p_kw"] == pytest.approx(
        s["panel1"]["m"]["p_kw"] - s["bess1"]["m"]["p_kw"], abs=1e-6
    )
    assert s["meter1"]["status"] == "importing"
