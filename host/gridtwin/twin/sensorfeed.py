"""What a node reads, by the twin; and what its virtual chips must measure for it to read that.

``readings(role, node, state, parents)`` -> ``{firmware metric: value}``: for every metric of the
node that has a twin counterpart, the value the twin says it has now. This is the one table of
counterparts: the feed below is made from it, and the demo test compares stored readings with it.

- a sensor whose site entry names twin metrics (``twin`` in site.toml, see gridtwin.sensors_site):
  each of its firmware metrics so named, and an INA2xx's power (``<id>_w``) when both its bus
  voltage and its current are fed;
- a plant role (gt/roles/plant.py): ``supply`` (upstream power present: a utility's grid, a
  generator running, a UPS's input), ``fault`` (failed, tripped), ``out`` (energized), ``load_kw``
  and, on a UPS, ``batt_pct`` and ``on_batt``;
- a grid monitor's ``f_dev`` (its ``hz`` metric's deviation from nominal), an electrolyser's
  ``h2_nlh`` when its config has the twin's cells and Faraday parameters.

``live_values(cfg, node, m)`` -> ``{"<prefix><sensor id>.<key>": value}``: for every sensor of the
node's rendered config whose site entry names a twin metric, the chip-level quantity that makes the
firmware read the twin's value, keyed exactly as gridtwin.vworld.world_for names the chip's live
values. An analog channel gets the volts its calibration turns into the value, a shunt monitor
amps (and its bus voltage divided by ``v_div``), a thermometer degC, the ADE7953 Hz
(gridtwin.vworld.chip_value). A metric the component does not have is skipped: the chip keeps its
world default. ``feed(cfg, node, role, state, parents)`` adds a plant node's HIL inputs.
"""

from __future__ import annotations

from gridtwin.sensortypes import TYPES as SENSOR_TYPES
from gridtwin.site import PLANT_ROLES
from gridtwin.vworld import chip_value, plant_values, quantity_key

FAILED = {"fault", "tripped", "failed"}  # twin statuses the node reports as fault = 1
# chips that compute power (w) from their bus voltage and current: the shunt monitors
POWER = {t for t, e in SENSOR_TYPES.items() if e.shunt_fs is not None}


def twin_metrics(node) -> dict[str, dict[str, str]]:
    """{sensor id: {firmware metric suffix: twin metric}} from a validated site node."""
    out = {}
    for s in node.get("sensors") or ():
        twin = s.get("twin")
        if twin:
            out[s["id"]] = dict(twin)
    return out


def metric_name(sensor_id: str, suffix: str) -> str:
    """The firmware's name of a sensor's metric (gt/sensors.py)."""
    return sensor_id + ("_" + suffix if suffix else "")


def sensor_readings(
    node, m: dict, types: dict[str, str] | None = None
) -> dict[str, tuple[str, str, float]]:
    """{firmware metric: (sensor id, suffix, twin value)} for the sensors of `node` fed from `m`;
    with `types` ({sensor id: type}) the power of a shunt monitor fed both v and a as well."""
    out = {}
    for sid, feeds in twin_metrics(node).items():
        got = {}
        for suffix, metric in feeds.items():
            value = m.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                got[suffix] = float(value)
                out[metric_name(sid, suffix)] = (sid, suffix, float(value))
        if types and types.get(sid) in POWER and "v" in got and "a" in got:
            out[metric_name(sid, "w")] = (sid, "w", got["v"] * got["a"])
    return out


def plant_readings(role: str, comp: dict, parents: list[dict]) -> dict[str, float]:
    """A plant-role node's metrics (gt/roles/plant.py) from its twin component and the components
    feeding it (their states)."""
    m, status = comp["m"], comp["status"]
    energized = bool(m.get("energized", 1))
    fault = status in FAILED
    upstream = any(bool(p["m"].get("energized", 1)) for p in parents)
    if role == "utility":
        supply = bool(m.get("on", 1))
    elif role == "generator":
        supply = bool(m.get("running", 0))
    elif role == "ups":
        # its input: what on_battery says while it runs, else whether anything upstream is live
        supply = upstream if fault or not energized else not m.get("on_battery")
    else:
        supply = energized if not fault else upstream
    out = {
        "supply": int(supply),
        "fault": int(fault),
        "out": int(energized),
        "load_kw": float(m.get("p_kw", 0.0)) if energized else 0.0,
    }
    if role == "ups":
        out["batt_pct"] = float(m.get("soc_pct", 0.0))
        out["on_batt"] = int(bool(m.get("on_battery")))
    return out


def readings(
    role: str, node, state: dict, parents: list[str], cfg: dict | None = None
) -> dict[str, float]:
    """{firmware metric: the twin's value now} for every metric of `node` with a twin counterpart
    (see the module docstring). `parents` are the ids of the twin components feeding the node's."""
    comp = state.get(node.id)
    if comp is None:
        return {}
    types = {s["id"]: s["type"] for s in (cfg or {}).get("sensors", ())} or {
        s["id"]: s["type"] for s in node.get("sensors") or ()
    }
    sensed = sensor_readings(node, comp["m"], types)
    out = {k: v[2] for k, v in sensed.items()}
    if role in PLANT_ROLES:
        out.update(plant_readings(role, comp, [state[p] for p in parents if p in state]))
    elif role == "electrolyser":
        # gt/roles/sensing.py computes the twin's H2 only with the twin's Faraday parameters
        params = (cfg or {}).get("params", {})
        if all(k in params for k in ("cells", "f1", "f2", "area_m2")) and "h2_nm3h" in comp["m"]:
            out["h2_nlh"] = float(comp["m"]["h2_nm3h"]) * 1000.0
    elif role == "grid_monitor":
        hz = [v for _sid, suffix, v in sensed.values() if suffix == "hz"]
        if hz:  # gt/roles/grid.py: the first frequency it has, minus its nominal
            out["f_dev"] = hz[0] - float((cfg or {}).get("params", {}).get("nominal_hz", 50))
    return out


def live_values(cfg: dict, node, m: dict, *, live_prefix: str = "") -> dict:
    feeds = twin_metrics(node)
    out = {}
    for s in cfg.get("sensors", ()):
        for suffix, metric in feeds.get(s["id"], {}).items():
            value = m.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                key = f"{live_prefix}{s['id']}.{quantity_key(s, suffix)}"
                out[key] = round(chip_value(s, suffix, float(value)), 9)
    return out


def feed(cfg: dict, node, role: str, state: dict, parents: list[str]) -> dict:
    """Everything a virtual node's world measures now: its chips' live values, and for a plant
    node wired to a HIL bench (params "hil") its inputs."""
    comp = state.get(node.id)
    if comp is None:
        return {}
    out = live_values(cfg, node, comp["m"])
    hil = (cfg.get("params") or {}).get("hil")
    if hil and role in PLANT_ROLES:
        out.update(
            plant_values(hil, plant_readings(role, comp, [state[p] for p in parents if p in state]))
        )
    return out
