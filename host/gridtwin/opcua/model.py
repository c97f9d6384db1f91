"""The twin's components as ISA-95 equipment: enterprise -> site -> area -> line -> machine -> tag.

enterprise: ``[opcua] enterprise``; site: the site id; area: ``[opcua] area`` or the component's
domain (AREAS); line: the source at the top of the component's chain (a grid meter, a utility, a
PV array), so a line is one supply and what hangs below it; machine: the component id; tag: the
seed system's variable names for issue #16's asset kinds (TAGS), the twin's own metric names for
every other kind. Each tag's unit comes from the twin (`state()["units"]`) and is published as
an OPC UA EUInformation with its UNECE code (UNECE), the form OPC UA Part 8 prescribes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gridtwin.twin.topology import KINDS

_PHASES = [(f"Voltage_L{k}", f"v_l{k}_v") for k in (1, 2, 3)] + [
    (f"Current_L{k}", f"i_l{k}_a") for k in (1, 2, 3)
]
_POWER = [("Power_Active", "p_kw"), ("Power_Reactive", "q_kvar")]
STATE = "state"  # the metric slot of a string tag: the component's status text

# tag -> twin metric, per kind (the seed's names: Voltage_L1..3, Current_L1..3, Power_Active, ...)
TAGS: dict[str, list[tuple[str, str]]] = {
    "pv_inverter": _PHASES
    + _POWER
    + [
        ("Power_DC", "p_dc_kw"),
        ("Energy_Total", "e_total_kwh"),
        ("Frequency", "f_hz"),
        ("Temperature", "t_c"),
        ("Irradiance", "irr_wm2"),
        ("Efficiency", "eff_pct"),
        ("Inverter_State", STATE),
    ],
    "bess": _PHASES
    + _POWER[:1]
    + [
        ("SoC", "soc_pct"),
        ("Energy_Stored", "e_stored_kwh"),
        ("Energy_Charged", "e_charge_kwh"),
        ("Energy_Discharged", "e_discharge_kwh"),
        ("State", STATE),
    ],
    "grid_meter": _PHASES
    + _POWER
    + [
        ("Power_Import", "p_import_kw"),
        ("Power_Export", "p_export_kw"),
        ("Energy_Import", "e_import_kwh"),
        ("Energy_Export", "e_export_kwh"),
        ("Frequency", "f_hz"),
        ("Power_Factor", "pf"),
        ("State", STATE),
    ],
    "load_panel": _PHASES + _POWER + [("Energy_Total", "e_total_kwh"), ("Power_Factor", "pf")],
}

# tag -> the catalog's quantity (gridtwin/catalog.py), so analytics judges an OPC UA point as it
# judges a node's reading of the same quantity: SoC by the battery rules (soc_drop), Efficiency by
# efficiency_drop, a temperature by the thermometers' limits
TAG_QUANTITY = {
    **{f"Voltage_L{k}": "voltage" for k in (1, 2, 3)},
    **{f"Current_L{k}": "current" for k in (1, 2, 3)},
    "Power_Active": "power",
    "Power_Reactive": "power",
    "Power_DC": "power",
    "Power_Import": "power",
    "Power_Export": "power",
    "Frequency": "frequency",
    "Temperature": "temperature",
    "Irradiance": "irradiance",
    "Efficiency": "efficiency",
    "SoC": "battery",
    "Power_Factor": "power factor",
}

AREAS = {
    "microgrid": "energy",
    "ac": "datacentre",
    "plant": "hydrogen",
    "grid": "grid",
    "any": "metering",
}

# UNECE Recommendation 20 common codes of the twin's units (OPC UA Part 8, EUInformation.UnitId)
UNECE = {
    "kW": "KWT",
    "kWh": "KWH",
    "V": "VLT",
    "A": "AMP",
    "Hz": "HTZ",
    "%": "P1",
    "°C": "CEL",
    "W/m²": "D54",
    "kvar": "KVR",
    "MW": "MAW",
    "bar": "BAR",
    "kg": "KGM",
    "s": "SEC",
    "mol": "C34",
}

# the twin's 0/1 metrics (no unit): Boolean variables, stored as value_bool
FLAGS = {"energized", "on", "running", "on_battery", "tripped"}

# the twin's component status -> the quality of what the component reports
BAD_STATUS = {"unconnected", "fault", "failed", "off", "lost"}
UNCERTAIN_PREFIX = ("tripped", "over_pressure", "alarm")


def unit_id(unit: str) -> int:
    code = UNECE.get(unit)
    if not code:
        return -1
    n = 0
    for ch in code:
        n = (n << 8) | ord(ch)
    return n


def quality(status: str) -> str:
    if status in BAD_STATUS:
        return "BAD"
    if status.startswith(UNCERTAIN_PREFIX):
        return "UNCERTAIN"
    return "GOOD"


@dataclass(frozen=True)
class Point:
    path: tuple[str, str, str, str, str]  # enterprise, site, area, line, machine
    tag: str
    metric: str
    unit: str
    text: bool  # a string variable (a state), else a float
    flag: bool = False  # a Boolean variable (FLAGS)

    @property
    def key(self) -> str:
        """The string NodeId: the ISA-95 path and the tag, dotted."""
        return ".".join(self.path + (self.tag,))


def _line(topo, comp) -> str:
    c = comp
    while c.parents:
        c = topo.by_id[c.parents[0]]
    return c.id


def points(twin, site_id: str, enterprise: str, area: str = "") -> list[Point]:
    """Every variable the server publishes, from the twin's current state (its metrics and
    units)."""
    topo = twin.topo
    state = twin.state()
    out = []
    for c in topo.components:
        st = state[c.id]
        path = (
            enterprise,
            site_id,
            area or AREAS.get(KINDS[c.kind].domain, "assets"),
            _line(topo, c),
            c.id,
        )
        rows = TAGS.get(c.kind) or [(m, m) for m in st["m"]] + [("State", STATE)]
        for tag, metric in rows:
            if metric == STATE:
                out.append(Point(path, tag, STATE, "", True))
            elif metric in FLAGS and metric in st["m"]:
                out.append(Point(path, tag, metric, "", False, True))
            elif metric in st["m"]:
                out.append(Point(path, tag, metric, st["units"].get(metric, ""), False))
    return out
