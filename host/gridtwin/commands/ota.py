"""`gridtwin ota NODE... | --all [--config-only] [--canary N]`: update nodes over the air;
`gridtwin ota status`: every node's firmware and OTA state (docs/ota.md)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gridtwin.cli import positive

    parser.add_argument(
        "nodes", nargs="*", metavar="NODE", help="node ids from site.toml, or `status`"
    )
    parser.add_argument("--all", action="store_true", help="every node of the site")
    parser.add_argument(
        "--config-only", action="store_true", help="send config.json alone, not the firmware"
    )
    parser.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="N",
        help="update the first N nodes first; the rest only when all N are confirmed",
    )
    parser.add_argument(
        "--timeout",
        type=positive(),
        default=600.0,
        help="seconds a node has to answer and confirm (an offline node, when it is back); "
        "default 600",
    )
    parser.add_argument(
        "--trial",
        type=positive(int, "a whole number of seconds > 0"),
        default=120,
        help="seconds the new version has to come up healthy before it rolls back (default 120)",
    )
    parser.add_argument(
        "--firmware",
        metavar="DIR",
        help="firmware folder to build from (default: the firmware installed with gridtwin)",
    )
    parser.add_argument(
        "--broker",
        metavar="HOST:PORT",
        help="broker to send through (default: the site's first broker host and port)",
    )


def _broker(args, site) -> tuple[str, int]:
    from gridtwin.errors import UsageError

    if args.broker:
        host, _, p = args.broker.rpartition(":")
        if not host or not p.isdigit():
            raise UsageError(
                f"--broker {args.broker!r} is not HOST:PORT", hint="e.g. --broker localhost:8883"
            )
        return host, int(p)
    return (site.broker.hosts[0] if site.broker.hosts else "localhost"), int(site.broker.port)


def run(args) -> int:
    from gridtwin import ota, procs
    from gridtwin.site import load_site

    site = load_site(args.site)
    # one at a time (status too: it connects as the same identity); Ctrl-C, SIGTERM and SIGHUP
    # end the run through the lock's release
    with procs.stop_on_signals(), ota.single_run(site):
        return _run(args, site)


def _run(args, site) -> int:
    import tempfile
    from pathlib import Path

    from gridtwin import ota
    from gridtwin.errors import UsageError
    from gridtwin.pki import PKI

    pki = PKI.for_site(site)
    host, port = _broker(args, site)
    if args.nodes == ["status"]:
        docs = ota.fleet_status(pki, host, port, site.topic_root)
        rows = ota.status_rows(site.node_ids, docs)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return 0
    if args.all == bool(args.nodes):
        raise UsageError(
            "name the nodes to update, or --all (not both)",
            hint="e.g. gridtwin ota pv1 srv_a, or gridtwin ota --all --canary 2",
        )
    nodes = site.node_ids if args.all else list(dict.fromkeys(args.nodes))
    for n in nodes:
        site.node(n)  # an unknown node: one line naming it, before anything is built
    if not 0 <= args.canary <= len(nodes):
        raise UsageError(
            f"--canary {args.canary} is not 0 to {len(nodes)} (the nodes to update)",
            hint="the first N nodes are the canaries",
        )
    kw = {"firmware_dir": Path(args.firmware)} if args.firmware else {}
    with tempfile.TemporaryDirectory(prefix="gridtwin-ota-") as tmp:
        releases = []
        for n in nodes:
            print(f"{n}: building the release ...", file=sys.stderr, flush=True)
            releases.append(
                ota.build_release(
                    site, n, Path(tmp) / n, config_only=args.config_only, pki=pki, **kw
                )
            )
    for r in releases:
        print(f"{r.node}: {r.kind} release {r.version}, {r.size} bytes", file=sys.stderr)
    up = ota.Updater.connect(
        pki,
        host,
        port,
        site.topic_root,
        trial_s=args.trial,
        busy_backoff=ota.BUSY_BACKOFF,
        say=lambda line: print(line, file=sys.stderr, flush=True),
    )
    try:
        results = ota.staged(
            up,
            releases,
            args.canary,
            out=lambda line: print(line, flush=True),
            expire_s=args.timeout,
        )
    finally:
        up.close()
    shown = {r.node for r in results[: args.canary]} if args.canary else set()
    for r in results:
        if r.node not in shown:
            print(r.line(), flush=True)
    failed = [r for r in results if not r.ok]
    if failed:
        busy = [r.node for r in failed if r.state == "busy"]
        fix = (
            f"; {', '.join(busy)} had no RAM for the transfer {ota.BUSY_TRIES + 1} times: run "
            f"`gridtwin ota {' '.join(busy)}` again (what it received is kept and resumed), or "
            "give it room (fewer sensors, no OLED)"
            if busy
            else ""
        )
        print(
            f"gridtwin: {len(failed)} of {len(results)} node(s) not updated: "
            + ", ".join(f"{r.node} ({r.state})" for r in failed)
            + fix,
            file=sys.stderr,
        )
        return 1
    return 0
