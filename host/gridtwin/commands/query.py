"""`gridtwin query NODE METRIC --since 1h [--csv]`: stored readings of one metric."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import re
import sys
import time

from gridtwin.errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, flag: str = "--since") -> float:
    """'15m' -> 900.0 s. A leading '-' is allowed and means the same ('-5m': five minutes ago, as
    InfluxDB and Grafana write it)."""
    m = re.fullmatch(r"-?(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not m:
        raise UsageError(f"{flag} {text!r} is not a duration", hint="use a number and s/m/h/d/w, e.g. 90s, 15m, 1h, 7d")
    return float(m.group(1)) * UNITS[m.group(2)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node")
    parser.add_argument("metric")
    parser.add_argument("--since", default="1h", help="how far back (default 1h; e.g. 15m, 7d)")
    parser.add_argument("--csv", action="store_true", help="CSV with ISO-8601 UTC time")


def run(args) -> int:
    from gridtwin.commands.nodes import open_store
    from gridtwin.site import load_site

    site = load_site(args.site)
    site.node(args.node)  # unknown node: a ConfigError naming the site file and a near id
    since_ms = int((time.time() - parse_duration(args.since)) * 1000)
    store = open_store(site)
    try:
        if sys.stderr.isatty():
            from rich.console import Console
            with Console(stderr=True).status(f"reading {args.node}.{args.metric} since {args.since} ..."):
                rows = store.query(args.node, args.metric, since_ms)
        else:
            rows = store.query(args.node, args.metric, since_ms)
    finally:
        store.close()
    iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")  # noqa: E731
    if args.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["time", args.metric])
        w.writerows((iso(ts), v) for ts, v in rows)
    else:
        for ts, v in rows:
            print(f"{iso(ts)}  {v:g}")
    if not rows:
        print(f"no readings of {args.metric!r} from {args.node} in the last {args.since}", file=sys.stderr)
    return 0
