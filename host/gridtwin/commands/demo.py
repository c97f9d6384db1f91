"""`gridtwin demo`: the whole system on this machine with virtual nodes (see
gridtwin.demo.runner)."""

from __future__ import annotations

import sys

from gridtwin.site import load_site


def add_arguments(p):
    from gridtwin.cli import port, positive

    p.add_argument(
        "--speed", type=positive(), default=1.0, help="twin and node clocks x real time (default 1)"
    )
    p.add_argument(
        "--duration",
        type=positive(),
        default=180.0,
        help="twin seconds to run (default 180: the scenario)",
    )
    p.add_argument("--port", type=port, default=None, help="broker port (default: the site's)")
    p.add_argument("--nodes", default=None, help="comma-separated node ids (default: every node)")
    p.add_argument("--no-view", action="store_true", help="log lines instead of the live view")


def run(args) -> int:
    from gridtwin import procs
    from gridtwin.daemon.logsetup import setup_logging
    from gridtwin.demo.runner import Demo, shown_path

    site = load_site(args.site)
    view = not args.no_view and sys.stdout.isatty()
    setup_logging(args.verbose, "text")
    if view:  # the live view owns the terminal: log lines go to a file beside the demo's data
        import logging

        log_path = site.var_dir / "demo" / "demo.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("gridtwin").handlers[:] = [handler]
    demo = Demo(
        site, speed=args.speed, port=args.port, nodes=args.nodes.split(",") if args.nodes else None
    )
    print(
        f"gridtwin: starting the demo of site '{site.id}' ({len(demo.node_ids)} virtual nodes) ...",
        file=sys.stderr,
    )
    # Ctrl-C, SIGTERM and SIGHUP (a closed terminal) stop the broker and every board; one line says
    # so
    with procs.stop_on_signals():
        demo.start()  # interrupted while starting: it stops what it started, and the CLI says so
        if demo.web_url:
            print(f"gridtwin: the web view is at {demo.web_url}", file=sys.stderr)
        try:
            demo.run(args.duration, view=view)
        except KeyboardInterrupt:
            pass
        finally:
            counts = demo.run_counts()  # this run's readings, not the database's total
            demo.stop()
    silent = demo.never_online(counts)
    # the demo's data is in its own folder (gridtwin.demo.runner.demo_site), read through its site
    # copy
    here = shown_path(demo.site.path)
    print(
        f"gridtwin: demo stopped at twin t={demo.twin.t:.0f} s; this run stored "
        f"{sum(counts.values())} readings from {len(counts) - len(silent)} of {len(counts)} nodes "
        f"in {shown_path(demo.site.var_dir)}, apart from the site's data; try `gridtwin --site "
        f"{here} query srv_a load_kw --since 10m`",
        file=sys.stderr,
    )
    if silent:
        print(
            f"gridtwin: {len(silent)} node(s) never came online during this run: "
            f"{', '.join(silent)} (see {demo.dir / 'boards'}/<node>/console.log, and `gridtwin "
            "pki list` for refused certificates)",
            file=sys.stderr,
        )
        return 1
    return 0
