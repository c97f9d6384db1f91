"""The engine: energy conservation through both chains, Coulomb counting against its closed form,
failure propagation down to dropped loads and restoration in order, breaker trips, determinism,
commands and hardware-in-the-loop overrides."""

import json

import numpy as np
import pytest

from gridtwin.site import example_site_path, load_site
from gridtwin.twin import Twin, TwinCommandError
from gridtwin.twin.synthetic import synthetic_topology

# A small chain whose generator will not start, so the UPS battery must carry the load until it is
# empty.
CHAIN = '''[site]
id = "c1"

[[nodes]]
id = "util"
role = "utility"

[[nodes]]
id = "gen"
role = "generator"

[[nodes]]
id = "sw"
role = "switchgear"
parent = ["util", "gen"]

[[nodes]]
id = "ups"
role = "ups"
parent = "sw"

[[nodes]]
id = "pdu"
role = "pdu"
parent = "ups"

[[nodes]]
id = "srv"
role = "server"
parent = "pdu"

[twin]
step_s = 0.1

[[twin.components]]
id = "ups"
params = { battery_v = 480.0, battery_ah = 1.0, efficiency = 0.95, battery_efficiency = 0.9, \
  no_load_kw = 0.2, \
  no_load_pct = 0.0, load_loss_pct = 0.0, low_soc_pct = 20.0, charge_kw = 2.0 }

[[twin.components]]
id = "pdu"
params = { efficiency = 0.98 }

[[twin.components]]
id = "srv"
params = { load_kw = 9.8, noise_pct = 0.0 }
'''


@pytest.fixture
def chain(tmp_path):
    p = tmp_path / "site.toml"
    p.write_text(CHAIN)
    return Twin.from_site(load_site(p))


@pytest.fixture(scope="module")
def example():
    return load_site(example_site_path())


def ac_balance(tw) -> float:
    """sources - battery charge (+ discharge) - demand - losses: zero when energy is conserved."""
    ac = tw.ac
    return float(ac.p_out[ac.sources].sum() - ac.batt_kw.sum() - ac.demand.sum() - ac.loss.sum())


def test_ac_energy_is_conserved_every_step_through_an_outage(example):
    tw = Twin.from_site(example, seed=3)
    tw.apply("util_a", "set_fault", {"on": True})
    worst = 0.0
    for k in range(600):  # on battery, transfer, on generator
        if k == 400:
            tw.apply("util_a", "set_fault", {"on": False})
        tw.step()
        worst = max(worst, abs(ac_balance(tw)))
    assert worst < 1e-9
    # and on a 1,000-component synthetic site with dual-source switches and 30 UPSs
    big = Twin(synthetic_topology(1000))
    for _ in range(50):
        big.step()
        assert abs(ac_balance(big)) < 1e-8 * max(1.0, float(big.ac.demand.sum()))
    assert big.ac.demand.sum() > 0


def test_losses_follow_the_element_model(example):
    tw = Twin.from_site(example, seed=1)
    tw.step()
    s = tw.state_of("trf_a")["m"]
    p = tw.topo.by_id["trf_a"].params
    expected = p["no_load_kw"] + p["load_loss_kw"] * (s["p_kw"] / p["capacity_kw"]) ** 2
    assert s["loss_kw"] == pytest.approx(expected, abs=1e-5)
    pdu = tw.state_of("pdu_a")["m"]
    assert pdu["p_in_kw"] == pytest.approx(
        pdu["p_kw"] / tw.topo.by_id["pdu_a"].params["efficiency"], abs=1e-5
    )


def test_ups_coulomb_counting_battery_low_load_drop_and_restoration(chain):
    tw = chain
    tw.apply("gen", "set_fault", {"on": True})  # the generator will not start
    tw.run_until(5.0)
    tw.apply("util", "set_fault", {"on": True})
    t_fail = tw.t
    tw.step()
    ups = tw.state_of("ups")["m"]
    assert ups["on_battery"] == 1
    # Battery current I = (P_out / eta_batt + P_noload) / V; SoC falls by I dt / (3600 Ah).
    p_out = 9.8 / 0.98
    draw_kw = p_out / 0.9 + 0.2
    assert ups["p_kw"] == pytest.approx(p_out, rel=1e-9)
    assert -ups["batt_a"] == pytest.approx(draw_kw * 1000 / 480, rel=1e-6)
    t_empty = 3600 * 1.0 * 480 / (draw_kw * 1000)  # 1 Ah at 480 V: ~152 s
    t_low = 0.8 * t_empty  # 20 % left
    tw.run_until(t_fail + 60.0)
    assert tw.state_of("ups")["m"]["soc_pct"] == pytest.approx(
        100 * (1 - (60.0 + 0.1) / t_empty), abs=0.1
    )
    tw.run_until(t_fail + t_empty + 2.0)
    ev = {(e.component, e.type, e.state): e.t for e in tw.events}
    assert ev[("ups", "battery_low", "start")] - t_fail == pytest.approx(t_low, abs=0.25)
    assert ev[("srv", "load_dropped", "start")] - t_fail == pytest.approx(t_empty, abs=0.25)
    assert tw.state_of("srv")["status"] == "off" and tw.state_of("srv")["m"]["p_kw"] == 0.0
    # An empty UPS is off, no longer "on battery".
    assert ev[("ups", "ups_on_battery", "clear")] == ev[("ups", "supply_lost", "start")]
    # Utility back: switch recloses on it, the UPS is fed and recharges, the load comes back, in
    # that order.
    tw.apply("util", "set_fault", {"on": False})
    tw.run_until(tw.t + 5.0)
    ev = {(e.component, e.type, e.state): e.t for e in tw.events}
    assert (
        ev[("util", "utility_lost", "clear")]
        < ev[("ups", "supply_lost", "clear")]
        <= ev[("srv", "load_dropped", "clear")]
        <= ev[("site", "restored", "info")]
    )
    assert tw.state_of("ups")["m"]["batt_kw"] == pytest.approx(2.0)  # recharging
    assert abs(ac_balance(tw)) < 1e-9


def test_overload_trips_the_breaker_and_reset_recloses(example):
    tw = Twin.from_site(example, seed=1)
    tw.apply("srv_a", "set_load", {"kw": 30.0})  # the PDU is rated 22 kW
    tw.run_until(1.0)
    assert tw.state_of("pdu_a")["status"] == "ok"  # not before its trip delay (2 s)
    tw.run_until(3.0)
    types = [(e.component, e.type, e.state) for e in tw.events]
    assert ("pdu_a", "trip:overload", "start") in types and (
        "srv_a",
        "load_dropped",
        "start",
    ) in types
    assert tw.state_of("pdu_a")["status"] == "tripped"
    tw.apply("srv_a", "set_load", {"kw": 10.0})
    tw.apply("pdu_a", "reset")
    tw.run_until(4.0)
    assert tw.state_of("pdu_a")["status"] == "ok" and tw.state_of("srv_a")["m"]["p_kw"] > 9
    assert not [e for e in tw.active_events() if e.component in ("pdu_a", "srv_a")]


def test_plant_energy_balance_and_hydrogen_accounting(example):
    tw = Twin.from_site(example, seed=5)
    pl = tw.plants[0]
    tank = pl.tanks["tank1"][1]
    n0 = tank.n_mol
    for _ in range(600):
        tw.step()
        e = pl.energy_terms()
        assert e["pv"] == pytest.approx(e["converter_loss"] + e["stacks"] + e["battery"], abs=1e-6)
    assert e["pv"] > 20000 and e["stacks"] > 20000  # a sunny June morning in Juelich
    made = sum(s.h2_total_mol for s in pl.stacks.values())
    assert tank.n_mol == pytest.approx(n0 + made - tank.out_total_mol, rel=1e-12)
    # The MPPT keeps the array near its maximum-power point despite clouds (the stacks can take it
    # all).
    st = tw.state_of("pv1")["m"]
    assert st["p_kw"] > 0.9 * st["p_mp_kw"]


def test_low_sun_raises_h2_in_o2_and_trips_the_stack(example):
    tw = Twin.from_site(example, seed=1)
    tw.override("pv1", "ghi_wm2", 60.0)  # a dark sky: stacks at a few % load
    tw.run_until(40.0)
    trips = [e for e in tw.events if e.type == "trip:h2_in_o2" and e.state == "start"]
    assert {e.component for e in trips} == {"EL1", "EL2"}
    assert all(e.detail["hto_pct"] >= 2.0 for e in trips)  # rounded to 3 decimals
    assert (
        tw.state_of("EL1")["m"]["i_a"] == 0.0 and tw.state_of("EL1")["status"] == "tripped:h2_in_o2"
    )
    assert tw.state_of("pv1")["overridden"] == ["ghi_wm2"]
    # The trip resets itself reset_s (30 s) after the cause is gone; the stack restarts, and trips
    # again while the sky stays dark.
    tw.run_until(150.0)
    assert [e.state for e in tw.events if e.component == "EL1"][:4] == [
        "start",
        "clear",
        "start",
        "clear",
    ]


def test_over_temperature_trip_from_a_hardware_reading(example):
    tw = Twin.from_site(example, seed=1)
    tw.override("EL2", "t_c", 95.0)  # a physical node's thermocouple
    tw.run_until(1.0)
    assert any(e.component == "EL2" and e.type == "trip:over_temperature" for e in tw.events)
    tw.override("EL2", "t_c", None)
    assert tw.state_of("EL2")["overridden"] == []


def test_overrides_drive_the_model_and_hand_back(example):
    tw = Twin.from_site(example, seed=1)
    tw.step()
    tw.override("srv_a", "p_kw", 7.0)
    tw.step()
    assert tw.state_of("srv_a")["m"]["p_kw"] == 7.0 and tw.state_of("srv_a")["overridden"] == [
        "p_kw"
    ]
    assert tw.state_of("pdu_a")["m"]["p_kw"] == pytest.approx(7.0)
    tw.override("util_a", "on", 0)  # the utility node reports no voltage
    tw.step()
    assert any(e.type == "utility_lost" and e.state == "start" for e in tw.events)
    tw.override("util_a", "on", None)
    tw.override("srv_a", "p_kw", None)
    tw.step()
    assert tw.state_of("srv_a")["m"]["p_kw"] != 7.0
    # A metric the model does not take as input is still reported as measured.
    tw.override("dist_a", "t_c", 41.5)
    assert tw.state_of("dist_a")["m"]["t_c"] == 41.5


def test_same_seed_same_run_other_seed_other_run(example):
    runs = []
    for seed in (11, 11, 12):
        tw = Twin.from_site(example, seed=seed)
        tw.run_until(30.0)
        runs.append(json.dumps(tw.state(), sort_keys=True))
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_state_is_json_with_units_for_every_node(example):
    tw = Twin.from_site(example)
    tw.run_until(1.0)
    st = json.loads(json.dumps(tw.state()))
    assert set(example.node_ids) <= set(st)
    for nid in example.node_ids:
        assert st[nid]["node"] == nid and st[nid]["m"]
    assert st["ups_a"]["units"]["soc_pct"] == "%" and st["grid1"]["units"]["f_hz"] == "Hz"
    assert st["EL1"]["units"]["h2_nm3h"] == "Nm³/h" and st["tank1"]["node"] is None
    assert 49.5 < st["grid1"]["m"]["f_hz"] < 50.5


def test_bad_commands_are_clear_errors(example):
    tw = Twin.from_site(example)
    with pytest.raises(TwinCommandError, match="no component 'srv_b'"):
        tw.apply("srv_b", "set_load", {"kw": 1})
    with pytest.raises(TwinCommandError, match="unknown command 'explode'"):
        tw.apply("srv_a", "explode")
    with pytest.raises(TwinCommandError, match="set_supply does not apply to a pdu"):
        tw.apply("pdu_a", "set_supply", {"on": False})
    with pytest.raises(TwinCommandError):
        tw.override("nope", "p_kw", 1.0)


def test_grid_bus_loss_of_generation_in_the_engine(example):
    tw = Twin.from_site(example, seed=2)
    tw.topo.by_id["grid1"].params  # the example's: H 5 s, D 1, R 0.05
    g = tw.grids["grid1"]
    g.p["noise_mw"] = 0.0
    g.noise_mw = 0.0
    tw.apply("grid1", "set_fault", {"on": True, "gen_loss_mw": 50.0})
    tw.run_until(60.0)
    assert tw.state_of("grid1")["m"]["f_hz"] == pytest.approx(50 * (1 - 0.05 / 21), abs=1e-4)
    assert any(e.type == "frequency_deviation" and e.state == "start" for e in tw.events)
    tw.apply("grid1", "set_fault", {"on": False})
    tw.run_until(120.0)
    assert any(e.type == "frequency_deviation" and e.state == "clear" for e in tw.events)
    assert np.isclose(tw.state_of("grid1")["m"]["f_hz"], 50.0, atol=1e-3)


def test_cell_overvoltage_and_tank_overpressure_trips(example):
    tw = Twin.from_site(example, seed=1)
    # A stack at 2 C (a thermocouple reading) under full sun: Ulleberg's activation term at that
    # temperature puts the cell above 2.2 V (0.185*log10(263.7*I + 1) ~ 0.94 V at ~480 A).
    tw.override("EL1", "t_c", 2.0)
    tw.run_until(5.0)
    trip = [e for e in tw.events if e.type == "trip:cell_overvoltage"]
    assert [e.component for e in trip] == ["EL1"] and trip[0].detail["u_cell_v"] > 2.2
    tw.override("tank1", "p_bar", 31.0)  # the tank's pressure transmitter
    tw.run_until(6.0)
    started = {(e.component, e.type) for e in tw.events if e.state == "start"}
    assert ("tank1", "trip:over_pressure") in started and ("EL2", "trip:over_pressure") in started
    assert tw.state_of("tank1")["status"] == "over_pressure"


def test_ups_state_of_charge_from_hardware(example):
    tw = Twin.from_site(example, seed=1)
    tw.override("ups_a", "soc_pct", 15.0)  # the UPS reports its own SoC
    tw.run_until(1.0)
    assert any(e.component == "ups_a" and e.type == "battery_low" for e in tw.events)
    tw.override("ups_a", "soc_pct", None)
    tw.run_until(2.0)
    assert tw.state_of("ups_a")["m"]["soc_pct"] == pytest.approx(
        15.0, abs=0.1
    )  # counting resumes from there


def test_ten_thousand_components_run_and_balance():
    # The bench's largest site (make bench times it): every model present, energy conserved.
    tw = Twin(synthetic_topology(10_000))
    assert len(tw.topo.components) == 10_000 and len(tw.plants) == 10 and len(tw.grids) == 1
    for _ in range(5):
        tw.step()
    assert abs(ac_balance(tw)) < 1e-8 * float(tw.ac.demand.sum())
    standby = tw.ac.code == 2  # generators wait for their switch
    assert tw.ac.en[~standby].all() and not tw.ac.en[standby].any() and not tw.active_events()


UPS_CHAIN = '''[site]
id = "u1"

[[nodes]]
id = "util"
role = "utility"

[[nodes]]
id = "ups"
role = "ups"
parent = "util"

[[nodes]]
id = "srv"
role = "server"
parent = "ups"

[[twin.components]]
id = "ups"
params = {{ capacity_kw = 100.0 }}

[[twin.components]]
id = "srv"
params = {{ load_kw = {kw}, noise_pct = 0.0 }}
'''


@pytest.mark.parametrize("load_pct", [10, 25, 50, 75, 100])
def test_ups_part_load_efficiency_curve(tmp_path, load_pct):
    # A double-conversion UPS loses more at part load. Its default curve is the loss structure of
    # Schneider Electric White Paper 108 (no-load losses ~40 % of the losses, square-law losses ~1 %
    # of rating at full load) anchored at a 95 % full-load datasheet efficiency:
    #   P_in = P/0.979 + 0.021 C + 0.01 C (P/C)^2
    p = tmp_path / "site.toml"
    p.write_text(UPS_CHAIN.format(kw=float(load_pct)))
    tw = Twin.from_site(load_site(p))
    tw.step()
    m = tw.state_of("ups")["m"]
    x = load_pct / 100.0
    expected = x / (x / 0.979 + 0.021 + 0.01 * x * x)
    assert m["p_kw"] == pytest.approx(load_pct, rel=1e-9)
    assert m["p_kw"] / m["p_in_kw"] == pytest.approx(expected, rel=1e-6)
    # The published anchors: 95 % at full load; no-load losses 40 % of the full-load losses; and the
    # part-load penalty the issue asks for: about 81 % at 10 % load, not 95 %.
    full = 1.0 / (1.0 / 0.979 + 0.021 + 0.01)
    assert full == pytest.approx(0.950, abs=1e-3)
    assert 0.021 / (1.0 / full - 1.0) == pytest.approx(0.40, abs=0.005)
    if load_pct == 10:
        assert m["p_kw"] / m["p_in_kw"] < 0.82
