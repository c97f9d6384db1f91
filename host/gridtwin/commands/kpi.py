"""`gridtwin kpi [--since 1d] [--node ID] [--json]`: the energy KPIs analytics aggregates every
``[analytics] aggregation_s`` (gridtwin.analytics.kpi): per node and for the site, summed over the
window (energies), or averaged (ratios, power factor); and each node's running kWh counter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# KPIs that add up over buckets; the others are averaged over the buckets that have them
SUMS = frozenset(
    {
        "energy_kwh",
        "h2_nm3",
        "battery_discharge_kwh",
        "charge_kwh",
        "discharge_kwh",
        "generation_kwh",
        "import_kwh",
        "consumption_kwh",
    }
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", default="1d", help="the window: a duration back (default 1d) or a time"
    )
    parser.add_argument(
        "--node", default=None, help="only this node (\"site\" for the site's own KPIs)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")


def summary(rows) -> dict:
    """{node: {kpi: value}} over the buckets: energies summed, the rest averaged."""
    acc: dict = {}
    for _b, node, k, v in rows:
        if v is None:
            continue
        s = acc.setdefault(node or "site", {}).setdefault(k, [0.0, 0])
        s[0] += v
        s[1] += 1
    return {
        n: {k: (s if k in SUMS else s / c) for k, (s, c) in ks.items()} for n, ks in acc.items()
    }


def run(args) -> int:
    from gridtwin.commands.nodes import open_store
    from gridtwin.commands.query import parse_time
    from gridtwin.site import load_site

    site = load_site(args.site)
    if args.node and args.node != "site":
        site.node(args.node)  # unknown node: the site's error, with a near id
    store = open_store(site)
    try:
        since = parse_time(args.since, "--since", time.time())
        node = None if not args.node else "" if args.node == "site" else args.node
        rows = store.kpis(since, node)
        totals = (store.load_state("detector:kpi") or {}).get("total_kwh", {})
    finally:
        store.close()
    out = summary(rows)
    if args.json:
        print(json.dumps({"since_ms": since, "kpi": out, "total_kwh": totals}))
        return 0
    if not out:
        print(
            f"no KPIs since {args.since} (analytics aggregates every [analytics] aggregation_s, "
            f"{site.analytics.aggregation_s} s, while the daemon runs)",
            file=sys.stderr,
        )
    for n in sorted(out, key=lambda x: (x != "site", x)):
        vals = "  ".join(f"{k}={v:.4g}" for k, v in sorted(out[n].items()))
        print(f"{n:<12} {vals}")
    if totals and not args.node:
        print(
            "kWh since the first reading: "
            + ", ".join(f"{n} {v:.3f}" for n, v in sorted(totals.items()))
        )
    return 0
