"""What a virtual node's chips measure, from the twin's state of its component.

``live_values(cfg, node, m)`` -> ``{"<prefix><sensor id>.<key>": value}``: for every sensor of the
node's rendered config whose site entry names a twin metric (``twin`` in site.toml, see
gridtwin.sensors_site), the chip-level quantity that makes the firmware read the twin's value,
keyed exactly as gridtwin.vworld.world_for names the chip's live values. An analog channel gets
the volts its calibration turns into the value, a shunt monitor amps, a thermometer degC, the
ADE7953 Hz (gridtwin.vworld.chip_value). A metric the component does not have is skipped: the
chip keeps its world default.
"""

from __future__ import annotations

from gridtwin.vworld import chip_value, quantity_key


def twin_metrics(node) -> dict[str, dict[str, str]]:
    """{sensor id: {firmware metric suffix: twin metric}} from a validated site node."""
    out = {}
    for s in node.get("sensors") or ():
        twin = s.get("twin")
        if twin:
            out[s["id"]] = dict(twin)
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
