"""`gridtwin cmd NODE CMD [key=value ...]`: send a command, wait for the node's acknowledgement."""

from __future__ import annotations

import argparse
import json
import sys

from gridtwin.errors import UsageError


def parse_value(text: str):
    """true/false/null, numbers and JSON arrays/objects as such; anything else is a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_args_list(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"argument {item!r} is not key=value", hint="e.g. gridtwin cmd pdu_a set_fault state=true")
        out[key] = parse_value(value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node")
    parser.add_argument("command")
    parser.add_argument("args", nargs="*", metavar="key=value")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ack (default 10)")
    parser.add_argument("--ttl", type=float, default=None,
                        help="seconds to wait for an offline node to come online (default: [daemon] command_ttl_s)")


def run(args) -> int:
    from gridtwin.daemon.client import DaemonClient
    from gridtwin.site import load_site

    site = load_site(args.site)
    site.node(args.node)
    cargs = parse_args_list(args.args)
    ttl = site.daemon.command_ttl_s if args.ttl is None else args.ttl
    client = DaemonClient.for_site(site)
    if sys.stderr.isatty():
        print(f"sending {args.command} to {args.node}, waiting up to {args.timeout:g} s for its ack ...", file=sys.stderr)
    ack = client.cmd(args.node, args.command, cargs, timeout=args.timeout, ttl=ttl)
    if ack.get("ok"):
        result = ack.get("result")
        print(json.dumps(result) if result is not None else "ok")
        return 0
    print(f"gridtwin: {args.node} refused {args.command}: {ack.get('err') or 'no reason given'}", file=sys.stderr)
    return 1
