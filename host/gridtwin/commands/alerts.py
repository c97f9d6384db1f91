"""`gridtwin alerts [--active] [--since 1d] [--follow] [--json]`: alerts from node health, the twin
and analytics, one model (gridtwin.daemon.alerts), as the daemon stored them.

Read from the site's database, so it works whether or not the daemon runs; `--follow` then prints
each alert raised or cleared from now on (the store is polled every half second) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

FOLLOW_POLL_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--active", action="store_true", help="only the alerts active now")
    parser.add_argument(
        "--since",
        default=None,
        help="raised since: a duration back (e.g. 1h, 7d) or a time (default: the last 50)",
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing raised and cleared alerts"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _stamp(ms) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _doc(r: dict) -> dict:
    d = {k: v for k, v in r.items() if v is not None}
    if isinstance(d.get("detail"), str):
        try:
            d["detail"] = json.loads(d["detail"])
        except ValueError:
            pass
    d["active"] = bool(r.get("active"))
    return d


def _line(r: dict, cleared_now: bool = False) -> str:
    state = "ACTIVE " if r.get("active") else "cleared"
    when = _stamp(r.get("cleared")) if cleared_now else _stamp(r.get("ts"))
    what = r.get("kind", "")
    where = r.get("node") or "-"
    if r.get("metric"):
        where += f".{r['metric']}"
    return (
        f"{when}  {state}  {r.get('severity', ''):<8} {what:<16} {where:<24} {r.get('message', '')}"
    )


def run(args) -> int:
    from gridtwin.commands.nodes import open_store
    from gridtwin.commands.query import parse_time
    from gridtwin.site import load_site

    site = load_site(args.site)
    store = open_store(site)
    try:
        since = parse_time(args.since, "--since", time.time()) if args.since else None
        # --follow: what changes from here on, marked before the first read so none is missed
        checked = int(time.time() * 1000)
        last_id = max((r["id"] for r in store.alerts(limit=1)), default=0)
        rows = store.alerts(
            active=args.active, since_ms=since, limit=None if since or args.active else 50
        )
        for r in rows:
            print(json.dumps(_doc(r)) if args.json else _line(r), flush=True)
        if not rows and not args.follow and not args.json:
            print(
                "no alerts"
                + (" active" if args.active else "")
                + (f" since {args.since}" if since else ""),
                file=sys.stderr,
            )
        if not args.follow:
            return 0
        shown = {
            r["id"] for r in rows if r["id"] > last_id
        }  # raised while the list was read: shown once
        try:
            while True:
                time.sleep(FOLLOW_POLL_S)
                now = int(time.time() * 1000)
                for r in store.alerts(after_id=last_id, changed_after_ms=checked - 1):
                    if r["id"] in shown and r["active"]:
                        continue
                    shown.discard(r["id"])
                    cleared_now = r["id"] <= last_id
                    print(json.dumps(_doc(r)) if args.json else _line(r, cleared_now), flush=True)
                    last_id = max(last_id, r["id"])
                checked = now
        except KeyboardInterrupt:
            return 0
    finally:
        store.close()
