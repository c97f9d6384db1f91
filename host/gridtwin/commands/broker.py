"""`gridtwin broker`: render the Mosquitto configuration, install it, or run it in the
foreground."""

from __future__ import annotations

import argparse
from pathlib import Path

from gridtwin.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("config", help="render mosquitto.conf and the ACL from the site")
    p.add_argument(
        "--out", help="folder to write them to (default: print mosquitto.conf and the ACL)"
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="add a plain anonymous listener on 127.0.0.1 (development only)",
    )
    p.add_argument("--port", type=int, help="TLS port (default: [broker] port)")
    p.add_argument(
        "--ws-port", type=int, help="TLS WebSocket port, 0 = none (default: [broker] ws_port)"
    )
    p.add_argument(
        "--mosquitto-version", help="render for this version, e.g. 2.1 (default: the installed one)"
    )
    p = sub.add_parser(
        "install",
        help="write /etc/mosquitto (config, ACL, server certificates) and restart the service",
    )
    p.add_argument("--etc", default="/etc/mosquitto", help=argparse.SUPPRESS)
    p.add_argument("--no-restart", action="store_true", help="write the files only")
    p.add_argument(
        "--dry-run", action="store_true", help="show what would be written, with modes and owners"
    )
    p = sub.add_parser("run", help="run mosquitto in the foreground on loopback (development)")
    p.add_argument(
        "--dev", action="store_true", help="also a plain anonymous listener on 127.0.0.1"
    )
    p.add_argument("--port", type=int, help="TLS port (default: [broker] port)")
    p.add_argument("--ws-port", type=int, help="TLS WebSocket port, 0 = none")
    p.add_argument("--listen", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    sub.add_parser(
        "version", help="the installed Mosquitto version and the configuration form it gets"
    )


def _version(text: str | None):
    if not text:
        return None
    try:
        parts = tuple(int(x) for x in text.split("."))
    except ValueError:
        raise UsageError(
            f"--mosquitto-version {text!r} is not a version", hint="e.g. 2.0.11 or 2.1"
        ) from None
    return parts + (0,) * (3 - len(parts))


def run(args) -> int:
    from gridtwin import broker
    from gridtwin.pki import PKI
    from gridtwin.site import load_site

    if not getattr(args, "action", None):
        raise UsageError("say what to do: gridtwin broker config|install|run|version")
    if args.action == "version":
        v = broker.detect_version()
        form = (
            "2.1 (acl-file plugin, listener_allow_anonymous)"
            if v >= (2, 1)
            else "2.0 (per_listener_settings, acl_file)"
        )
        print(f"mosquitto {'.'.join(map(str, v))}: renders the {form} form")
        return 0
    site = load_site(args.site)
    pki = PKI.for_site(site)
    if args.action == "config":
        out = Path(args.out) if args.out else None
        files = broker.render(
            site,
            pki,
            dev=args.dev,
            port=args.port,
            ws_port=args.ws_port,
            data_dir=out,
            version=_version(args.mosquitto_version),
        )
        if out:
            broker.write_files(files, out)
            print(f"wrote {', '.join(sorted(files))} to {out}")
        else:
            for name, text in files.items():
                print(f"# ===== {name} =====\n{text}")
        return 0
    if args.action == "install":
        plan = broker.install_plan(site, pki, etc_dir=args.etc)
        if args.dry_run:
            for f in plan:
                print(
                    f"{f.mode:04o} {f.owner}:{f.group} {f.path}{'/' if f.content is None else ''}"
                )
            return 0
        for path in broker.apply_plan(plan):
            print(f"wrote {path}")
        if not args.no_restart:
            broker.restart_service()
            print("mosquitto restarted (the CA and CRL are read at start)")
        return 0
    if args.action == "run":
        return broker.run_foreground(
            site, pki, dev=args.dev, port=args.port, ws_port=args.ws_port, listen=args.listen
        )
    raise UsageError(f"unknown action {args.action!r}")
