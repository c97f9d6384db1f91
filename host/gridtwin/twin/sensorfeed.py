"""What a virtual node's chips measure, from the twin's state of its component.

``live_values(cfg, kind, m)`` -> ``{"<sensor id>.<quantity>": value}`` for the sensors of a node's
rendered config, the keys gridtwin.vworld.world_for reads live. Each sensor type lists which twin
metric feeds which chip quantity (per component kind); quantities not listed keep the world's
constant, and an ADC channel is fed the voltage its calibration turns into the twin's value.
"""

from __future__ import annotations

# sensor type -> component kind -> {chip quantity: twin metric}
FEEDS: dict[str, dict[str, dict[str, str]]] = {
    "ina226": {"electrolyser": {"current_a": "i_a", "bus_v": "u_stack_v"},
               "pv_array": {"current_a": "i_a", "bus_v": "v_v"}},
    "ina219": {"electrolyser": {"current_a": "i_a", "bus_v": "u_stack_v"},
               "pv_array": {"current_a": "i_a", "bus_v": "v_v"}},
    "ade7953": {"grid_bus": {"hz": "f_hz"}},
    "lm75": {"electrolyser": {"temp_c": "t_c"}, "pv_array": {"temp_c": "t_cell_c"}},
    "ds18b20": {"electrolyser": {"temp_c": "t_c"}, "pv_array": {"temp_c": "t_cell_c"}},
}


def live_values(cfg: dict, kind: str, m: dict) -> dict:
    out = {}
    for s in cfg.get("sensors", ()):
        for quantity, metric in FEEDS.get(s["type"], {}).get(kind, {}).items():
            if metric in m:
                out[f"{s['id']}.{quantity}"] = m[metric]
    return out
