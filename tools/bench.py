#!/usr/bin/env python3
"""`make bench`: performance figures of GridTwin, printed, never asserted (tests assert behaviour).

Sections register themselves in SECTIONS (name -> function(args) -> list of (figure, value, note));
run all of them or `--only NAME[,NAME]`. Other issues add their sections the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

SECTIONS: dict = {}


def section(name: str, help_text: str):
    def register(fn):
        SECTIONS[name] = (fn, help_text)
        return fn

    return register


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


# --- a site, its PKI and its broker (the rendered configuration) ---------------------------------


class BenchSite:
    """A temporary site with N nodes, its PKI, and mosquitto with the config gridtwin renders, plus
    the dev listener (plain, loopback, anonymous, confined to the topic root) for the load
    generators: one client can then publish for a thousand nodes without a thousand TLS sessions."""

    def __init__(self, nodes: int, workdir: Path):
        from gridtwin import broker
        from gridtwin.pki import PKI
        from gridtwin.site import load_site

        self.dir = workdir
        self.node_ids = [f"n{i:04d}" for i in range(nodes)]
        # the site's defaults except the queue, which must hold the whole backlog the bench builds
        text = (
            '[site]\nid = "bench"\n\n[broker]\nmax_queued_messages = 2000000\nmax_queued_bytes = '
            '0\nmax_inflight_messages = 1000\n\n'
        )
        text += "".join(f'[[nodes]]\nid = "{n}"\nrole = "sensor"\n\n' for n in self.node_ids)
        (workdir / "site.toml").write_text(text)
        self.site = load_site(workdir / "site.toml")
        self.pki = PKI.for_site(self.site)
        self.pki.init(self.site)
        self.root = self.site.topic_root
        self.port, self.dev_port = free_port(), free_port()
        user = "root" if os.geteuid() == 0 else None
        files = broker.render(
            self.site,
            self.pki,
            dev=True,
            port=self.port,
            dev_port=self.dev_port,
            data_dir=workdir / "broker",
            listen="127.0.0.1",
            user=user,
            log_dest=f"file {workdir}/mosquitto.log",
        )
        broker.write_files(files, workdir / "broker")
        self.conf = workdir / "broker" / "mosquitto.conf"
        self.proc = subprocess.Popen(
            [broker.mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._listening, 10, "mosquitto")

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.dev_port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def tls_args(self, identity: str) -> list[str]:
        return [
            "--cafile",
            str(self.pki.ca_cert_path),
            "--cert",
            str(self.pki.cert_path(identity)),
            "--key",
            str(self.pki.key_path(identity)),
        ]

    def subscriber(self, *extra: str, persistent: bool = False) -> list[str]:
        """mosquitto_sub on the daemon's TLS listener as telegraf, QoS 1, every node's telemetry:
        the C client the benches measure the broker's delivery with (`persistent`: a session the
        broker queues for while it is away)."""
        return [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            *self.tls_args("telegraf"),
            "-q",
            "1",
            *(("-c",) if persistent else ()),
            "-i",
            "telegraf",
            "-t",
            f"{self.root}/+/telemetry",
            *extra,
        ]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


# --- load generator: raw MQTT 3.1.1 QoS 1 over a plain socket -------------------------------------


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(cid)) + cid
    return b"\x10" + _remaining(len(var)) + var


def _publish_packet(topic: bytes, mid: int, payload: bytes) -> bytes:
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + payload
    return b"\x32" + _remaining(len(body)) + body


class RawPublisher:
    """Pipelines QoS 1 PUBLISH packets (a window of unacked ones) and counts PUBACKs."""

    def __init__(self, port: int, client_id: str, window: int = 20000):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(_connect_packet(client_id))
        ack = self.sock.recv(4)
        if ack[:1] != b"\x20" or ack[3:4] != b"\x00":
            raise RuntimeError(f"broker refused the load generator: {ack!r}")
        self.window, self.sent, self.acked, self._buf = window, 0, 0, b""
        self.mid = 0

    def _read_acks(self, block: bool):
        self.sock.setblocking(block)
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        finally:
            self.sock.setblocking(True)
        if not data:
            raise RuntimeError("broker closed the load generator's connection")
        self._buf += data
        n = len(self._buf) // 4  # PUBACK is 4 bytes: 0x40 0x02 mid
        self.acked += n
        self._buf = self._buf[n * 4 :]

    def send(self, packets: list[tuple[bytes, bytes]]):
        chunk = []
        for topic, payload in packets:
            self.mid = self.mid % 65535 + 1
            chunk.append(_publish_packet(topic, self.mid, payload))
        while self.sent - self.acked > self.window:
            self._read_acks(True)
        self.sock.sendall(b"".join(chunk))
        self.sent += len(chunk)
        self._read_acks(False)

    def drain(self, timeout=120):
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            self._read_acks(True)
        return self.acked == self.sent

    def close(self):
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def telemetry(root: str, node: str, boot: int, seq: int, ts: int, **m) -> tuple[bytes, bytes]:
    m = m or {"p_w": seq * 0.5, "t_c": 21.5}
    return (
        f"{root}/{node}/telemetry".encode(),
        json.dumps(
            {"v": 1, "node": node, "boot": boot, "seq": seq, "ts": ts, "m": m},
            separators=(",", ":"),
        ).encode(),
    )


def birth(root: str, node: str) -> tuple[bytes, bytes]:
    """A node's retained birth (status online), as the firmware sends it."""
    doc = {
        "state": "online",
        "fw": "0.6.0",
        "board": "esp32s3",
        "heap": 80000,
        "rssi": -60,
        "reset": "power_on",
        "boot": 1,
        "uptime": 5,
        "outbox": 0,
        "drops": 0,
    }
    return f"{root}/{node}/status".encode(), json.dumps(doc).encode()


# --- the daemon as a process ----------------------------------------------------------------------


def start_daemon(
    bs: BenchSite, db: Path, metrics_port: int, extra=(), wait: bool = True
) -> subprocess.Popen:
    """`python -m gridtwin.daemon` on the bench site; ``wait``: until /healthz says subscribed."""
    cmd = [
        sys.executable,
        "-m",
        "gridtwin.daemon",
        "--port",
        str(bs.port),
        "--root",
        bs.root,
        "--ca",
        str(bs.pki.ca_cert_path),
        "--cert",
        str(bs.pki.cert_path("gridtwin-host")),
        "--key",
        str(bs.pki.key_path("gridtwin-host")),
        "--db",
        str(db),
        "--metrics-port",
        str(metrics_port),
        "--nodes",
        ",".join(bs.node_ids),
        *extra,
    ]
    log = open(bs.dir / "daemon.log", "ab")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    p = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    if wait:
        wait_until(lambda: _health(metrics_port), 30, "the daemon to subscribe")
    return p


def _health(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False


def healthz(port: int) -> dict:
    """The daemon's /healthz: what the benches poll while they measure. A /metrics scrape renders
    every node's gauges (15 ms of the daemon's CPU with 1,000 nodes): polled every 50 ms it took a
    third of a core from the run it was measuring."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
    except urllib.error.HTTPError as exc:  # 503 while not subscribed: the same JSON
        body = exc.read()
    return json.loads(body)


def stored(port: int) -> int:
    """Readings this daemon stored (queryable)."""
    return healthz(port)["stored"]


def durable(port: int) -> int:
    """Messages this daemon made durable and acked: stored, or spilled to be stored in order."""
    return healthz(port)["durable"]


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(p: subprocess.Popen):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- section: ingest ------------------------------------------------------------------------------


@section(
    "ingest",
    "daemon: durable ingest rate vs mosquitto_sub, latency p50/p99 at 1,000 msg/s, RSS with 1,000 "
    "nodes",
)
def bench_ingest(args) -> list:
    figures = []
    n_msgs, n_nodes = args.messages, 1000
    work = Path(tempfile.mkdtemp(prefix="gridtwin-bench-"))
    t0 = time.monotonic()
    bs = BenchSite(n_nodes, work)
    print(
        f"  site with {n_nodes} nodes, PKI and broker ready in {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
    )
    daemon = None
    try:
        db = work / "gridtwin.db"
        mport = free_port()
        # 1. both consumers create their persistent sessions, then go away: the broker queues the
        # same stream for both, and each then drains it alone (no load generator competing for CPU)
        #
        daemon = start_daemon(bs, db, mport)
        stop(daemon)
        sub = bs.subscriber(persistent=True)
        subprocess.run(sub + ["-E"], check=True, stdout=subprocess.DEVNULL, timeout=30)
        pub = RawPublisher(bs.dev_port, "bench-load")
        now = int(time.time() * 1000)
        per_node = n_msgs // n_nodes
        t0 = time.monotonic()
        for seq in range(per_node):
            pub.send([telemetry(bs.root, n, 1, seq, now - 60_000 + seq) for n in bs.node_ids])
        pub.drain()
        pub.close()
        total = per_node * n_nodes
        print(
            f"  queued {total} messages for both consumers in {time.monotonic() - t0:.1f} s",
            file=sys.stderr,
        )

        # 2. the daemon drains its queue: durable (WAL, synchronous=NORMAL: stored, or spilled as
        # received while it is behind) then acked; and stored, validated, where queries see it
        daemon = start_daemon(bs, db, mport)
        first = wait_until(
            lambda: (lambda s: s if s > 0 else None)(durable(mport)),
            60,
            "the first durable batch",
            interval=0.01,
        )
        t_first, stored_first = time.monotonic(), stored(mport)
        wait_until(
            lambda: durable(mport) >= total,
            600,
            "the daemon to make all durable",
            interval=0.05,
        )
        d_elapsed = time.monotonic() - t_first
        d_rate = (total - first) / d_elapsed
        wait_until(lambda: stored(mport) >= total, 600, "the daemon to store all", interval=0.05)
        q_rate = (total - stored_first) / (time.monotonic() - t_first)
        m = scrape(mport)
        figures.append(
            (
                "durable ingest (daemon, acked)",
                f"{d_rate:,.0f} msg/s",
                f"{total:,} msgs from {n_nodes} nodes, {m.get('gridtwin_spilled_total', 0):.0f} "
                f"of them spilled while it was behind, then stored; all stored (queryable) at "
                f"{q_rate:,.0f} msg/s; {m.get('gridtwin_duplicates_total', 0):.0f} duplicates",
            )
        )
        rss_after_stream = rss_mb(daemon.pid)

        # 3. mosquitto_sub drains the same stream to /dev/null
        t0 = time.monotonic()
        subprocess.run(sub + ["-C", str(total)], check=True, stdout=subprocess.DEVNULL, timeout=600)
        s_rate = total / (time.monotonic() - t0)
        figures.append(
            (
                "mosquitto_sub > /dev/null, same stream",
                f"{s_rate:,.0f} msg/s",
                "C client, QoS 1, TLS",
            )
        )
        figures.append(
            (
                "ratio daemon / mosquitto_sub",
                f"{d_rate / s_rate:.2f}",
                f"durable; stored (queryable) {q_rate / s_rate:.2f}; target >= 1.0 (issue #20)",
            )
        )

        # 3b. live: the load generator offers a fixed rate while the daemon ingests (all three
        #     share the two cores here, so this is a floor; on a Pi the publishers are elsewhere)
        offered, kept, drain_s = live_run(bs, mport, rate=args.live_rate, seconds=args.live_seconds)
        figures.append(
            (
                f"live: offered {offered:,.0f} msg/s for {args.live_seconds:g} s",
                f"{kept:,.0f} msg/s",
                f"stored while the generator ran on the same cores; backlog gone {drain_s:.1f} s "
                "after it stopped",
            )
        )

        # 4. latency at 1,000 msg/s: each message carries its send time; the daemon's tail stream
        #    shows it after commit and ack, so the difference is publish -> durably stored -> seen
        lat = latency_run(bs, mport, rate=1000, seconds=args.latency_seconds)
        lat.sort()
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
        figures.append(
            (
                "end-to-end latency at 1,000 msg/s",
                f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms",
                f"{len(lat)} msgs after 3 s warm-up, publish -> committed -> seen; target p99 < "
                "25 ms",
            )
        )

        # 5. memory with 1,000 nodes registered (each sent telemetry and a birth message)
        pub = RawPublisher(bs.dev_port, "bench-birth")
        pub.send([birth(bs.root, n) for n in bs.node_ids])
        pub.drain()
        pub.close()
        wait_until(lambda: nodes_online(db) >= n_nodes, 60, "1,000 births to be registered")
        figures.append(
            (
                "daemon RSS, 1,000 nodes registered",
                f"{rss_mb(daemon.pid):.0f} MB",
                f"{rss_after_stream:.0f} MB right after the stream; target < 150 MB",
            )
        )
    finally:
        if daemon:
            stop(daemon)
        bs.stop()
        shutil.rmtree(work, ignore_errors=True)
    return figures


def live_run(bs: BenchSite, mport: int, rate: int, seconds: float) -> tuple[float, float, float]:
    pub = RawPublisher(bs.dev_port, "bench-live")
    tick, per_tick = 0.01, max(1, int(rate * 0.01))
    base = stored(mport)
    now = int(time.time() * 1000)
    start = time.monotonic()
    sent, i = 0, 0
    while time.monotonic() - start < seconds:
        due = start + i * tick
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        batch = []
        for _ in range(per_tick):
            n = bs.node_ids[sent % len(bs.node_ids)]
            batch.append(
                telemetry(bs.root, n, 3, sent // len(bs.node_ids), now + sent // len(bs.node_ids))
            )
            sent += 1
        pub.send(batch)
        i += 1
    elapsed = time.monotonic() - start
    stored_then = stored(mport) - base
    pub.drain()
    pub.close()
    t_stop = time.monotonic()
    wait_until(
        lambda: stored(mport) - base >= sent,
        300,
        "the live backlog",
    )
    return sent / elapsed, stored_then / elapsed, time.monotonic() - t_stop


def nodes_online(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM nodes WHERE state='online'").fetchone()[0]
    finally:
        conn.close()


def latency_run(bs: BenchSite, mport: int, rate: int, seconds: float, warmup: float = 3.0) -> list:
    """Publish at `rate` with the send time in each message; the daemon's tail stream shows a
    message after its batch is committed and acked. The first `warmup` seconds are not counted:
    the figure is the steady state at that rate, not the settling after the bursts before it."""
    state = json.loads((bs.dir / "daemon.json").read_text())
    req = urllib.request.Request(
        f"http://127.0.0.1:{mport}/tail", headers={"Authorization": f"Bearer {state['token']}"}
    )
    stream = urllib.request.urlopen(req, timeout=60)
    skip, expected = int(rate * warmup), int(rate * seconds)
    total = skip + expected
    lat, sends = [], []

    def reader():
        seen = 0
        for line in stream:
            msg = json.loads(line)
            seen += 1
            if seen > skip:
                lat.append(time.time() - msg["m"]["t0"])
                sends.append(msg["m"]["t0"])
            if seen >= total:
                break

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    pub = RawPublisher(bs.dev_port, "bench-latency")
    nodes = bs.node_ids[:10]
    start = time.monotonic()
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        n = nodes[i % len(nodes)]
        pub.send(
            [telemetry(bs.root, n, 2, i // len(nodes), int(time.time() * 1000), t0=time.time())]
        )
    pub.drain()
    pub.close()
    th.join(60)
    stream.close()
    if os.environ.get("BENCH_DEBUG") and sends:
        worst = sorted(zip(lat, sends), reverse=True)[:10]
        print(
            "  worst latencies (ms @ s into the measured part):",
            [(round(x * 1000), round(t - sends[0], 2)) for x, t in worst],
            file=sys.stderr,
        )
    return lat


@section(
    "twin",
    "twin engine: time per step for 100, 1,000 and 10,000 components (target: 10,000 under 10 ms)",
)
def bench_twin(args) -> list:
    # Synthetic sites of 100-component blocks (data-centre chains, a PV-hydrogen plant every 10th
    # block, one grid bus): the same validation and engine as a site file (gridtwin.twin.synthetic).
    from gridtwin.twin.engine import Twin
    from gridtwin.twin.synthetic import synthetic_topology

    figures = []
    for n in (100, 1_000, 10_000):
        t0 = time.perf_counter()
        twin = Twin(synthetic_topology(n))
        built = time.perf_counter() - t0
        twin.run_until(5.0)  # warm up past start-up transients
        times = []
        for _ in range(300):
            s = time.perf_counter()
            twin.step()
            times.append(time.perf_counter() - s)
        times.sort()
        mean = sum(times) / len(times)
        note = (
            f"p99 {times[int(0.99 * len(times))] * 1e3:.2f} ms, build {built:.2f} s, "
            f"{0.1 / mean:,.0f}x real time at step 0.1 s"
        )
        figures.append((f"engine step, {n:,} components", f"{mean * 1e3:.2f} ms", note))
    return figures


def kit() -> dict:
    """What the sections in their own files (bench_cost, bench_web) use of this one."""
    return dict(
        start_daemon=start_daemon,
        stop=stop,
        stored=stored,
        healthz=healthz,
        free_port=free_port,
        RawPublisher=RawPublisher,
        telemetry=telemetry,
        birth=birth,
    )


@section(
    "firmware",
    "node firmware (issue #4): MQTT/TLS connect time, 10,000-message soak in a 96 KB heap",
)
def firmware_section(args):
    from bench_firmware import run  # tools/bench_firmware.py

    return run(args, BenchSite, wait_until)


@section(
    "cost",
    "issue #20: daemon CPU at 1,000 msg/s vs its burst cost, idle CPU with 10,000 nodes, bytes per "
    "reading, `gridtwin query` vs a plain script",
)
def cost_section(args):
    from bench_cost import run  # tools/bench_cost.py

    return run(args, BenchSite, wait_until, **kit())


@section(
    "web",
    "issue #18: web view page load with 1,000 nodes, SSE fan-out to 20 clients at 1,000 readings/s "
    "vs durable ingest without them",
)
def web_section(args):
    from bench_web import run  # tools/bench_web.py

    return run(args, BenchSite, wait_until, **kit())


@section(
    "analytics",
    "issue #15: detectors against faults the twin injects (precision, recall, delay, false alerts "
    "per node-day), predicted-crossing error, readings/s analysed, durable ingest with analytics "
    "off and on, 1,000 nodes' IsolationForest models (memory, scoring rate)",
)
def analytics_section(args):
    from bench_analytics import run  # tools/bench_analytics.py

    return run(args)


@section(
    "opcua",
    "issue #16: points/s collected from 1,000 OPC UA variables at 1 and 10 Hz, CPU, RSS, latency "
    "(target: 10,000 points/s under half of this machine)",
)
def opcua_section(args):
    from gridtwin.opcua.bench import run

    figures = []
    for hz in (1.0, 10.0):
        r = run(1000, hz, 10.0)
        figures.append(
            (
                f"OPC UA, 1,000 variables at {hz:g} Hz",
                f"{r['points_per_s']:,.0f} points/s",
                f"{r['points']} of {r['written']} stored; collector {r['collector_cpu_pct']:.0f} % "
                f"of a core, server {r['server_cpu_pct']:.0f} %, RSS {r['rss_mb']:.0f} MB; write "
                f"-> stored row p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms",
            )
        )
    return figures


@section(
    "ota",
    "issue #17: updates over the air on loopback: time and bytes on the wire for one node and the "
    "12-node demo fleet, release size, the firmware's heap during the transfer (96 KB)",
)
def ota_section(args):
    from bench_ota import run  # tools/bench_ota.py

    return run(args, BenchSite, wait_until)


@section("fleet", "virtual nodes (issue #7): CPU and memory of 50 nodes at 1 Hz on this machine")
def fleet_section(args):
    from bench_fleet import run  # tools/bench_fleet.py

    return run(args, BenchSite, wait_until)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--messages", type=int, default=300_000, help="ingest: size of the stream")
    ap.add_argument(
        "--latency-seconds", type=float, default=10, help="ingest: length of the 1,000 msg/s run"
    )
    ap.add_argument(
        "--live-rate", type=int, default=30000, help="ingest: rate offered in the live run"
    )
    ap.add_argument("--live-seconds", type=float, default=10, help="ingest: length of the live run")
    ap.add_argument("--fleet-nodes", type=int, default=50, help="fleet: how many virtual nodes")
    ap.add_argument(
        "--cost-seconds", type=float, default=10, help="cost: length of each measured window"
    )
    ap.add_argument(
        "--no-cost-latency",
        dest="cost_latency",
        action="store_false",
        help="cost: skip the 10,000 msg/s latency run",
    )
    ap.add_argument(
        "--cost-daemon-only",
        action="store_true",
        help="cost: only the daemon's rows (CPU at 1,000 msg/s, latency at 10,000, burst)",
    )
    ap.add_argument(
        "--cost-readings",
        type=int,
        default=1_000_000,
        help="cost: readings stored for the size and query figures",
    )
    ap.add_argument(
        "--web-seconds", type=float, default=10, help="web: length of each measured ingest window"
    )
    ap.add_argument(
        "--analytics-seed",
        type=int,
        default=2,
        help="analytics: the twin's seed (1 is the one the "
        "detectors were tuned on: report another)",
    )
    ap.add_argument(
        "--analytics-days",
        type=int,
        default=3,
        help="analytics: simulated days (the first is clean)",
    )
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    # figures depend on what else runs: the load average says how quiet the machine was
    print(
        f"GridTwin bench on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, load "
        f"average {load}"
    )
    for name in names:
        fn, help_text = SECTIONS[name]
        print(f"\n[{name}] {help_text}", flush=True)
        for figure, value, note in fn(args):
            print(f"  {figure:<45} {value:>24}   {note}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
