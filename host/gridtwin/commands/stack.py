"""`gridtwin stack`: Telegraf, InfluxDB 2 and Grafana: render, install, provision, doctor."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser(
        "render", help="write every stack file under a folder (nothing is installed)"
    )
    p.add_argument(
        "--out", required=True, help="folder; files go to <out>/etc/..., <out>/var/lib/..."
    )
    p = sub.add_parser(
        "install", help="write the files into /etc and /var/lib, restart, provision InfluxDB 2"
    )
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    p.add_argument("--no-restart", action="store_true", help="write the files only")
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be written, with modes and owners"
    )
    p = sub.add_parser(
        "provision",
        help="InfluxDB 2: setup, bucket, Telegraf's and Grafana's tokens (into root-only files)",
    )
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    p.add_argument("--url", help="InfluxDB base URL (default: [storage] influx_url)")
    p = sub.add_parser("doctor", help="check each service and the data path; say what to fix")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    p.add_argument("--no-services", action="store_true", help="skip the systemd checks")
    p.add_argument("--no-data-path", action="store_true", help="skip the end-to-end probe")
    p.add_argument(
        "--timeout", type=float, default=40.0, help="seconds the probe may take (default 40)"
    )
    p.add_argument(
        "--broker", metavar="HOST:PORT", help="broker for the probe (default: the site's)"
    )


def run(args) -> int:
    from pathlib import Path

    from gridtwin.errors import UsageError
    from gridtwin.pki import PKI
    from gridtwin.site import load_site
    from gridtwin.stack import doctor, influx, install

    action = getattr(args, "action", None)
    if not action:
        raise UsageError("say what to do: gridtwin stack render|install|provision|doctor")
    site = load_site(args.site)
    pki = PKI.for_site(site)
    if action == "render":
        files = install.plan(site, pki)
        written = install.write(files, args.out, chown=False)
        env = install.grafana_settings(args.out)
        print(
            f"{len([f for f in files if f.content is not None]) + 1} files under {args.out} "
            f"(tokens are not among them: `stack provision` writes those)"
        )
        for p in written + [env]:
            if p.is_file():
                print(f"  {p}")
        return 0
    if action == "install":
        influx.check_64bit()
        files = install.plan(site, pki)
        if args.dry_run:
            for f in files:
                kind = "dir " if f.content is None else "file"
                print(f"{kind} {f.mode:04o} {f.owner}:{f.group} {f.path}")
            return 0
        install.write(files, args.root)
        install.grafana_settings(args.root)
        if site.stack.mqtt_live:
            install.install_mqtt_plugin()
        if not args.no_restart:
            install.restart(("influxdb",))
        influx.provision(site, influx.EnvFiles.under(args.root))
        if not args.no_restart:
            install.restart(("telegraf", "grafana-server"))
        print("stack installed; check it with `sudo gridtwin stack doctor`")
        return 0
    if action == "provision":
        summary = influx.provision(site, influx.EnvFiles.under(args.root), url=args.url)
        done = ", ".join(summary["created"]) or "nothing to change"
        print(
            f"InfluxDB {summary['url']}: org {summary['org']}, bucket {summary['bucket']}: {done}"
        )
        return 0
    if action == "doctor":
        host = port = None
        if args.broker:
            host, _, p = args.broker.rpartition(":")
            if not host or not p.isdigit():
                raise UsageError(f"--broker {args.broker!r} is not HOST:PORT")
            port = int(p)
        checks = doctor.run_checks(
            site,
            pki,
            root=Path(args.root),
            services=not args.no_services,
            data_path=not args.no_data_path,
            timeout=args.timeout,
            broker_host=host,
            broker_port=port,
        )
        for c in checks:
            print(
                f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}"
                + (f"\n     fix: {c.fix}" if c.fix and not c.ok else "")
            )
        bad = [c for c in checks if not c.ok]
        print(f"{len(checks) - len(bad)}/{len(checks)} checks pass")
        return 1 if bad else 0
    raise UsageError(f"unknown action {action}")
