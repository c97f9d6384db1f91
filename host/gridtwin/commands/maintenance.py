"""`gridtwin maintenance [--node ID] [--horizon 24h] [--json]`: per node and thermometer (every
metric with a maintenance threshold, gridtwin.analytics.maintenance), where its trend is heading:
the level now, the trend per hour, when it reaches the threshold and with what confidence, the risk
factors and what to do.

It reads the store (the daemon's database), so it works whether or not the daemon runs: each series
is the node's last horizon of readings, up to its newest (a node's clock, not this machine's: a
demo's boards run ahead), averaged into the same buckets the daemon's detector fits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from gridtwin.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", action="append", metavar="ID", help="only this node (repeatable)")
    parser.add_argument(
        "--horizon", default="24h", help="how far ahead to look (default 24h; e.g. 12h, 7d)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per node and metric")


def series(
    store, node: str, metric: str, end_ms: int, horizon_ms: int, bucket_ms: int
) -> tuple[list, list]:
    """(bucket middles, means) of the node's metric over the horizon up to end_ms."""
    acc: dict[int, list] = {}
    for ts, v in store.query(node, metric, end_ms - horizon_ms, end_ms + 1):
        if isinstance(v, (int, float)):
            a = acc.setdefault(ts - ts % bucket_ms, [0, 0.0])
            a[0] += 1
            a[1] += v
    keys = sorted(acc)
    return [k + bucket_ms // 2 for k in keys], [acc[k][1] / acc[k][0] for k in keys]


def forecasts(site, store, nodes: list[str], horizon_s: float) -> list:
    from gridtwin.analytics.base import Context
    from gridtwin.analytics.maintenance import MaintenanceDetector, forecast

    det = MaintenanceDetector(Context(site=site), horizon_s=horizon_s)
    out = []
    for node in nodes:
        latest = store.latest(node)
        if latest is None:
            continue
        end_ms = latest[0]
        for metric in store.metric_names(node):
            th = det.threshold_for(node, metric)
            if th is None:
                continue
            ts, vals = series(store, node, metric, end_ms, int(horizon_s * 1000), det.bucket_ms)
            out.append(
                forecast(
                    ts,
                    vals,
                    th,
                    end_ms,
                    horizon_s,
                    node=node,
                    metric=metric,
                    role=det.resolver.role(node),
                    min_span_s=det.min_span_s,
                    min_points=det.min_points,
                )
            )
    return out


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def line(fc, horizon_s: float, min_span_s: float) -> str:
    th, u = fc.threshold, fc.threshold.unit
    now = f"{fc.level:.1f} {u}" if fc.level is not None else "-"
    trend = f"{fc.slope_per_h:+.2f} {u}/h" if fc.slope_per_h is not None else "-"
    if fc.status == "too short":
        text = (
            f"not enough history ({fc.span_s / 3600:.1f} h of the {min_span_s / 3600:g} h a trend "
            "needs)"
        )
    elif fc.status == "crossed":
        text = f"past {th.limit:g} {u} now"
    elif fc.status == "inside horizon":
        text = (
            f"reaches {th.limit:g} {u} in {fc.hours_left:.1f} h ({_when(fc.crossing_ms)}), "
            f"confidence {fc.confidence:.2f}"
        )
    elif fc.status == "beyond horizon":
        text = (
            f"reaches {th.limit:g} {u} in {fc.hours_left:.0f} h: beyond the {horizon_s / 3600:g} "
            "h horizon"
        )
    else:
        text = f"not heading for {th.limit:g} {u} ({'falling' if fc.status == 'away' else 'flat'})"
    return f"{fc.node:<12} {fc.metric:<14} {now:>10} {trend:>14}  {text}"


def run(args) -> int:
    from gridtwin.commands.query import parse_duration
    from gridtwin.commands.nodes import open_store
    from gridtwin.site import load_site

    horizon_s = parse_duration(args.horizon, "--horizon")
    if horizon_s < 3600:
        raise UsageError(
            f"--horizon {args.horizon!r} is shorter than an hour", hint="e.g. --horizon 24h"
        )
    site = load_site(args.site)
    nodes = args.node or site.node_ids
    for n in nodes:
        site.node(n)  # an unknown node: the site file's error with a near id
    store = open_store(site)
    try:
        result = forecasts(site, store, nodes, horizon_s)
    finally:
        store.close()
    if args.json:
        for fc in result:
            print(json.dumps(fc.as_dict()))
        return 0
    if not result:
        print(f"no thermometer readings stored for {', '.join(nodes)}", file=sys.stderr)
        return 0
    min_span = horizon_s / 4
    print(
        f"{'node':<12} {'metric':<14} {'now':>10} {'trend':>14}  forecast ({args.horizon} horizon)"
    )
    for fc in result:
        print(line(fc, horizon_s, min_span))
        if fc.status in ("inside horizon", "crossed"):
            for r in fc.risks:
                print(f"{'':<14}risk: {r}")
            for a in fc.actions:
                print(f"{'':<14}do:   {a}")
    return 0
