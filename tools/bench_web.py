"""`make bench` section "web" (issue #18): what the web view costs the daemon.

- page load with 1,000 registered nodes: the fleet document the page fetches first (GET
/api/ui/fleet),
  time to first byte and to the full body, and the whole first load (the page, its assets, the
  fleet); no browser: the figure is the server's part, which grows with the fleet;
- server-sent events fanned out to 20 clients (GET /api/ui/events, one thread each) while 1,000
  readings/s are offered: events per client per second and their delay, and the daemon's durable
  ingest rate and CPU with the 20 clients against the same window without them.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_cost import (
    _paced,
    cpu_s,
)  # tools/bench_cost.py: the paced 1,000 msg/s stream, CPU of a pid

CLIENTS = 20
RATE = 1000
BURST = 100_000  # ~4 s of the daemon at full speed: long enough to rise above the noise


def _nodes_online(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM nodes WHERE state='online'").fetchone()[0]
    finally:
        conn.close()


def _get(port: int, path: str) -> tuple[float, float, int]:
    """(time to first byte, time to full body, body bytes) of one GET on a fresh connection."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        first = resp.read(1)
        ttfb = time.perf_counter() - t0
        body = first + resp.read()
        full = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"GET {path} answered {resp.status}: {body[:200]!r}")
        return ttfb, full, len(body)
    finally:
        conn.close()


class SseClient(threading.Thread):
    """One page's live stream: counts `reading` events and how late each arrives (its `at`
    stamp)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", "/api/ui/events", headers={"Accept": "text/event-stream"})
        self.sock = (
            self.conn.sock
        )  # getresponse() drops it from the connection (the server says close)
        self.resp = self.conn.getresponse()
        self.hello = threading.Event()
        self.counting = False
        self.events, self.delays, self.error = 0, [], None

    def run(self):
        event = None
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                if line.startswith(b"event: "):
                    event = line[7:].strip()
                    if event == b"hello":
                        self.hello.set()
                elif line.startswith(b"data: ") and event == b"reading" and self.counting:
                    self.events += 1
                    self.delays.append(time.time() - json.loads(line[6:])["at"] / 1000)
        except (OSError, ValueError) as exc:
            if self.counting:
                self.error = exc
        finally:
            self.hello.set()
            self.resp.close()  # here, in the reading thread: never under a readline() in progress

    def close(self):
        self.counting = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in readline()
        except OSError:
            pass


def _window(pub, bs, telemetry, daemon, mport, stored, wait_until, seconds: float, start_seq: int):
    """Offer RATE msg/s for `seconds`: (sent, stored/s during the window, s to catch up after, %
    core)."""
    base = stored(mport)
    c0, t0 = cpu_s(daemon.pid), time.monotonic()
    n = _paced(pub, bs, telemetry, RATE, seconds, boot=21, start_seq=start_seq)
    elapsed = time.monotonic() - t0
    done = stored(mport) - base
    t_stop = time.monotonic()
    wait_until(
        lambda: stored(mport) - base >= n,
        60,
        "the paced stream",
        interval=0.02,
    )
    catch_up = time.monotonic() - t_stop
    cpu = (cpu_s(daemon.pid) - c0) / (time.monotonic() - t0) * 100
    return n, done / elapsed, catch_up, cpu


def _burst(pub, bs, telemetry, daemon, mport, stored, wait_until, n: int, start_seq: int):
    """`n` messages as fast as the broker takes them: (durable msg/s, daemon CPU us per message)."""
    base = stored(mport)
    nodes, now = bs.node_ids, int(time.time() * 1000)
    c0, t0 = cpu_s(daemon.pid), time.monotonic()
    for k0 in range(start_seq, start_seq + n, len(nodes)):
        pub.send(
            [
                telemetry(
                    bs.root,
                    nodes[k % len(nodes)],
                    21,
                    k // len(nodes),
                    now + k // len(nodes) * 1000,
                    p_w=k * 0.5,
                    t_c=21.5,
                )
                for k in range(k0, min(k0 + len(nodes), start_seq + n))
            ]
        )
    wait_until(
        lambda: stored(mport) - base >= n,
        120,
        "the burst",
        interval=0.02,
    )
    elapsed = time.monotonic() - t0
    return n / elapsed, (cpu_s(daemon.pid) - c0) / n * 1e6


def run(
    args,
    BenchSite,
    wait_until,
    *,
    start_daemon,
    stop,
    stored,
    free_port,
    RawPublisher,
    telemetry,
    birth,
    **_more,
) -> list:
    figures = []
    seconds = args.web_seconds
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="gridtwin-bench-web-"))
    bs = BenchSite(1000, work)
    daemon, clients = None, []
    try:
        db = work / "gridtwin.db"
        mport = free_port()
        daemon = start_daemon(bs, db, mport)

        # 1. 1,000 births and a reading from each node, then the page's first load
        pub = RawPublisher(bs.dev_port, "bench-web-birth")
        pub.send([birth(bs.root, n) for n in bs.node_ids])
        pub.drain()
        pub.close()
        wait_until(
            lambda: _nodes_online(db) >= len(bs.node_ids), 60, "1,000 births to be registered"
        )
        print(
            f"  site, daemon and 1,000 births ready in {time.monotonic() - t_start:.1f} s",
            file=sys.stderr,
        )
        pub = RawPublisher(bs.dev_port, "bench-web")
        sent = _paced(
            pub, bs, telemetry, RATE, 2, boot=21
        )  # warm-up: every node seen, sessions settled
        wait_until(lambda: stored(mport) >= sent, 60, "the warm-up")

        _get(mport, "/api/ui/fleet")  # first request: imports and caches warm
        runs = [_get(mport, "/api/ui/fleet") for _ in range(10)]
        ttfb = sorted(r[0] for r in runs)
        full = sorted(r[1] for r in runs)
        size = runs[-1][2]
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            for path in ("/ui/", "/ui/app.js", "/ui/app.css", "/api/ui/fleet"):
                _get(mport, path)
            loads.append(time.perf_counter() - t0)
        loads.sort()
        figures.append(
            (
                "fleet API, 1,000 nodes (GET /api/ui/fleet)",
                f"{ttfb[5] * 1000:.0f} ms TTFB, {full[5] * 1000:.0f} ms",
                f"median of 10 (worst {full[-1] * 1000:.0f} ms), {size / 1024:.0f} KiB; first load "
                f"(page, app.js, app.css, fleet) median {loads[2] * 1000:.0f} ms; target < 1 s",
            )
        )

        # 2. durable ingest at RATE msg/s without clients, then with CLIENTS pages on the live
        # stream (and its capacity: a burst as fast as the broker takes it, the figure a slow-down
        # shows in first)
        n, rate0, catch0, cpu0 = _window(
            pub, bs, telemetry, daemon, mport, stored, wait_until, seconds, sent
        )
        sent += n
        burst0, us0 = _burst(pub, bs, telemetry, daemon, mport, stored, wait_until, BURST, sent)
        sent += BURST
        clients = [SseClient(mport) for _ in range(CLIENTS)]
        for c in clients:
            c.start()
        for c in clients:
            if not c.hello.wait(10) or c.error:
                raise RuntimeError(f"an SSE client got no hello: {c.error}")
        for c in clients:
            c.counting = True
        t0 = time.monotonic()
        n, rate1, catch1, cpu1 = _window(
            pub, bs, telemetry, daemon, mport, stored, wait_until, seconds, sent
        )
        span = time.monotonic() - t0
        sent += n
        events = [c.events for c in clients]
        burst1, us1 = _burst(pub, bs, telemetry, daemon, mport, stored, wait_until, BURST, sent)
        sent += BURST
        for c in clients:
            c.close()
        for c in clients:
            c.join(5)
        pub.close()
        print(
            f"  load and fan-out measured, {time.monotonic() - t_start:.1f} s in", file=sys.stderr
        )
        per_client = sorted(e / span for e in events)
        delays = sorted(d for c in clients for d in c.delays)
        p99 = delays[int(0.99 * (len(delays) - 1))] * 1000 if delays else float("nan")
        errors = sum(1 for c in clients if c.error)
        figures.append(
            (
                f"SSE fan-out, {CLIENTS} clients at {RATE:,} readings/s",
                f"{per_client[len(per_client) // 2]:.1f} events/s/client",
                f"min {per_client[0]:.1f}, max {per_client[-1]:.1f} over {span:.1f} s; delay p99 "
                f"{p99:.0f} ms (event stamped -> read by the client); {errors} client errors",
            )
        )
        slowed = (1 - rate1 / rate0) * 100
        figures.append(
            (
                f"durable ingest, {CLIENTS} SSE clients vs none",
                f"{rate1:,.0f} vs {rate0:,.0f} msg/s",
                f"ratio {rate1 / rate0:.3f} (slowed {slowed:.1f} %; target <= 5 %); {seconds:g} s "
                f"at {RATE:,} msg/s offered, backlog gone {catch1:.2f} vs {catch0:.2f} s after",
            )
        )
        figures.append(
            (
                f"burst ingest, {CLIENTS} SSE clients vs none",
                f"{burst1:,.0f} vs {burst0:,.0f} msg/s",
                f"ratio {burst1 / burst0:.3f} (slowed {(1 - burst1 / burst0) * 100:.1f} %); "
                f"{BURST:,} msgs sent at once, daemon {us1:.0f} vs {us0:.0f} us/msg; generator "
                "and clients on the same cores",
            )
        )
        figures.append(
            (
                f"daemon CPU, {CLIENTS} SSE clients vs none",
                f"{cpu1:.1f} vs {cpu0:.1f} % core",
                f"ratio {cpu1 / max(cpu0, 1e-9):.2f}; the clients run on the same cores",
            )
        )
    finally:
        for c in clients:
            c.close()
        if daemon:
            stop(daemon)
        bs.stop()
        shutil.rmtree(work, ignore_errors=True)
    return figures
