"""`gridtwin nodes`: the fleet at a glance (works with or without the daemon running)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "node",
        nargs="?",
        help="one node in detail: sensors, metrics with units and last values, firmware and health",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per node")


def _age(s):
    if s is None:
        return "never"
    return (
        f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"
    )


def _fmt(v):
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def open_store(site):
    """The site's database for reading, or a clear error when the daemon never ran."""
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.errors import GridTwinError

    path = db_path(site)
    if not path.exists():
        raise GridTwinError(
            f"no data yet: {path} does not exist",
            hint="start the daemon (`gridtwin daemon`) so it can store what the nodes send",
        )
    return SqliteStore(path)


def run(args) -> int:
    from gridtwin.daemon.registry import fleet, reject_note
    from gridtwin.site import load_site

    site = load_site(args.site)
    if args.node:
        return show_node(site, args.node, as_json=args.json)
    store = open_store(site)
    try:
        views = fleet(store, site, stale_intervals=site.daemon.stale_intervals)
    finally:
        store.close()
    if args.json:
        for v in views:
            print(json.dumps(dataclasses.asdict(v)))
        return 0
    cols = (
        "node",
        "state",
        "last seen",
        "fw",
        "board",
        "rssi",
        "heap",
        "reset",
        "outbox",
        "drops",
        "rejected",
    )
    rows = [
        (
            v.id + ("" if v.in_site else " (not in site)"),
            v.state,
            _age(v.age_s),
            _fmt(v.fw),
            _fmt(v.board),
            _fmt(v.rssi),
            _fmt(v.heap),
            _fmt(v.reset),
            _fmt(v.outbox),
            _fmt(v.drops),
            f"{v.rejected} ({v.last_reject.split(':', 1)[0]})"
            if v.rejected and v.last_reject
            else _fmt(v.rejected),
        )
        for v in views
    ]
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
        widths = [
            max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
        ]
        for r in (cols, *rows):
            print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    for note in filter(None, map(reject_note, views)):  # readings refused now: say why and the fix
        print(f"gridtwin: {note}", file=sys.stderr)
    counts = {
        s: sum(v.state == s for v in views) for s in ("online", "stale", "offline", "unknown")
    }
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no nodes", file=sys.stderr)
    return 0


def node_detail(site, store, node_id: str) -> dict:
    """What one node is and has: the site's view of it, its last birth, its metrics with units and
    last values (from the birth's {metric: unit} and what the store holds), its state."""
    from gridtwin.daemon.registry import fleet

    node = site.node(node_id) if node_id in site.node_ids else None
    view = next(
        (
            v
            for v in fleet(store, site, stale_intervals=site.daemon.stale_intervals)
            if v.id == node_id
        ),
        None,
    )
    if view is None:
        site.node(
            node_id
        )  # neither in the site nor ever heard from: the site's error, with a near id
    row = next((r for r in store.nodes() if r["id"] == node_id), {})
    try:
        units = json.loads(row.get("sensors") or "{}")
    except (TypeError, ValueError):
        units = {}
    units = units if isinstance(units, dict) else {}
    last = store.latest(node_id)
    values = last[1] if last else {}
    names = list(units) + [m for m in store.metric_names(node_id) if m not in units]
    health = {
        k: row.get(k)
        for k in (
            "heap",
            "heap_min",
            "rssi",
            "uptime",
            "outbox",
            "drops",
            "interval",
            "reset",
            "boot",
            "cfg",
        )
        if row.get(k) is not None
    }
    return {
        "id": node_id,
        "in_site": node is not None,
        "role": node.role if node else row.get("role"),
        "board": view.board,
        "parents": node.parents if node else [],
        "state": view.state,
        "last_seen": view.last_seen,
        "age_s": view.age_s,
        "fw": view.fw,
        "health": health,
        "sensors": [_sensor(s) for s in (node.get("sensors") or [])] if node else [],
        "metrics": [{"name": m, "unit": units.get(m), "last": values.get(m)} for m in names],
        "last_ts": last[0] if last else None,
        **(
            {"rejected": view.rejected, "last_reject": view.last_reject}
            if getattr(view, "rejected", None)
            else {}
        ),
    }


def _sensor(s) -> dict:
    d = s.as_dict() if hasattr(s, "as_dict") else dict(s)
    return {
        k: v for k, v in d.items() if k != "twin" and v not in (None, "")
    }  # twin: host-only wiring


def show_node(site, node_id: str, as_json: bool = False) -> int:
    store = open_store(site)
    try:
        d = node_detail(site, store, node_id)
    finally:
        store.close()
    if as_json:
        print(json.dumps(d, default=str))
        return 0
    import datetime as dt

    where = ", ".join(
        x
        for x in (
            f"role {d['role']}" if d["role"] else "",
            f"board {d['board']}" if d["board"] else "",
            f"parent {', '.join(d['parents'])}" if d["parents"] else "",
            "" if d["in_site"] else "not in the site file",
        )
        if x
    )
    print(f"{d['id']}  ({where})")
    print(f"  state     {d['state']}, last seen {_age(d['age_s'])}")
    h = d["health"]
    fw = f"{d['fw']}" + (f" (boot {h['boot']}, reset {h.get('reset', '?')})" if "boot" in h else "")
    print(f"  firmware  {fw if d['fw'] else 'unknown (no birth yet)'}")
    shown = (
        ("rssi", " dBm"),
        ("heap", " B free"),
        ("heap_min", " B min"),
        ("uptime", " s up"),
        ("outbox", " queued"),
        ("drops", " dropped"),
        ("interval", " ms"),
    )
    parts = [f"{k} {_fmt(h[k])}{unit}" for k, unit in shown if k in h]
    print(f"  health    {', '.join(parts) or '-'}")
    if d.get("rejected"):
        print(f"  rejected  {d['rejected']} readings, the last: {d['last_reject']}")
    if d["sensors"]:
        print(
            "  sensors   "
            + "\n            ".join(
                f"{s['id']} ({s['type']}"
                + "".join(
                    f", {k} {hex(v) if k == 'addr' else v}"
                    for k, v in s.items()
                    if k in ("addr", "input", "pin", "rom", "unit")
                )
                + ")"
                for s in d["sensors"]
            )
        )
    else:
        print("  sensors   none in the site file")
    if d["metrics"]:
        at = (
            dt.datetime.fromtimestamp(d["last_ts"] / 1000, dt.timezone.utc).strftime("%H:%M:%S UTC")
            if d["last_ts"]
            else "-"
        )
        width = max(len(m["name"]) for m in d["metrics"])
        print(f"  metrics   {'name'.ljust(width)}  {'unit':<6}  last ({at})")
        for m in d["metrics"]:
            print(
                f"            {m['name'].ljust(width)}  {(m['unit'] or '-'):<6}  {_fmt(m['last'])}"
            )
    else:
        print("  metrics   none stored yet")
    return 0
