"""What each node publishes: every telemetry metric with its unit, what it means, and who makes it.

The names and units are the firmware's: a sensor's metrics are its id plus each suffix of its
driver's ``METRICS`` (firmware/gt/drivers/<type>.py; an analog input, adc or ads1115, is one metric
named after the sensor with the unit of its config), and a role adds its own
(firmware/gt/roles/*.py: ``sample`` and ``units``). The sensors' come from the sensor-type catalog
(gridtwin.sensortypes, with what the firmware has no room for: descriptions, the quantity a metric
measures), the roles' are here, and
tests/host/test_stack_catalog.py keeps the two equal: it reads the drivers' tables under
MicroPython and runs every node of the example site on a virtual board, comparing the metrics and
units the firmware reports with ``node_metrics``. The dashboards (gridtwin.stack.grafana) are
built from here, so a panel never asks for a name nobody publishes.

    from gridtwin.catalog import node_metrics, site_metrics
    node_metrics(site.node("EL1"))  # {"stack_v": Metric(name="stack_v", unit="V", ...), ...}
"""

from __future__ import annotations

from dataclasses import dataclass

from gridtwin.sensortypes import TYPES as SENSOR_TYPES
from gridtwin.sensortypes import metrics as sensor_type_metrics
from gridtwin.site import PLANT_ROLES, ROLE_MODULES

# sensor type -> ((suffix, unit, quantity, description), ...), in the driver's METRICS order, and
# the analog inputs (one metric named after the sensor, unit and range from the config): the
# sensor-type catalog's (gridtwin.sensortypes). quantity groups metrics on a panel (one per quantity
# and unit).
SENSOR_METRICS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    t.name: sensor_type_metrics(t.name) for t in SENSOR_TYPES.values() if not t.analog
}
ANALOG = {t.name: t.analog for t in SENSOR_TYPES.values() if t.analog}

_STATE = "state"  # 0/1 flags: a state timeline, not a curve
# role -> ((metric, unit, quantity, description, derived from: sensor metric suffix or None), ...)
_PLANT = (
    ("supply", "", _STATE, "upstream power present (1) or not (0)", None),
    ("fault", "", _STATE, "the component has failed (1)", None),
    ("out", "", _STATE, "output on (1): healthy and supplied, running, or on battery", None),
    ("load_kw", "kW", "load", "power carried downstream while the output is on", None),
    ("v", "V", "voltage", "nominal output voltage while the output is on", None),
)
ROLE_METRICS: dict[str, tuple[tuple[str, str, str, str, str | None], ...]] = {
    "sensor": (),
    "pv": (),
    "grid_monitor": (
        (
            "f_dev",
            "Hz",
            "frequency deviation",
            "frequency minus nominal ([params] nominal_hz)",
            "_hz",
        ),
    ),
    "electrolyser": (
        (
            "h2_nlh",
            "NL/h",
            "hydrogen yield",
            "hydrogen production from the stack current (Faraday: cells x efficiency / 2F)",
            "_a",
        ),
    ),
    **{role: _PLANT for role in ROLE_MODULES if role in PLANT_ROLES and role != "ups"},
    "ups": (
        ("batt_pct", "%", "battery", "battery charge", None),
        ("on_batt", "", _STATE, "carrying the load from the battery (1)", None),
    )
    + _PLANT,
}
# which sensor a deriving role reads: its params key naming the sensor, else the first that has one
ROLE_SENSOR_PARAM = {"grid_monitor": "meter", "electrolyser": "stack"}

# Grafana's unit ids for the firmware's units; anything else is shown with its own text
GRAFANA_UNITS = {
    "V": "volt",
    "A": "amp",
    "W": "watt",
    "kW": "kwatt",
    "Hz": "hertz",
    "degC": "celsius",
    "%": "percent",
    "%RH": "humidity",
    "Pa": "pressurepa",
    "bar": "pressurebar",
    "W/m2": "suffix: W/m²",
    "NL/h": "suffix: NL/h",
    "": "none",
}


def grafana_unit(unit: str) -> str:
    return GRAFANA_UNITS.get(unit, f"suffix: {unit}")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    quantity: str
    description: str
    source: str  # e.g. "sensor stack (ina226)" or "role electrolyser"
    sensor: str | None = None  # the sensor id, for a sensor's metric


def _get(obj, key, default=None):
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def sensor_metrics(sensor) -> list[Metric]:
    """The metrics of one sensor (a site.toml sensor table or a rendered config.json one)."""
    sid, t = _get(sensor, "id"), _get(sensor, "type")
    src = f"sensor {sid} ({t})"
    if t in ANALOG:
        unit = _get(sensor, "unit", "V")
        return [Metric(sid, unit, _analog_quantity(unit), ANALOG[t], src, sid)]
    return [
        Metric(sid + ("_" + sfx if sfx else ""), unit, q, d, src, sid)
        for sfx, unit, q, d in SENSOR_METRICS[t]
    ]


def _analog_quantity(unit: str) -> str:
    for q, units in (
        ("voltage", ("V", "mV")),
        ("current", ("A", "mA")),
        ("temperature", ("degC",)),
        ("pressure", ("bar", "Pa", "kPa")),
        ("irradiance", ("W/m2",)),
        ("power", ("W", "kW")),
    ):
        if unit in units:
            return q
    return unit or "value"


def node_metrics(node) -> dict[str, Metric]:
    """{name: Metric} a node publishes, in the firmware's order: its sensors', then its role's."""
    out: dict[str, Metric] = {}
    for s in _get(node, "sensors") or []:
        for m in sensor_metrics(s):
            out[m.name] = m
    role = _get(node, "role")
    for name, unit, q, desc, needs in ROLE_METRICS.get(role, ()):
        if needs is not None:
            src = role_input(node, out)
            if src is None:
                continue  # the firmware derives nothing without it
            desc = f"{desc}, from {src}"
        out[name] = Metric(name, unit, q, desc, f"role {role}")
    return out


def role_input(node, sensor_metrics_: dict[str, Metric] | None = None) -> str | None:
    """The sensor metric a deriving role reads (gt/roles/base.py, reads): the first metric ending in
    the role's suffix ("_hz", "_a") of the sensor its params name, of any sensor when none is
    named."""
    role = _get(node, "role")
    needs = next((r[4] for r in ROLE_METRICS.get(role, ()) if r[4] is not None), None)
    if needs is None:
        return None
    if sensor_metrics_ is None:
        sensor_metrics_ = {
            m.name: m for s in _get(node, "sensors") or [] for m in sensor_metrics(s)
        }
    want = _get(_get(node, "params") or {}, ROLE_SENSOR_PARAM[role])
    return next(
        (
            m.name
            for m in sensor_metrics_.values()
            if m.sensor and m.name.endswith(needs) and want in (None, m.sensor)
        ),
        None,
    )


def site_metrics(site) -> dict[str, dict[str, Metric]]:
    """{node id: node_metrics(node)} for every node of the site."""
    return {n.id: node_metrics(n) for n in site.nodes}


def groups(metrics) -> dict[tuple[str, str], list[Metric]]:
    """Metrics by (quantity, unit): one panel each, so a panel never mixes units."""
    out: dict[tuple[str, str], list[Metric]] = {}
    for m in metrics:
        out.setdefault((m.quantity, m.unit), []).append(m)
    return out


# --- the electrolyser's derived quantities (computed in the dashboards' Flux) ---------------------

# hydrogen's higher heating value: 285.83 kJ/mol / 22.414 L/mol, in kWh per Nm3
HHV_KWH_PER_NM3 = 3.5424


def electrolyser_inputs(node) -> dict[str, str] | None:
    """The metrics an electrolyser's efficiency and specific energy come from: {"h2": ..., "i": ...,
    "u": ...} when the node reads the stack voltage on an analog input (its power is u x i), or
    {"h2": ..., "p": ...} from the stack monitor's own power. On the example wiring the INA226 sits
    on the low side (its bus input sees at most 36 V, not the stack's 30-45 V), so its power is
    not the stack's; the analog stack voltage is. None when the node derives no hydrogen."""
    ms = node_metrics(node)
    if "h2_nlh" not in ms:
        return None
    i = role_input(node, ms)
    analog = tuple(f"({t})" for t in ANALOG)
    u = next(
        (m.name for m in ms.values() if m.sensor and m.unit == "V" and m.source.endswith(analog)),
        None,
    )
    if u is not None:
        return {"h2": "h2_nlh", "i": i, "u": u}
    return {"h2": "h2_nlh", "p": i[:-2] + "_w"}


__all__ = [
    "Metric",
    "SENSOR_METRICS",
    "ROLE_METRICS",
    "ANALOG",
    "node_metrics",
    "site_metrics",
    "sensor_metrics",
    "role_input",
    "groups",
    "grafana_unit",
    "electrolyser_inputs",
    "HHV_KWH_PER_NM3",
]
