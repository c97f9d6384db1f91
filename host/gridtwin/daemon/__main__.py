"""``python -m gridtwin.daemon``: the daemon from explicit parts, without a site file.

Used by the tests and `make bench` (which kill -9 it); users run ``gridtwin daemon run``.
"""

import argparse
import json
import sys
from pathlib import Path

from gridtwin.daemon.connection import Endpoint
from gridtwin.daemon.logsetup import setup_logging
from gridtwin.daemon.service import Daemon
from gridtwin.daemon.store_influx import InfluxConfig
from gridtwin.errors import GridTwinError
from gridtwin.sitedefaults import RECEIVE_MAXIMUM


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gridtwin.daemon")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--client-id", default="gridtwin-daemon")
    p.add_argument("--shared-group", default="")
    p.add_argument("--nodes", default=None, help="comma-separated known node ids (default: any)")
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--influx", default=None, help="JSON of InfluxConfig fields")
    p.add_argument("--batch-max", type=int, default=20000)
    p.add_argument("--receive-maximum", type=int, default=RECEIVE_MAXIMUM)
    p.add_argument("--log-format", default="json")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    setup_logging(a.verbose, a.log_format)
    ep = Endpoint(a.host, a.port, Path(a.ca), Path(a.cert), Path(a.key), a.root)
    try:
        d = Daemon(
            endpoint=ep,
            db_path=a.db,
            client_id=a.client_id,
            shared_group=a.shared_group,
            known_nodes=a.nodes.split(",") if a.nodes else None,
            metrics_port=a.metrics_port,
            influx=InfluxConfig(**json.loads(a.influx)) if a.influx else None,
            batch_max=a.batch_max,
            receive_maximum=a.receive_maximum,
        )
        return d.run_forever()
    except GridTwinError as exc:
        print(f"gridtwin daemon: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
