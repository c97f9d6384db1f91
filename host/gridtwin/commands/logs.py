"""`gridtwin logs NODE [-n 20] [--follow] [--json]`: what a node logged over MQTT, as the daemon
stored it.

Read from the site's database, so it works whether or not the daemon runs now; `--follow` then
looks for new lines every half second until Ctrl-C (the store is the one place they arrive, and a
file-like poll is what `tail -f` does too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

FOLLOW_POLL_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gridtwin.cli import positive

    parser.add_argument("node")
    parser.add_argument(
        "-n",
        "--lines",
        type=positive(int, "a whole number greater than 0"),
        default=20,
        help="how many of the newest lines (default 20)",
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _line(row: dict) -> str:
    ms = row.get("ts") or row.get("received")  # a node that never had the time logs without one
    stamp = (
        dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ms else "-"
    )
    mod = f" {row['mod']}:" if row.get("mod") else ""
    return f"{stamp} {row.get('lvl') or '?'}{mod} {row.get('msg')}"


def _print(rows: list[dict], as_json: bool) -> None:
    for r in rows:
        if as_json:
            print(json.dumps({k: v for k, v in r.items() if k != "row"}), flush=True)
        else:
            print(_line(r), flush=True)


def run(args) -> int:
    from gridtwin.commands.nodes import open_store
    from gridtwin.site import load_site

    site = load_site(args.site)
    site.node(args.node)  # unknown node: the site's error, with a near id
    store = open_store(site)
    try:
        rows = store.node_logs(args.node, limit=args.lines)
        _print(rows, args.json)
        if not rows and not args.follow:
            print(
                f"no log lines from {args.node} yet (nodes send warnings and errors, and INFO when "
                f"the site turns it on)",
                file=sys.stderr,
            )
        if not args.follow:
            return 0
        after = rows[-1]["row"] if rows else 0
        try:
            while True:
                time.sleep(FOLLOW_POLL_S)
                new = store.node_logs(args.node, after=after)
                if new:
                    _print(new, args.json)
                    after = new[-1]["row"]
        except KeyboardInterrupt:
            return 0  # Ctrl-C is how --follow ends
    finally:
        store.close()
