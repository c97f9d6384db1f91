"""`gridtwin nodes`: the fleet at a glance (works with or without the daemon running)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per node")


def _age(s):
    if s is None:
        return "never"
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"


def _fmt(v):
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def open_store(site):
    """The site's database for reading, or a clear error when the daemon never ran."""
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.errors import GridTwinError

    path = db_path(site)
    if not path.exists():
        raise GridTwinError(f"no data yet: {path} does not exist",
                            hint="start the daemon (`gridtwin daemon`) so it can store what the nodes send")
    return SqliteStore(path)


def run(args) -> int:
    from gridtwin.daemon.registry import fleet
    from gridtwin.site import load_site

    site = load_site(args.site)
    store = open_store(site)
    try:
        views = fleet(store, site, stale_intervals=site.daemon.stale_intervals)
    finally:
        store.close()
    if args.json:
        for v in views:
            print(json.dumps(dataclasses.asdict(v)))
        return 0
    cols = ("node", "state", "last seen", "fw", "board", "rssi", "heap", "reset", "outbox", "drops")
    rows = [(v.id + ("" if v.in_site else " (not in site)"), v.state, _age(v.age_s), _fmt(v.fw), _fmt(v.board),
             _fmt(v.rssi), _fmt(v.heap), _fmt(v.reset), _fmt(v.outbox), _fmt(v.drops)) for v in views]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        colour = {"online": "green", "stale": "yellow", "offline": "red", "unknown": "dim"}
        t = Table(title=f"site {site.id} at {time.strftime('%H:%M:%S')}")
        for c in cols:
            t.add_column(c)
        for r in rows:
            t.add_row(r[0], f"[{colour[r[1]]}]{r[1]}[/]", *r[2:])
        Console().print(t)
    else:
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
        for r in (cols, *rows):
            print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    counts = {s: sum(v.state == s for v in views) for s in ("online", "stale", "offline", "unknown")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no nodes", file=sys.stderr)
    return 0
