"""`gridtwin cmd NODE CMD [key=value ...]`: send a command, wait for the node's acknowledgement."""

from __future__ import annotations

import argparse
import json
import sys
import time

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
            # the arguments the firmware's plant roles take (firmware/gt/roles/plant.py: _flag)
            raise UsageError(
                f"argument {item!r} is not key=value",
                hint="e.g. gridtwin cmd pdu_a set_fault on=true",
            )
        out[key] = parse_value(value)
    return out


def _offline(site, node: str) -> str | None:
    """'offline (last seen 5m ago)' when the daemon will wait for the node (it sends only to a node
    whose last status is online, see daemon/dispatch.py), else None."""
    from gridtwin.commands.nodes import _age
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore

    if not db_path(site).exists():
        return None
    store = SqliteStore(db_path(site))
    try:
        row = next((r for r in store.nodes() if r["id"] == node), {})
    finally:
        store.close()
    if row.get("state") == "online":
        return None
    seen = row.get("last_seen")
    return (
        "offline ("
        + ("never seen" if seen is None else f"last seen {_age(time.time() - seen / 1000)}")
        + ")"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node")
    parser.add_argument("command")
    parser.add_argument("args", nargs="*", metavar="key=value")
    from gridtwin.cli import positive

    parser.add_argument(
        "--timeout", type=positive(), default=10.0, help="seconds to wait for the ack (default 10)"
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=None,
        help="seconds to wait for an offline node to come online (default: [daemon] command_ttl_s)",
    )


def run(args) -> int:
    from gridtwin.daemon.client import DaemonClient
    from gridtwin.site import load_site

    site = load_site(args.site)
    site.node(args.node)
    cargs = parse_args_list(args.args)
    ttl = site.daemon.command_ttl_s if args.ttl is None else args.ttl
    if ttl < 0:
        raise UsageError(
            f"--ttl {args.ttl:g} is negative",
            hint="seconds to wait for an offline node, 0 = not at all",
        )
    client = DaemonClient.for_site(site)
    offline = _offline(site, args.node)
    if offline and ttl > 0:
        # the daemon holds the command until the node is back: a minute of silence looks like a hang
        print(
            f"gridtwin: {args.node} is {offline}; waiting up to {ttl:g} s for it to come online "
            f"(--ttl), then {args.timeout:g} s for its ack; Ctrl-C gives up",
            file=sys.stderr,
            flush=True,
        )
    elif sys.stderr.isatty():
        print(
            f"sending {args.command} to {args.node}, waiting up to {args.timeout:g} s for its ack "
            "...",
            file=sys.stderr,
        )
    ack = client.cmd(args.node, args.command, cargs, timeout=args.timeout, ttl=ttl)
    if ack.get("ok"):
        result = ack.get("result")
        print(json.dumps(result) if result is not None else "ok")
        return 0
    print(
        f"gridtwin: {args.node} refused {args.command}: {ack.get('err') or 'no reason given'}",
        file=sys.stderr,
    )
    return 1
