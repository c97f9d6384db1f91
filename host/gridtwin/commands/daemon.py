"""`gridtwin daemon`: run the daemon (default), install it as a systemd unit, or show its health."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def port(text: str) -> int:
    """--metrics-port: 0 (any free port) or a TCP port; the CLI's one check for ports otherwise."""
    from gridtwin.cli import port as tcp_port

    return 0 if text == "0" else tcp_port(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("run", help="run in the foreground (the default)")
    for q in (parser, p):
        q.add_argument(
            "--metrics-port",
            type=port,
            help="port of /healthz and /metrics (default: [daemon] metrics_port; 0: any free one)",
        )
        q.add_argument(
            "--log-format",
            choices=("auto", "json", "text"),
            default="auto",
            help="json: one object per line (default when not on a terminal)",
        )
        q.add_argument(
            "--twin",
            action="store_true",
            help="also run the digital twin: state and alerts under _host/, commands to nodes",
        )
        # SUPPRESS: `daemon --instance 2 run` must not be reset to a default by the subparser
        q.add_argument(
            "--instance",
            type=int,
            default=argparse.SUPPRESS,
            metavar="K",
            help="run daemon instance K of [daemon] instances (default 1): its own certificate "
            "gridtwin-host-K and broker session, sharing the ingest; instance 1 serves cmd/tail",
        )
    p = sub.add_parser(
        "install",
        help="render and install a systemd unit with a restart policy; "
        "--twin, --instance and --metrics-port go into its ExecStart",
    )
    # the run options again (before or after `install`): SUPPRESS keeps one given before it
    p.add_argument(
        "--twin", action="store_true", default=argparse.SUPPRESS, help="the unit runs the twin too"
    )
    p.add_argument(
        "--instance",
        type=int,
        default=argparse.SUPPRESS,
        metavar="K",
        help="the unit runs instance K",
    )
    p.add_argument(
        "--metrics-port", type=port, default=argparse.SUPPRESS, help="the unit's /metrics port"
    )
    p.add_argument(
        "--user", default="gridtwin", help="system user the daemon runs as (default gridtwin)"
    )
    p.add_argument("--unit-dir", default="/etc/systemd/system", help=argparse.SUPPRESS)
    p.add_argument("--dry-run", action="store_true", help="print the unit, change nothing")
    p.add_argument("--no-start", action="store_true", help="write the unit only")
    sub.add_parser("status", help="health and counters of the running daemon")


def run(args) -> int:
    from gridtwin.site import load_site

    site = load_site(args.site)
    action = getattr(args, "action", None) or "run"
    instance = getattr(args, "instance", 1)
    twin = getattr(args, "twin", False)
    if twin and instance != 1:
        # the twin publishes _host/ state and sends commands: one of it per site, beside instance 1
        from gridtwin.errors import UsageError

        raise UsageError(
            f"--twin runs with instance 1, not {instance}", hint="start instance 1 with --twin"
        )
    if action == "install":
        from gridtwin.daemon import systemd

        # what `daemon run` would get from this command line, so the service runs as asked
        run_opts = {
            "twin": twin,
            "instance": instance,
            "metrics_port": getattr(args, "metrics_port", None),
        }
        if args.dry_run:
            print(systemd.render_unit(site, user=args.user, **run_opts), end="")
            return 0
        unit = systemd.install(
            site, user=args.user, unit_dir=Path(args.unit_dir), start=not args.no_start, **run_opts
        )
        print(
            f"installed {unit}"
            + ("" if args.no_start else f"; started: journalctl -u {unit.name} -f")
        )
        return 0
    if action == "status":
        from gridtwin.daemon.client import DaemonClient

        h = DaemonClient.for_site(site).health()
        print(json.dumps(h, indent=2))
        return 0 if h.get("ok") else 1
    from gridtwin.daemon.logsetup import setup_logging
    from gridtwin.daemon.service import Daemon

    setup_logging(args.verbose, args.log_format)
    overrides = {"metrics_port": args.metrics_port} if args.metrics_port is not None else {}
    daemon = Daemon.from_site(site, instance=instance, **overrides)
    if twin:
        import signal

        from gridtwin.twin.coupling import run_with_daemon

        # A closed terminal or SSH session stops it as SIGTERM does (the handler run_with_daemon
        # sets), so it stores what it received instead of dying mid-batch.
        signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))
        return run_with_daemon(daemon, site)
    return daemon.run_forever()
