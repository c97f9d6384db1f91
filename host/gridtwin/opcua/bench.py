"""Collector throughput and latency: ``python -m gridtwin.opcua.bench [--vars 1000] [--hz 1 10]
[--seconds 10]``.

A server in a child process (asyncua, Basic256Sha256 SignAndEncrypt, the site PKI of a temporary
site) publishes N Double variables under the ISA-95 tree, every one of them with a new value R times
a second (the value is the time it was written); the collector in this process subscribes to all of
them and stores every point in SQLite. Printed per rate: points/s stored, the collector's and the
server's CPU (% of one core), the collector's peak RSS, and the latency from the server's write to
the committed row (p50, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITE = '''[site]
id = "bench"

[opcua]
endpoint = "opc.tcp://127.0.0.1:{port}/gridtwin"
sampling_ms = 0
queue_size = 100
'''


async def _serve(site_path: str, n: int, hz: float, seconds: float) -> None:
    from asyncua import Server, ua

    from gridtwin.opcua import certs
    from gridtwin.opcua.server import namespace_uri, security_policies
    from gridtwin.pki import PKI
    from gridtwin.site import load_site

    site = load_site(site_path)
    pki = PKI.for_site(site)
    ident = certs.issue(pki, certs.SERVER, certs.application_uri(site.id, certs.SERVER))
    srv = Server()
    await srv.init()
    srv.set_endpoint(site.opcua.endpoint)
    await srv.set_application_uri(ident.uri)
    srv.set_security_policy(security_policies(site, dev=False))
    await srv.load_certificate(str(ident.cert_der))
    await srv.load_private_key(str(ident.key_pem))
    srv.set_certificate_validator(certs.validator(pki, "client"))
    idx = await srv.register_namespace(namespace_uri(site))
    node = srv.nodes.objects
    path = []
    for level in ("Bench", site.id, "energy", "line1"):
        path.append(level)
        node = await node.add_object(ua.NodeId(".".join(path), idx), ua.QualifiedName(level, idx))
    machines = [
        await node.add_object(
            ua.NodeId(f"Bench.{site.id}.energy.line1.m{k}", idx), ua.QualifiedName(f"m{k}", idx)
        )
        for k in range((n + 99) // 100)
    ]
    nids = []
    for i in range(n):
        v = await machines[i // 100].add_variable(
            ua.NodeId(f"v{i}", idx), ua.QualifiedName(f"v{i}", idx), 0.0, ua.VariantType.Double
        )
        nids.append(v.nodeid)
    await srv.start()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the collector is subscribed
    period = 1.0 / hz
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        k += 1
        now = time.time()
        ts = dt.datetime.now(dt.timezone.utc)
        good = ua.StatusCode(0)
        for nid in nids:
            await srv.write_attribute_value(
                nid,
                ua.DataValue(
                    ua.Variant(now, ua.VariantType.Double),
                    StatusCode=good,
                    SourceTimestamp=ts,
                    ServerTimestamp=ts,
                ),
            )
        await asyncio.sleep(max(0.0, t0 + k * period - time.monotonic()))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {"cpu_s": ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime, "writes": k * n}
        ),
        flush=True,
    )
    await asyncio.to_thread(sys.stdin.readline)
    await srv.stop()


async def _collect(site, store, pki, server: subprocess.Popen, n: int, seconds: float) -> dict:
    from gridtwin.opcua.collector import Collector

    latencies: list[float] = []

    class Timed(Collector):
        async def flush(self) -> int:
            rows = list(self.queue)
            new = await super().flush()
            if new:
                now = time.time()
                latencies.extend(now - r[7] for r in rows if r[7])
            return new

    stop = asyncio.Event()
    col = Timed(site, store, pki, log=lambda m: None)
    task = asyncio.create_task(col.run(stop))
    await asyncio.wait_for(col.connected.wait(), 60)
    while col.stored < n:  # the first value of every item
        col.committed.clear()
        await asyncio.wait_for(col.committed.wait(), 30)
    latencies.clear()
    start_stored = col.stored
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    server.stdin.write("go\n")
    server.stdin.flush()
    line = await asyncio.to_thread(server.stdout.readline)
    elapsed = time.monotonic() - t0
    srv_stats = json.loads(line)
    await asyncio.sleep(0.5)  # the last notifications in flight
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    await task
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {
        "points": col.stored - start_stored,
        "written": srv_stats["writes"],
        "elapsed_s": elapsed,
        "collector_cpu_pct": 100
        * (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
        / elapsed,
        "server_cpu_s": srv_stats["cpu_s"],
        "rss_mb": ru1.ru_maxrss / 1024,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def run(n: int, hz: float, seconds: float) -> dict:
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.pki import PKI
    from gridtwin.site import load_site

    with tempfile.TemporaryDirectory() as d:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        p = Path(d) / "site.toml"
        p.write_text(SITE.format(port=port))
        site = load_site(p)
        pki = PKI.for_site(site)
        pki.ensure(site)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridtwin.opcua.bench",
                "--serve",
                str(p),
                "--vars",
                str(n),
                "--hz",
                str(hz),
                "--seconds",
                str(seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout.readline().strip() == "ready"
            store = SqliteStore(Path(d) / "gt.db")
            try:
                out = asyncio.run(_collect(site, store, pki, server, n, seconds))
            finally:
                store.close()
            server.stdin.write("stop\n")
            server.stdin.flush()
            server.wait(30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    out["server_cpu_pct"] = 100 * out.pop("server_cpu_s") / out["elapsed_s"]
    out["points_per_s"] = out["points"] / out["elapsed_s"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gridtwin.opcua.bench", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--vars", type=int, default=1000)
    ap.add_argument("--hz", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        asyncio.run(_serve(a.serve, a.vars, a.hz[0], a.seconds))
        return 0
    for hz in a.hz:
        r = run(a.vars, hz, a.seconds)
        print(
            f"{a.vars} variables at {hz:g} Hz for {a.seconds:g} s: {r['points_per_s']:.0f} "
            f"points/s stored ({r['points']} of {r['written']} written), collector CPU "
            f"{r['collector_cpu_pct']:.0f} % of a core, server CPU {r['server_cpu_pct']:.0f} %, "
            f"collector RSS {r['rss_mb']:.0f} MB, write -> stored row p50 {r['p50_ms']:.0f} ms, "
            f"p99 {r['p99_ms']:.0f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
