"""`gridtwin tail [NODE]`: live readings as the daemon stores them."""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", nargs="?", help="only this node (default: all)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="the readings as stored, one JSON document per line (the payload's fields and "
        "`stored`: when it was committed, host clock, Unix ms)",
    )
    parser.add_argument("-n", "--count", type=int, default=0, help="stop after this many readings")


def run(args) -> int:
    from gridtwin.daemon.client import DaemonClient
    from gridtwin.site import load_site

    site = load_site(args.site)
    if args.node:
        from gridtwin.daemon.config import db_path
        from gridtwin.opcua.points import is_machine

        if not is_machine(site, args.node, db_path(site)):  # an OPC UA machine is named as a node
            site.node(args.node)
    seen = 0
    for msg in DaemonClient.for_site(site).tail(args.node):
        if args.json:
            print(json.dumps(msg), flush=True)
        else:
            stamp = (
                time.strftime("%H:%M:%S", time.localtime(msg["ts"] / 1000))
                + f".{msg['ts'] % 1000:03d}"
            )
            metrics = " ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in msg["m"].items()
            )
            # an OPC UA point has no seq: its boot field says where it came from
            seq = "opcua  " if msg.get("boot") == "opcua" else f"#{msg['seq']:<6}"
            print(
                f"{stamp} {msg['node']:<12} {seq} "
                f"{metrics}{'  (replayed)' if msg.get('hist') else ''}",
                flush=True,
            )
        seen += 1
        if args.count and seen >= args.count:
            break
    return 0
