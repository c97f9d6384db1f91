"""`gridtwin opcua serve|collect|browse|points`: the twin as an encrypted OPC UA server organised
by ISA-95, the collector that stores its points with unit and quality, and what it stored
(gridtwin/opcua/, docs/opcua.md). Their RSA application certificates: `gridtwin pki issue --opcua
NAME` (gridtwin/opcua/certs.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from gridtwin.errors import GridTwinError, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gridtwin.cli import positive

    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser(
        "serve", help="serve the running twin's assets (ISA-95, encrypted) until stopped"
    )
    p.add_argument("--endpoint", help="opc.tcp://HOST:PORT/PATH (default: [opcua] endpoint)")
    p.add_argument(
        "--dev", action="store_true", help="also offer the None security policy (development only)"
    )
    p.add_argument(
        "--speed", type=positive(), help="simulated seconds per wall second (default: [twin] speed)"
    )
    p.add_argument("--for", dest="duration", type=positive(), help="stop after this many seconds")
    p = sub.add_parser(
        "collect", help="subscribe to every variable and store each point with unit and quality"
    )
    p.add_argument("--endpoint", help="opc.tcp://HOST:PORT/PATH (default: [opcua] endpoint)")
    p.add_argument("--for", dest="duration", type=positive(), help="stop after this many seconds")
    p = sub.add_parser("browse", help="print a server's ISA-95 tree: path, tag, unit, NodeId")
    p.add_argument("--endpoint", help="opc.tcp://HOST:PORT/PATH (default: [opcua] endpoint)")
    p.add_argument(
        "--toml",
        action="store_true",
        help="as an [[opcua.sources]] mapping stub to paste into site.toml",
    )
    p = sub.add_parser("points", help="the points the collector stored (newest last)")
    p.add_argument("--machine", help="only this machine (component id)")
    p.add_argument("--tag", help="only this tag, e.g. Power_Active")
    p.add_argument(
        "--last",
        type=positive(int, "a whole number greater than 0"),
        default=20,
        help="how many rows (default 20)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def _stop_event(duration: float | None) -> asyncio.Event:
    """Set by SIGINT, SIGTERM, SIGHUP or after `duration` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(s, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    return stop


def _listen_error(endpoint: str, exc: OSError) -> GridTwinError:
    return GridTwinError(
        f"opcua serve: cannot listen on {endpoint}: {exc.strerror or exc}",
        hint="set [opcua] endpoint (or --endpoint) to a free port, or stop what holds this one",
    )


async def _serve(site, args) -> int:
    from gridtwin.opcua.server import TwinServer
    from gridtwin.pki import PKI
    from gridtwin.twin import Twin

    twin = Twin.from_site(site)
    if not twin.topo.components:
        raise GridTwinError(
            f"{site.path}: the twin has no components to serve",
            hint="add nodes or [[twin.components]] (e.g. kind = \"grid_meter\", \"pv_inverter\")",
        )
    pki = PKI.for_site(site)
    pki.ensure(site)
    srv = TwinServer(site, twin, pki, endpoint=args.endpoint, dev=args.dev)
    stop = _stop_event(args.duration)
    try:
        await srv.start()
    except OSError as exc:
        raise _listen_error(srv.endpoint, exc) from None
    modes = ", ".join(f"{p}/{m}" for p in site.opcua.policies for m in site.opcua.modes)
    print(
        f"serving {len(srv.vars)} variables of {len(twin.topo.components)} assets on "
        f"{srv.endpoint} ({modes}{', None (--dev)' if args.dev else ''}); Ctrl-C stops",
        flush=True,
    )
    try:
        await srv.run(stop, speed=args.speed)
    finally:
        await srv.stop()
    print(f"opcua serve: stopped after {srv.published} publishes", file=sys.stderr)
    return 0


async def _collect(site, args) -> int:
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.opcua.collector import Collector
    from gridtwin.pki import PKI

    pki = PKI.for_site(site)
    pki.ensure(site)
    store = SqliteStore(db_path(site))
    # [[opcua.sources]]: one collector per source, by its mapping; none (or --endpoint): the tree at
    # the endpoint
    sources = range(len(site.opcua.sources)) if site.opcua.sources and not args.endpoint else [None]
    cols = [Collector(site, store, pki, endpoint=args.endpoint, source=k) for k in sources]
    stop = _stop_event(args.duration)

    async def one(col):
        try:
            await col.run(stop)
        finally:
            stop.set()  # a bad mapping in one source stops them all: the user fixes site.toml first

    try:
        await asyncio.gather(*(one(c) for c in cols))
    finally:
        store.close()
    print(
        f"opcua collect: stopped; {sum(c.stored for c in cols)} points stored from "
        f"{sum(c.received for c in cols)} notifications",
        file=sys.stderr,
    )
    return 0


async def _browse(site, args) -> int:
    from gridtwin.opcua.collector import Collector
    from gridtwin.pki import PKI

    pki = PKI.for_site(site)
    pki.ensure(site)
    col = Collector(site, None, pki, endpoint=args.endpoint, log=lambda m: None)
    stop = asyncio.Event()
    task = asyncio.create_task(col.run(stop))
    try:
        await asyncio.wait_for(col.connected.wait(), 15)
    except asyncio.TimeoutError:
        stop.set()
        await task
        raise GridTwinError(
            f"opcua browse: {col.endpoint} did not accept a session within 15 s",
            hint="is `gridtwin opcua serve` running there, with this site's PKI?",
        ) from None
    stop.set()
    await task
    rows = sorted(col.vars.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    if args.toml:
        print(
            f'[[opcua.sources]]\nendpoint = "{col.endpoint}"\npolicy = "{col.policy}"\nmode = '
            f'"{col.mode}"'
        )
        print("points = [")
        for nid, (path, tag, unit) in rows:
            print(
                f'  {{ path = "{"/".join(path)}", tag = "{tag}", node = "{nid}", unit = "{unit}" '
                '},'
            )
        print("]")
        return 0
    for nid, (path, tag, unit) in rows:
        print(f"{'/'.join(path)}/{tag}\t{unit or '-'}\t{nid}")
    return 0


def run(args) -> int:
    from gridtwin.site import load_site

    action = getattr(args, "action", None)
    if not action:
        raise UsageError("say what to do: gridtwin opcua serve|collect|browse|points")
    site = load_site(args.site)
    if action == "points":
        from gridtwin.commands.nodes import open_store

        store = open_store(site)
        try:
            rows = store.opcua_points(args.machine, args.tag)[-args.last :]
        finally:
            store.close()
        if not rows:
            print("no OPC UA points stored (run `gridtwin opcua collect`)", file=sys.stderr)
        for e, s, a, ln, m, tag, ts, v, text, unit, q in rows:
            if args.json:
                print(
                    json.dumps(
                        {
                            "path": [e, s, a, ln, m],
                            "tag": tag,
                            "ts_ns": ts,
                            "value": v if text is None else text,
                            "unit": unit,
                            "quality": q,
                        }
                    )
                )
            else:
                val = (
                    text
                    if text is not None
                    else "-"
                    if v is None
                    else str(v).lower()  # a Boolean: true/false
                    if isinstance(v, bool)
                    else f"{v:.6g}"
                )
                when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1_000_000_000))
                print(
                    f"{when}.{ts // 1_000_000 % 1000:03d}Z  {'/'.join((a, ln, m))}/{tag} = {val} "
                    f"{unit or ''}  {q}"
                )
        return 0
    return asyncio.run(
        {"serve": _serve, "collect": _collect, "browse": _browse}[action](site, args)
    )
