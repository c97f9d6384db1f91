"""Quantities analytics derives from a node's message, as if the node had sent them.

An electrolyser's efficiency (higher heating value of the hydrogen made over the electric power in,
in percent) and its stack power come from the metrics gridtwin.catalog.electrolyser_inputs names.
They are added to the readings analytics sees (rules, limits, KPIs), never to the store.
"""

from __future__ import annotations

from gridtwin.catalog import HHV_KWH_PER_NM3, electrolyser_inputs

# derived metric -> (unit, catalog-like quantity)
DERIVED = {"efficiency": ("%", "efficiency"), "p_stack_w": ("W", "stack power")}


def derivers(site) -> dict:
    """{node id: fn(metrics dict) -> {derived metric: value}} for the site's nodes that have any."""
    out = {}
    for n in getattr(site, "nodes", ()) or ():
        inp = electrolyser_inputs(n)
        if inp:
            out[n.id] = _electrolyser(inp)
    return out


def _electrolyser(inp: dict):
    h2, u, i, p = inp["h2"], inp.get("u"), inp.get("i"), inp.get("p")

    def derive(m: dict) -> dict:
        flow = m.get(h2)
        watts = m[u] * m[i] if u and u in m and i in m else m.get(p) if p else None
        if flow is None or watts is None:
            return {}
        out = {"p_stack_w": watts}
        if watts > 1.0:  # below a watt the stack is off: no efficiency to speak of
            # NL/h -> Nm3/h, times kWh/Nm3 -> kW of hydrogen (HHV), over the kW in
            out["efficiency"] = flow / 1000.0 * HHV_KWH_PER_NM3 * 1000.0 / watts * 100.0
        return out

    return derive
