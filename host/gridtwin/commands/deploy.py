"""`gridtwin deploy`: firmware (compiled), config.json and the node's certificate onto its board."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", required=True, help="node id from site.toml")
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyACM0")
    parser.add_argument(
        "--tool",
        choices=("mpremote", "ampy"),
        default="mpremote",
        help="transport to the board's REPL (default mpremote)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="after the reset, wait for the node's birth message on the broker",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds --wait waits (default 60)"
    )
    parser.add_argument(
        "--firmware",
        metavar="DIR",
        help="firmware folder to deploy (default: the firmware installed with gridtwin)",
    )
    parser.add_argument(
        "--broker",
        metavar="HOST:PORT",
        help="broker --wait connects to (default: the site's first broker host and port)",
    )


def run(args) -> int:
    from pathlib import Path

    from gridtwin.deploy import deploy
    from gridtwin.errors import UsageError
    from gridtwin.site import load_site

    host = port = None
    if args.broker:
        host, _, p = args.broker.rpartition(":")
        if not host or not p.isdigit():
            raise UsageError(
                f"--broker {args.broker!r} is not HOST:PORT", hint="e.g. --broker localhost:8883"
            )
        port = int(p)
    site = load_site(args.site)
    site.node(args.node)  # unknown node: a ConfigError before touching the port
    kw = {"firmware_dir": Path(args.firmware)} if args.firmware else {}
    deploy(
        site,
        args.node,
        args.port,
        tool=args.tool,
        wait=args.wait,
        wait_timeout=args.timeout,
        broker_host=host,
        broker_port=port,
        **kw,
    )
    if not args.wait:
        print(f"{args.node} restarted; it shows up in `gridtwin nodes` once it reaches the broker")
    return 0
