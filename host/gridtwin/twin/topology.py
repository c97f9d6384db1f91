"""The twin's topology: the ``[twin]`` section of site.toml, component kinds and their parameters.

How nodes and components relate
-------------------------------
Every ``[[nodes]]`` entry *is* a component: its id is the component id, its role gives the default
kind (``ROLE_KIND``) and its ``parent`` the upstream components. ``[[twin.components]]`` entries do
two things:

* an entry whose ``id`` is a node id gives that node's component parameters (and may name a kind
  only when it agrees with the role; a ``sensor`` node may stand for any kind);
* an entry with a new id declares a component that has no node (a buck converter, a gas separator,
  a hydrogen tank, a battery ...); it needs ``kind`` and, unless it is a source, ``parent``.

A node-backed entry may also give ``parent`` to splice node-less components between a node and its
node parent (``EL1``'s node parent is ``pv1``; its twin parent may be ``buck1`` whose parent is
``pv1``). Every node parent must then still be upstream of the component in the twin graph.

Validation raises ``ConfigError(file, key, problem, fix)`` with keys such as
``twin.components[4].params.capacity_kw`` or ``nodes[3].parent``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gridtwin.errors import ConfigError
from gridtwin.site import REQUIRED as SITE_REQUIRED
from gridtwin.site import Key, Section, check_id, check_parents, in_range, parents_first


class _Req:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Req()


@dataclass(frozen=True)
class Param:
    default: Any
    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    help: str = ""
    type: type = float


@dataclass(frozen=True)
class KindSpec:
    domain: str  # "ac" (data-centre chain), "plant" (PV / hydrogen), "grid", "any"
    params: dict[str, Param]
    source: bool = False  # has no parent
    parent_kinds: tuple[str, ...] | None = None  # allowed parent kinds; None = any of the domain
    help: str = ""


P = Param
# Losses of AC elements follow P_in = P_out / efficiency + no_load_kw + load_loss_kw *
# (P_out/capacity)^2: a constant part (core losses), a proportional part and a copper part that
# grows with the square of the current (IEC 60076-1 splits transformer losses the same way).
_AC_LOSS = {
    "efficiency": P(1.0, 0.5, 1.0, "", "proportional efficiency"),
    "no_load_kw": P(0.0, 0.0, None, "kW", "constant losses while energized"),
    "load_loss_kw": P(
        0.0, 0.0, None, "kW", "copper losses at rated load (scale with load squared)"
    ),
    "trip_delay_s": P(2.0, 0.0, 3600.0, "s", "time above capacity before the breaker trips"),
}

KINDS: dict[str, KindSpec] = {
    "utility": KindSpec(
        "ac",
        {
            "capacity_kw": P(10000.0, 0.001, None, "kW", "supply capacity of the service entrance"),
            "voltage_v": P(400.0, 1.0, None, "V", "nominal line voltage"),
        },
        source=True,
        help="the public supply",
    ),
    "generator": KindSpec(
        "ac",
        {
            "capacity_kw": P(500.0, 0.001, None, "kW", "rated output"),
            "start_delay_s": P(10.0, 0.0, 600.0, "s", "from start signal to ready for load"),
            "cooldown_s": P(60.0, 0.0, 3600.0, "s", "runs unloaded this long after retransfer"),
            "trip_delay_s": P(5.0, 0.0, 3600.0, "s", "time above capacity before it trips"),
        },
        source=True,
        help="standby diesel generator",
    ),
    "transformer": KindSpec(
        "ac",
        {
            "capacity_kw": P(1000.0, 0.001, None, "kW", "rating"),
            **_AC_LOSS,
            "no_load_kw": P(1.0, 0.0, None, "kW", "core (no-load) losses"),
            "load_loss_kw": P(8.0, 0.0, None, "kW", "copper losses at rated load"),
        },
    ),
    "transfer_switch": KindSpec(
        "ac",
        {
            "capacity_kw": P(1000.0, 0.001, None, "kW", "rating"),
            "detect_s": P(
                0.0,
                0.0,
                60.0,
                "s",
                "normal source gone this long before the switch opens and starts the "
                "standby generator (rides through short dips); never less than one step",
            ),
            "transfer_s": P(
                0.0,
                0.0,
                60.0,
                "s",
                "standby source ready this long before the switch closes on it; "
                "never less than one step",
            ),
            "retransfer_delay_s": P(
                5.0, 0.0, 3600.0, "s", "utility must be back this long before switching back"
            ),
            **_AC_LOSS,
        },
        help="automatic transfer switch: first parent is the normal source, the next the standby",
    ),
    "distribution": KindSpec(
        "ac",
        {
            "capacity_kw": P(800.0, 0.001, None, "kW", "board rating"),
            **_AC_LOSS,
            "efficiency": P(0.995, 0.5, 1.0, "", "cable and busbar losses"),
        },
    ),
    "ups": KindSpec(
        "ac",
        {
            "capacity_kw": P(200.0, 0.001, None, "kW", "output rating"),
            **_AC_LOSS,
            # Part-load curve (docs/twin-models.md, UPS): the loss structure of Schneider Electric
            # WP 108 - no-load losses ~40 % of the full-load losses, square-law losses ~1 % of
            # rating at full load - anchored at 95 % full-load efficiency: 81 % at 10 % load, 90.3 %
            # at 25 %, 93.6 % at 50 %.
            "efficiency": P(
                0.979, 0.5, 1.0, "", "proportional efficiency of the double conversion"
            ),
            "no_load_pct": P(
                2.1, 0.0, 50.0, "%", "no-load losses in % of capacity_kw (added to no_load_kw)"
            ),
            "load_loss_pct": P(
                1.0,
                0.0,
                50.0,
                "%",
                "square-law losses at rated load in % of capacity_kw (added to load_loss_kw)",
            ),
            "battery_v": P(480.0, 1.0, None, "V", "battery bus voltage (Coulomb counting uses it)"),
            "battery_ah": P(40.0, 0.001, None, "Ah", "battery capacity"),
            "battery_efficiency": P(0.95, 0.5, 1.0, "", "inverter efficiency on battery"),
            "soc0_pct": P(100.0, 0.0, 100.0, "%", "state of charge at t=0"),
            "low_soc_pct": P(20.0, 0.0, 100.0, "%", "battery_low below this"),
            "charge_kw": P(5.0, 0.0, None, "kW", "recharge power while on mains"),
        },
        help="double-conversion UPS with its battery",
    ),
    "pdu": KindSpec(
        "ac",
        {
            "capacity_kw": P(22.0, 0.001, None, "kW", "rating"),
            **_AC_LOSS,
            "efficiency": P(0.99, 0.5, 1.0, "", ""),
        },
    ),
    "server": KindSpec(
        "ac",
        {
            "load_kw": P(5.0, 0.0, None, "kW", "mean demand"),
            "noise_pct": P(
                2.0, 0.0, 100.0, "%", "standard deviation of the demand around its mean"
            ),
            "voltage_v": P(
                230.0, 1.0, None, "V", "supply voltage (for the current a node's INA226 would read)"
            ),
        },
        help="IT load",
    ),
    "meter": KindSpec(
        "any", {}, help="a measuring point (sensor node); passes power through unchanged"
    ),
    "pv_array": KindSpec(
        "plant",
        {
            "p_dc0_kw": P(60.0, 0.001, None, "kW", "DC rating at STC (1000 W/m2, 25 C)"),
            "gamma_pdc": P(-0.004, -0.02, 0.0, "1/K", "power temperature coefficient (PVWatts)"),
            "vmp_v": P(100.0, 1.0, None, "V", "array maximum-power voltage at STC"),
            "voc_ratio": P(1.25, 1.05, 2.0, "", "Voc / Vmp"),
            "u0": P(25.0, 1.0, None, "W/m2K", "Faiman heat-loss coefficient, constant part"),
            "u1": P(6.84, 0.0, None, "W s/m3K", "Faiman heat-loss coefficient, wind part"),
            "wind_ms": P(1.0, 0.0, 60.0, "m/s", "wind speed"),
            "cloud_cover": P(0.3, 0.0, 1.0, "", "mean cloud cover fraction (Kasten-Czeplak)"),
            "cloud_sigma": P(0.25, 0.0, 2.0, "", "cloud cover variability"),
            "cloud_tau_s": P(60.0, 0.1, None, "s", "cloud correlation time"),
        },
        source=True,
        help="horizontal PV array",
    ),
    "buck_converter": KindSpec(
        "plant",
        {
            "rated_kw": P(REQUIRED, 0.001, None, "kW", "converter rating"),
            "efficiency": P(0.97, 0.5, 1.0, "", "conversion efficiency"),
            "no_load_kw": P(0.05, 0.0, None, "kW", "standby losses while running"),
            "mppt_dv_v": P(0.5, 0.001, None, "V", "perturb-and-observe voltage step"),
        },
        parent_kinds=("pv_array",),
        help="DC/DC buck converter with perturb-and-observe MPPT",
    ),
    "electrolyser": KindSpec(
        "plant",
        {
            "cells": P(21, 1, 1000, "", "cells in series (PHOEBUS stack: 21)", int),
            "area_m2": P(0.25, 0.001, None, "m2", "cell area (PHOEBUS: 0.25)"),
            "i_max_a": P(1000.0, 0.1, None, "A", "largest stack current"),
            "pressure_bar": P(
                7.0,
                1.0,
                100.0,
                "bar",
                "stack pressure, raises U_rev by RT/2F ln(p^1.5) (PHOEBUS: 7 bar)",
            ),
            # Ulleberg (2003) I-U relation U = U_rev + (r1 + r2 T)/A I + s log10((t1 + t2/T +
            # t3/T^2)/A I + 1), T in C, and Faraday efficiency eta_F = j^2/(f1 + j^2) f2, j in
            # mA/cm2: his PHOEBUS values.
            "r1": P(8.05e-5, 0.0, None, "ohm m2", "ohmic resistance (PHOEBUS: 8.05e-5)"),
            "r2": P(
                -2.5e-7, None, None, "ohm m2/C", "its temperature coefficient (PHOEBUS: -2.5e-7)"
            ),
            "s": P(0.185, 0.0, None, "V", "overvoltage coefficient (PHOEBUS: 0.185)"),
            "t1": P(-0.1002, None, None, "m2/A", "overvoltage coefficient (PHOEBUS: -0.1002)"),
            "t2": P(8.424, None, None, "m2 C/A", "overvoltage coefficient (PHOEBUS: 8.424)"),
            "t3": P(247.3, None, None, "m2 C2/A", "overvoltage coefficient (PHOEBUS: 247.3)"),
            "f1": P(250.0, 0.0, None, "mA2/cm4", "Faraday efficiency parameter (PHOEBUS: 250)"),
            "f2": P(
                0.96,
                0.0,
                1.0,
                "",
                "Faraday efficiency parameter, its limit at high current (PHOEBUS: 0.96)",
            ),
            "t0_c": P(60.0, -20.0, 120.0, "C", "stack temperature at t=0"),
            "t_set_c": P(80.0, 0.0, 120.0, "C", "cooling keeps the stack at this temperature"),
            "c_t_kj": P(625.0, 0.1, None, "kJ/K", "thermal capacity (Ulleberg 2003: 625)"),
            "r_t": P(
                0.167, 0.0001, None, "K/W", "thermal resistance to ambient (Ulleberg 2003: 0.167)"
            ),
            "cool_w_per_k": P(2000.0, 0.0, None, "W/K", "cooling gain above t_set_c"),
            "permeability": P(
                1.5e-6, 0.0, None, "mol/(s bar m2)", "H2 crossover through the diaphragm per cell"
            ),
            "u_cell_max_v": P(2.2, 1.3, 5.0, "V", "cell over-voltage trip"),
            "t_max_c": P(90.0, 0.0, 150.0, "C", "over-temperature trip"),
            "hto_max_pct": P(2.0, 0.01, 4.0, "%", "H2 in O2 trip (half the lower explosive limit)"),
            "min_current_a": P(20.0, 0.0, None, "A", "below this the stack idles (no gas)"),
            "reset_s": P(
                30.0, 0.0, 86400.0, "s", "a trip clears this long after its cause is gone"
            ),
        },
        parent_kinds=("buck_converter", "pv_array"),
        help="alkaline electrolyser stack (Ulleberg 2003)",
    ),
    "gas_separator": KindSpec(
        "plant",
        {
            "tau_s": P(20.0, 0.01, None, "s", "gas-space mixing time (lags the purity reading)"),
        },
        parent_kinds=("electrolyser",),
        help="lye/gas separator: where H2-in-O2 is measured",
    ),
    "h2_tank": KindSpec(
        "plant",
        {
            "volume_m3": P(REQUIRED, 0.001, None, "m3", "geometric volume"),
            "p0_bar": P(5.0, 0.0, None, "bar", "pressure at t=0"),
            "p_max_bar": P(30.0, 0.1, None, "bar", "over-pressure trip"),
            "t_c": P(20.0, -40.0, 80.0, "C", "gas temperature"),
            "offtake_nm3h": P(0.0, 0.0, None, "Nm3/h", "hydrogen drawn by consumers"),
        },
        parent_kinds=("gas_separator", "electrolyser"),
        help="hydrogen store",
    ),
    "battery": KindSpec(
        "plant",
        {
            "capacity_kwh": P(REQUIRED, 0.001, None, "kWh", "usable energy"),
            "voltage_v": P(48.0, 1.0, None, "V", "nominal voltage (Coulomb counting uses it)"),
            "soc0_pct": P(50.0, 0.0, 100.0, "%", "state of charge at t=0"),
            "max_kw": P(10.0, 0.0, None, "kW", "largest charge or discharge power"),
            "efficiency": P(0.95, 0.5, 1.0, "", "one-way efficiency"),
        },
        parent_kinds=("buck_converter",),
        help="DC battery on the converter output: stores what the stacks cannot take, tops up to "
        "their minimum",
    ),
    "grid_bus": KindSpec(
        "grid",
        {
            "f_nom_hz": P(50.0, 1.0, 400.0, "Hz", "nominal frequency"),
            "s_base_mw": P(1000.0, 0.001, None, "MW", "system base"),
            "load_mw": P(800.0, 0.0, None, "MW", "demand at t=0 (equals dispatched generation)"),
            "h_s": P(5.0, 0.1, 30.0, "s", "aggregated inertia constant"),
            "d_pu": P(1.0, 0.0, 10.0, "pu", "load damping (pu power / pu frequency)"),
            "r_pu": P(0.05, 0.001, 1.0, "pu", "governor droop"),
            "t_gov_s": P(0.5, 0.01, 30.0, "s", "governor-turbine time constant"),
            "noise_mw": P(0.0, 0.0, None, "MW", "standard deviation of random load fluctuation"),
            "alarm_hz": P(0.1, 0.001, 10.0, "Hz", "frequency_deviation event beyond this"),
        },
        source=True,
        help="aggregated power system (swing equation with droop)",
    ),
    # Energy assets at a grid connection (issue #16; models in gridtwin/twin/assets.py)
    "grid_meter": KindSpec(
        "microgrid",
        {
            "voltage_v": P(400.0, 1.0, None, "V", "nominal line-to-line voltage at the connection"),
            "f_nom_hz": P(50.0, 1.0, 400.0, "Hz", "nominal grid frequency"),
            "f_noise_hz": P(0.01, 0.0, 1.0, "Hz", "standard deviation of the measured frequency"),
        },
        source=True,
        help="smart meter at the grid interface: import/export power and kWh, frequency, PF",
    ),
    "pv_inverter": KindSpec(
        "microgrid",
        {
            "rated_kw": P(500.0, 0.001, None, "kW", "AC rating (clips above it)"),
            "p_dc0_kw": P(550.0, 0.001, None, "kW", "array DC rating at STC (PVWatts)"),
            "gamma_pdc": P(-0.004, -0.02, 0.0, "1/K", "power temperature coefficient"),
            "loss_nl_pct": P(
                0.5, 0.0, 20.0, "%", "no-load losses in % of rating (below this DC it stands by)"
            ),
            "loss_v_pct": P(1.0, 0.0, 20.0, "%", "losses proportional to output, % of output"),
            "loss_r_pct": P(
                1.5, 0.0, 20.0, "%", "ohmic losses at rated output in % of rating (square law)"
            ),
            "t_rise_c": P(25.0, 0.0, 100.0, "C", "heat-sink rise above ambient at rated output"),
            "cloud_cover": P(0.3, 0.0, 1.0, "", "mean cloud cover fraction (Kasten-Czeplak)"),
            "cloud_sigma": P(0.25, 0.0, 2.0, "", "cloud cover variability"),
            "cloud_tau_s": P(60.0, 0.1, None, "s", "cloud correlation time"),
        },
        parent_kinds=("grid_meter",),
        help="grid-tied PV inverter with its array: efficiency curve, three phases",
    ),
    "bess": KindSpec(
        "microgrid",
        {
            "capacity_kwh": P(1000.0, 0.001, None, "kWh", "usable energy"),
            "max_kw": P(250.0, 0.0, None, "kW", "largest charge or discharge power (AC side)"),
            "efficiency": P(0.95, 0.5, 1.0, "", "one-way efficiency (round trip is its square)"),
            "soc0_pct": P(50.0, 0.0, 100.0, "%", "state of charge at t=0"),
            "soc_min_pct": P(10.0, 0.0, 100.0, "%", "never discharged below this"),
            "soc_max_pct": P(95.0, 0.0, 100.0, "%", "never charged above this"),
        },
        parent_kinds=("grid_meter",),
        help="battery store: self-consumption (takes the PV surplus, covers the deficit)",
    ),
    "load_panel": KindSpec(
        "microgrid",
        {
            "load_kw": P(300.0, 0.0, None, "kW", "mean demand"),
            "pf": P(0.92, 0.05, 1.0, "", "power factor (lagging)"),
            "noise_pct": P(
                5.0, 0.0, 100.0, "%", "standard deviation of the demand around its mean"
            ),
            "noise_tau_s": P(30.0, 0.01, None, "s", "correlation time of that fluctuation"),
        },
        parent_kinds=("grid_meter",),
        help="load panel (feeder) behind the meter",
    ),
}

ALIASES = {
    "switchgear": "transfer_switch",
    "ats": "transfer_switch",
    "distribution_board": "distribution",
    "server_load": "server",
    "load": "server",
    "pv": "pv_array",
    "buck": "buck_converter",
    "electrolyser_stack": "electrolyser",
    "electrolyzer": "electrolyser",
    "separator": "gas_separator",
    "hydrogen_tank": "h2_tank",
    "tank": "h2_tank",
    "battery_storage": "battery",
    "sensor": "meter",
    "grid": "grid_bus",
}

# The kind a node of each role stands for.
ROLE_KIND = {
    "utility": "utility",
    "transformer": "transformer",
    "switchgear": "transfer_switch",
    "generator": "generator",
    "distribution": "distribution",
    "ups": "ups",
    "pdu": "pdu",
    "server": "server",
    "pv": "pv_array",
    "electrolyser": "electrolyser",
    "grid_monitor": "grid_bus",
    "sensor": "meter",
}


def _check_start(value: str):
    try:
        _parse_start(value)
    except ValueError:
        return f"'{value}' is not an ISO 8601 UTC time", "write it like \"2026-06-21T10:00:00Z\""
    return None


def _parse_start(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


NFPA110_TYPES = (10, 60, 120)  # NFPA 110 types: seconds within which the EPSS must restore power


def _check_nfpa110(value: int):
    if value == 0 or value in NFPA110_TYPES:
        return None
    return (
        f"{value} is not an NFPA 110 type",
        "use 10, 60 or 120 (seconds to restore power), or leave it out",
    )


def _check_kind(value: str):
    if value in KINDS or value in ALIASES:
        return None
    names = sorted(KINDS) + sorted(ALIASES)
    near = difflib.get_close_matches(value, names, n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    return f"unknown kind '{value}'", f"{hint}use one of: {', '.join(sorted(KINDS))}"


_check_parent = check_parents("component", 'e.g. parent = "pv1" or parent = ["sep1", "sep2"]')


COMPONENT_KEYS = {
    "id": Key(
        str,
        SITE_REQUIRED,
        check=check_id,
        help="component id (a node id gives that node's parameters)",
    ),
    "kind": Key(
        str,
        "",
        check=lambda v: None if v == "" else _check_kind(v),
        help=f"one of: {', '.join(sorted(KINDS))}",
    ),
    "parent": Key((str, list), None, check=_check_parent, help="upstream component(s)"),
    "params": Key(dict, {}, help="the kind's parameters (docs/twin-models.md lists them)"),
    "description": Key(str, "", help="free text"),
}

TWIN = Section(
    {
        "seed": Key(int, 1, help="random seed: the same seed gives the same run"),
        "step_s": Key(
            float, 0.1, check=in_range(0.001, 10.0), help="simulation time step in seconds"
        ),
        "speed": Key(
            float,
            1.0,
            check=in_range(0.0, 1e6),
            help="simulated seconds per wall second; 0 = as fast as possible",
        ),
        "start": Key(
            str, "2026-06-21T10:00:00Z", check=_check_start, help="UTC time of t=0 (sets the sun)"
        ),
        "latitude": Key(
            float, 50.9, check=in_range(-90.0, 90.0), help="site latitude in degrees north (PV)"
        ),
        "longitude": Key(
            float, 6.4, check=in_range(-180.0, 180.0), help="site longitude in degrees east (PV)"
        ),
        "altitude_m": Key(float, 100.0, check=in_range(-500.0, 9000.0), help="site altitude"),
        "t_air_c": Key(float, 20.0, check=in_range(-60.0, 60.0), help="ambient air temperature"),
        "clear_sky": Key(
            str,
            "haurwitz",
            check=lambda v: (
                None
                if v in ("haurwitz", "ineichen")
                else (
                    f"unknown clear-sky model '{v}'",
                    'use "haurwitz" or "ineichen" (with linke_turbidity)',
                )
            ),
            help="clear-sky irradiance model: haurwitz (no parameters) or ineichen (Linke "
            "turbidity, altitude)",
        ),
        "linke_turbidity": Key(
            float,
            3.0,
            check=in_range(1.0, 10.0),
            help="Linke turbidity of the site's air for ineichen (clean 2-3, hazy summer 4-5)",
        ),
        "nfpa110_type": Key(
            int,
            0,
            check=_check_nfpa110,
            help="NFPA 110 type the emergency supply must meet: power back within 10, 60 or 120 s "
            "(detection + generator start + transfer); 0 = not declared",
        ),
        "components": Key(
            list,
            [],
            item=Key(dict, keys=COMPONENT_KEYS),
            help="component parameters and components without a node",
        ),
    },
    help="the digital twin: time step, seed and component parameters",
)


@dataclass
class Component:
    id: str
    kind: str
    params: dict[str, Any]
    parents: list[str]
    node: str | None  # the node standing for it, if any
    where: str  # key of its definition, for errors
    index: int = -1  # position in the topological order
    children: list[str] = field(default_factory=list)


@dataclass
class Topology:
    components: list[Component]  # parents before children
    by_id: dict[str, Component]
    twin: Any  # the [twin] Record (seed, step_s ...)
    path: str

    def of_kind(self, *kinds: str) -> list[Component]:
        return [c for c in self.components if c.kind in kinds]

    def start_datetime(self) -> datetime:
        return _parse_start(self.twin.start)


def _fail(path, key, problem, fix=None):
    raise ConfigError(path, key, problem, fix)


def _params(path, kind: str, raw: dict, where: str) -> dict[str, Any]:
    spec = KINDS[kind]
    out: dict[str, Any] = {}
    for name in raw:
        if name not in spec.params:
            near = difflib.get_close_matches(name, list(spec.params), n=1)
            fix = (
                f"did you mean '{near[0]}'?"
                if near
                else (
                    f"a {kind} takes: {', '.join(spec.params)}"
                    if spec.params
                    else f"a {kind} takes no parameters"
                )
            )
            _fail(path, f"{where}.params.{name}", f"unknown parameter of a {kind}", fix)
    for name, p in spec.params.items():
        key = f"{where}.params.{name}"
        if name not in raw:
            if p.default is REQUIRED:
                _fail(
                    path,
                    key,
                    "is missing",
                    f"add it: {p.help} ({p.unit})" if p.unit else f"add it: {p.help}",
                )
            out[name] = p.default
            continue
        v = raw[name]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or (p.type is int and not isinstance(v, int))
        ):
            _fail(
                path,
                key,
                f"is {type(v).__name__} {v!r}, expected "
                f"{'an integer' if p.type is int else 'a number'}",
                f"{p.help} ({p.unit})" if p.unit else p.help or None,
            )
        if (
            not math.isfinite(v)
            or (p.lo is not None and v < p.lo)
            or (p.hi is not None and v > p.hi)
        ):
            span = f"{p.lo if p.lo is not None else '-inf'}..{p.hi if p.hi is not None else 'inf'}"
            _fail(path, key, f"{v} is out of range", f"use a value in {span} {p.unit}".rstrip())
        out[name] = p.type(v)
    return out


def build(site) -> Topology:
    """Validate the twin graph of a loaded (or loading) site and return it in topological order."""
    path = site.path
    twin = site.sections.get("twin")
    entries = list(twin.components) if twin is not None else []
    nodes = {n.id: (i, n) for i, n in enumerate(site.nodes)}
    comps: dict[str, Component] = {}
    node_entry: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e.id in nodes:
            if e.id in node_entry:
                _fail(
                    path,
                    f"twin.components[{i}].id",
                    f"'{e.id}' already has parameters in twin.components[{node_entry[e.id]}]",
                    "give each component one entry",
                )
            node_entry[e.id] = i
    # Node-backed components.
    for nid, (ni, n) in nodes.items():
        role_kind = ROLE_KIND.get(n.role, "meter")
        kind, raw, parents, where = role_kind, {}, list(n.parents), f"nodes[{ni}]"
        if nid in node_entry:
            i = node_entry[nid]
            e = entries[i]
            where = f"twin.components[{i}]"
            if e.kind:
                k = ALIASES.get(e.kind, e.kind)
                if k != role_kind and n.role != "sensor":
                    _fail(
                        path,
                        f"{where}.kind",
                        f"kind '{e.kind}' does not fit node '{nid}' of role '{n.role}'",
                        f"leave kind out (role '{n.role}' means '{role_kind}') or change the "
                        "node's role",
                    )
                kind = k
            raw = e.params
            if e.parent is not None:
                parents = [e.parent] if isinstance(e.parent, str) else list(e.parent)
        comps[nid] = Component(nid, kind, _params(path, kind, raw, where), parents, nid, where)
    # Components without a node.
    for i, e in enumerate(entries):
        if e.id in nodes:
            continue
        where = f"twin.components[{i}]"
        if e.id in comps:
            _fail(
                path,
                f"{where}.id",
                f"'{e.id}' is declared twice",
                "give every component its own id",
            )
        if not e.kind:
            _fail(
                path,
                f"{where}.kind",
                f"component '{e.id}' has no node, so it needs a kind",
                f"add kind = one of: {', '.join(sorted(KINDS))}",
            )
        kind = ALIASES.get(e.kind, e.kind)
        parents = (
            [] if e.parent is None else [e.parent] if isinstance(e.parent, str) else list(e.parent)
        )
        comps[e.id] = Component(
            e.id, kind, _params(path, kind, e.params, where), parents, None, where
        )
    # Parents exist, fit the kind, and the graph has no loop.
    for c in comps.values():
        spec = KINDS[c.kind]
        key = f"{c.where}.parent"
        if spec.source and c.parents:
            _fail(path, key, f"a {c.kind} is a source and takes no parent", "remove the parent")
        if not spec.source and not c.parents and c.node is None:
            _fail(
                path,
                key,
                f"component '{c.id}' ({c.kind}) is missing its parent",
                "add parent = \"<upstream id>\"",
            )
        if len(set(c.parents)) != len(c.parents):
            _fail(path, key, "names the same parent twice", "list each parent once")
        for p in c.parents:
            if p == c.id:
                _fail(path, key, f"'{c.id}' is its own parent", "name the component upstream")
            if p not in comps:
                near = difflib.get_close_matches(p, list(comps), n=1)
                _fail(
                    path,
                    key,
                    f"no component '{p}'",
                    f"did you mean '{near[0]}'?" if near else "name a node or a twin component",
                )
            pk = comps[p].kind
            if spec.parent_kinds is not None:
                if pk not in spec.parent_kinds:
                    _fail(
                        path,
                        key,
                        f"a {c.kind} cannot be fed by '{p}' ({pk})",
                        f"its parent must be a {' or '.join(spec.parent_kinds)}",
                    )
            elif spec.domain != "any" and KINDS[pk].domain not in (spec.domain, "any"):
                _fail(
                    path,
                    key,
                    f"a {c.kind} cannot be fed by '{p}' ({pk}): different systems",
                    f"feed it from a component of the {spec.domain} chain",
                )
        if c.kind == "transfer_switch" and len(c.parents) > 2:
            _fail(
                path,
                key,
                "a transfer switch has at most two sources",
                "parent = [\"<normal>\", \"<standby>\"]",
            )
        if (
            c.kind in ("buck_converter", "electrolyser", "gas_separator", "battery")
            and len(c.parents) > 1
        ):
            _fail(path, key, f"a {c.kind} has one parent", "name one upstream component")
    ids, loop = parents_first({cid: c.parents for cid, c in comps.items()})
    if loop:
        _fail(
            path,
            f"{comps[loop[0]].where}.parent",
            f"the twin topology has a loop: {' -> '.join(loop)}",
            "remove one parent link of the loop",
        )
    order = [comps[cid] for cid in ids]
    for i, c in enumerate(order):
        c.index = i
        for p in c.parents:
            comps[p].children.append(c.id)
    # A node-backed component given other parents in the twin must still hang below its node
    # parents.
    for nid, (ni, n) in nodes.items():
        c = comps[nid]
        if c.parents == list(n.parents):
            continue
        up: set[str] = set()
        stack = list(c.parents)
        while stack:
            x = stack.pop()
            if x not in up:
                up.add(x)
                stack.extend(comps[x].parents)
        for p in n.parents:
            if p not in up:
                _fail(
                    path,
                    f"{c.where}.parent",
                    f"node '{nid}' has parent '{p}', which is not upstream of its twin parents",
                    f"splice only node-less components between '{nid}' and '{p}'",
                )
    _check_transfer_timing(path, twin, comps)
    return Topology(order, comps, twin, str(path))


def _steps(x: float, dt: float) -> float:
    """x rounded up to whole steps of dt, at least one (the engine acts on step boundaries)."""
    return max(1, math.ceil(x / dt - 1e-9)) * dt


def transfer_time_s(switch: Component, gen: Component, dt: float) -> tuple[float, float, float]:
    """(detection, start, transfer) seconds from the loss of the normal source to the switch closing
    on a cold standby generator, exactly as the engine steps them (docs/twin-models.md, Transfer
    timing)."""
    sp = switch.params
    return (
        _steps(sp["detect_s"], dt),
        _steps(gen.params["start_delay_s"], dt),
        _steps(sp["transfer_s"], dt),
    )


def _check_transfer_timing(path, twin, comps: dict[str, Component]) -> None:
    """A declared NFPA 110 type must be reachable: detection + start + transfer within its
    seconds."""
    need = twin.get("nfpa110_type", 0) if twin is not None else 0
    if not need:
        return
    dt = twin.get("step_s", 0.1)
    pairs = [
        (c, comps[g])
        for c in comps.values()
        if c.kind == "transfer_switch"
        for g in c.parents[1:]
        if comps[g].kind == "generator"
    ]
    if not pairs:
        _fail(
            path,
            "twin.nfpa110_type",
            f"NFPA 110 Type {need} is declared but no transfer switch has a standby generator",
            'give a transfer switch a generator as its second parent (parent = ["<normal>", '
            '"<generator>"]), '
            "or leave nfpa110_type out",
        )
    for sw, gen in pairs:
        d, st, tr = transfer_time_s(sw, gen, dt)
        total = d + st + tr
        if total > need + 1e-9:
            room = need - d - tr
            where = (
                gen.where + ".params.start_delay_s"
                if gen.where.startswith("twin.")
                else f"a [[twin.components]] entry with id = \"{gen.id}\""
            )
            fix = (
                f"lower start_delay_s of '{gen.id}' ({where}) to at most {room:g} s"
                if room > 0
                else f"shorten detect_s and transfer_s of '{sw.id}'"
            )
            _fail(
                path,
                "twin.nfpa110_type",
                f"transfer switch '{sw.id}' restores power {total:g} s after the normal source "
                f"fails (detection {d:g} s + '{gen.id}' start {st:g} s + transfer {tr:g} s), over "
                f"NFPA 110 Type {need}'s {need} s",
                f"{fix}, or declare a slower type (60 or 120)",
            )


def of(site) -> Topology:
    """The site's topology, built once per loaded site (its whole-site check builds it), so that
    rendering every node's config.json does not build it again per node."""
    topo = site.__dict__.get("_twin_topology")
    if topo is None:
        topo = site.__dict__["_twin_topology"] = build(site)
    return topo


def check_site(site) -> None:
    """The twin's view of the site: components, kinds, parameters, parents (a whole-site check)."""
    of(site)


# --- what a node's firmware role needs of its component ------------------------------------------

ROLE_PARAMS = {
    "electrolyser": ("cells", "area_m2", "f1", "f2")
}  # role -> params copied into config.json


def role_params(site, node) -> dict:
    """The params of a node's config.json that its twin component decides. The electrolyser role
    computes H2 from its stack current: it must count the same cells as the twin, or node and twin
    disagree by the stack's cell count."""
    names = ROLE_PARAMS.get(node.role)
    if not names:
        return {}
    comp = of(site).by_id.get(node.id)
    return {n: comp.params[n] for n in names} if comp is not None else {}
