"""Quantities analytics derives from a node's message, as if the node had sent them.

An electrolyser's efficiency (higher heating value of the hydrogen made over the electric power in,
in percent) and its stack power come from the metrics gridtwin.catalog.electrolyser_inputs names.
They are added to the readings analytics sees (rules, limits, KPIs), never to the store.

The efficiency is derived only while the stack's current density is at least ``MIN_J_ACM2`` (when
the node's params give its cell area, as the twin's do): below it the Faraday efficiency falls
steeply with the current (Ulleberg: j^2 / (f1 + j^2) x f2), so the efficiency measures the operating
point (a stack idling at dusk: ~20 %), not the stack's health; `make bench` section analytics saw
the efficiency rule fire on every sunset.
"""

from __future__ import annotations

from gridtwin.catalog import HHV_KWH_PER_NM3, electrolyser_inputs

# derived metric -> (unit, catalog-like quantity)
DERIVED = {"efficiency": ("%", "efficiency"), "p_stack_w": ("W", "stack power")}
MIN_J_ACM2 = 0.05  # A/cm2 of cell area: the efficiency of a stack below it is not derived


def derivers(site) -> dict:
    """{node id: fn(metrics dict) -> {derived metric: value}} for the site's nodes that have any."""
    out = {}
    for n in getattr(site, "nodes", ()) or ():
        inp = electrolyser_inputs(n)
        if inp:
            out[n.id] = _electrolyser(inp, _area_cm2(site, n))
    return out


def _area_cm2(site, node) -> float | None:
    """The stack's cell area (its config.json params, from its twin component), or None."""
    from gridtwin.twin.topology import role_params

    params = dict(node.get("params") or {})
    try:
        params.update(role_params(site, node))
    except Exception:  # a site without a twin: no area, every efficiency is derived
        pass
    area = params.get("area_m2")
    return float(area) * 1e4 if isinstance(area, (int, float)) and area > 0 else None


def _electrolyser(inp: dict, area_cm2: float | None = None):
    h2, u, i, p = inp["h2"], inp.get("u"), inp.get("i"), inp.get("p")

    def derive(m: dict) -> dict:
        flow = m.get(h2)
        watts = m[u] * m[i] if u and u in m and i in m else m.get(p) if p else None
        if flow is None or watts is None:
            return {}
        out = {"p_stack_w": watts}
        idle = area_cm2 is not None and i in m and m[i] / area_cm2 < MIN_J_ACM2
        if watts > 1.0 and not idle:  # off (below a watt) or idling: no efficiency to speak of
            # NL/h -> Nm3/h, times kWh/Nm3 -> kW of hydrogen (HHV), over the kW in
            out["efficiency"] = flow / 1000.0 * HHV_KWH_PER_NM3 * 1000.0 / watts * 100.0
        return out

    return derive
