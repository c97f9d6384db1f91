"""`make bench` section "cost" (issue #20): what the daemon costs at the loads users really run.

Each figure comes with its peer measured in the same run, and the ratio:

- latency p99 at 10,000 msg/s offered and the daemon's CPU meanwhile;
- daemon CPU at 1,000 msg/s offered (1,000 nodes at 1 Hz), per message and in % of a core, against
  the daemon's own cost per message when it drains a burst;
- burst ingest (a 100,000-message backlog) against mosquitto_sub draining the same backlog and raw
  SQLite executemany of the same rows;
- idle daemon CPU with 10,000 known nodes;
- bytes per stored reading (6-metric payload, noisy values) against InfluxDB 1.x's TSM files for
  the same points and the raw bytes of the values;
- `gridtwin query NODE METRIC --since 1h` as a whole process against a plain Python script that runs
  the same SQL.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_fleet import cpu_s  # tools/: one reading of /proc/<pid>/stat for every section

ROOT = Path(__file__).resolve().parent.parent


def _six(telemetry, root: str, node: str, boot: int, seq: int, ts: int) -> tuple:
    """The cost rows' message: one node's 6-metric reading (its power rising with seq)."""
    return telemetry(
        root, node, boot, seq, ts, p_w=seq * 0.5, t_c=21.5, v=230.1, i=1.25, pf=0.98, f=50.01
    )


def _paced(pub, bs, telemetry, rate: int, seconds: float, boot: int, start_seq: int = 0) -> int:
    """Offer `rate` msg/s for `seconds`, spread over the nodes (each node once per its interval)."""
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    nodes = bs.node_ids
    now = int(time.time() * 1000)
    start, sent, i = time.monotonic(), 0, 0
    while time.monotonic() - start < seconds:
        delay = start + i * tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        batch = []
        for _ in range(per_tick):
            k = sent + start_seq
            n = nodes[k % len(nodes)]
            seq = k // len(nodes)
            batch.append(_six(telemetry, bs.root, n, boot, seq, now + seq * 1000))
            sent += 1
        pub.send(batch)
        i += 1
    return sent


def _paced_stamped(pub, bs, telemetry, rate: int, seconds: float, boot: int) -> int:
    """`rate` msg/s in 10 ms ticks over the site's nodes in turn (1,000 at 10 Hz for 10,000 msg/s:
    the fleet of the 1,000 msg/s row, faster), each message carrying its send time (m.t0)."""
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    nodes = bs.node_ids
    start, i, sent = time.monotonic(), 0, 0
    while time.monotonic() - start < seconds:
        delay = start + i * tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        batch = []
        for _ in range(per_tick):
            n = nodes[sent % len(nodes)]
            batch.append(telemetry(bs.root, n, boot, sent // len(nodes), int(now * 1000), t0=now))
            sent += 1
        pub.send(batch)
        i += 1
    pub.drain()
    return sent


def _drain_times(proc, port: int, total: int, healthz) -> tuple:
    """A fresh daemon drains a backlog of `total`, its /healthz polled from its first answer (it
    serves it before ingest connects): ((time, CPU s) at the last sample with nothing durable,
    time of the first with everything durable, (time, CPU s) at the first with everything
    stored). A sample's time is the middle of its request. Waiting for /healthz to say subscribed
    first, as until 2026-12-07, left out what the daemon made durable by then (16,548 of 100,000
    in one run) and timed the tail alone."""
    zero = durable_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the bench's daemon exited ({proc.returncode})")
        a = time.monotonic()
        try:
            h = healthz(port)
        except OSError:  # not listening yet
            time.sleep(0.02)
            continue
        t = (a + time.monotonic()) / 2
        if not h["durable"]:
            zero = (t, cpu_s(proc.pid))
        elif zero is None:
            raise RuntimeError("the bench saw no sample before the daemon's first commit")
        if durable_at is None and h["durable"] >= total:
            durable_at = t
        if h["stored"] >= total:
            return zero, durable_at, (t, cpu_s(proc.pid))
        time.sleep(0.02)
    raise RuntimeError(f"the daemon did not store the burst of {total:,} within 300 s")


def _pct(lat: list, skip: int, q: float = 0.99) -> float:
    lat = sorted(lat[skip:])
    return lat[int(q * (len(lat) - 1))] * 1000 if lat else float("nan")


# The 10,000 msg/s load comes from a process of its own: in the bench's process its 10,000
# messages a second and the tail reader's 10,000 lines took turns at one GIL, and each turn the
# reader waited for was counted as the daemon's latency. argv: tools/, port, root, nodes, rate, s
_GENERATOR = """
import sys, types
sys.path.insert(0, sys.argv[1])
from bench import RawPublisher, telemetry
from bench_cost import _paced_stamped
port, root, nodes, rate, seconds = sys.argv[2:7]
pub = RawPublisher(int(port), "bench-latency-10k")
print("ready", flush=True)
sys.stdin.readline()
bs = types.SimpleNamespace(root=root, node_ids=nodes.split(","))
print(_paced_stamped(pub, bs, telemetry, int(rate), float(seconds), boot=11), flush=True)
pub.close()
"""


def _load(bs, rate: int, seconds: float, on_start=lambda: None) -> int:
    """The 10,000 msg/s load from a process of its own (_GENERATOR), each message stamped with its
    send time; `on_start()` runs as it starts sending. Returns the messages sent."""
    # every node of the site: 10 of them (as before 2026-12-07) left the other 990 of the 1,000
    # msg/s rows to go stale mid-window, and the daemon's alerts for them were in the figure
    args = [str(ROOT / "tools"), str(bs.dev_port), bs.root, ",".join(bs.node_ids)]
    gen = subprocess.Popen(
        [sys.executable, "-c", _GENERATOR, *args, str(rate), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if gen.stdout.readline().strip() != "ready":
        raise RuntimeError("the load generator did not start (its error is above)")
    on_start()
    gen.stdin.write("go\n")
    gen.stdin.flush()
    sent = int(gen.stdout.readline())
    gen.wait(30)
    return sent


def broker_floor(bs, rate: int, seconds: float, warmup: float = 2.0) -> tuple:
    """The broker's own delivery latency of the stream daemon_latency offers: a C subscriber on the
    daemon's TLS listener, QoS 1, stamping each message as it formats it (%U) into a file, so no
    reader of ours can hold it back. Run before the daemon first connects (no session of its own
    yet, nothing queued for it), so the broker encrypts the stream once, as it does for the daemon
    in daemon_latency, and each consumer has the machine to itself with the same generator.
    Returns (p99 ms, p50 ms, messages seen)."""
    floor_file = bs.dir / "floor.txt"
    with open(floor_file, "wb") as out:
        floor = subprocess.Popen(
            bs.subscriber("-F", "%U %p"), stdout=out, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(1)  # connected and subscribed (a late start drops warm-up messages only)
            _load(bs, rate, seconds + warmup)
            time.sleep(0.5)
        finally:
            floor.terminate()
            floor.wait(10)
    got = []
    for line in floor_file.read_bytes().splitlines():
        stamp, _sp, payload = line.partition(b" ")
        try:
            got.append(float(stamp) - json.loads(payload)["m"]["t0"])
        except (ValueError, KeyError):
            pass  # a line cut short when mosquitto_sub was stopped
    skip = int(rate * warmup)
    return _pct(got, skip), _pct(got, skip, 0.5), len(got)


def daemon_latency(bs, mport, stored, cpu, rate: int, seconds: float, warmup: float = 2.0):
    """Publish -> committed (the `stored` stamp each tail line carries, taken by the daemon as the
    commit returns: what the broker floor's %U is to mosquitto_sub) and publish -> seen on the
    daemon's tail stream by a reader in this process, the daemon the stream's only consumer.
    Returns (committed p99 ms, committed p50 ms, on-the-tail p99 ms, sent, lines seen, daemon CPU
    in % of a core).

    The tail drops lines for a reader more than 10,000 behind (api.LocalApi: a slow reader never
    slows ingest), as after a stall of a second or more: the daemon then stores the backlog in a
    few large batches. The reader here used to wait for every line and, one run in four on the
    shared VM, sat on a silent stream until its 120 s timeout; now it stops once every message is
    stored and the stream has shown what it will, and the lines it got are counted."""
    import threading
    import urllib.request

    state = json.loads((bs.dir / "daemon.json").read_text())
    req = urllib.request.Request(
        f"http://127.0.0.1:{mport}/tail", headers={"Authorization": f"Bearer {state['token']}"}
    )
    stream = urllib.request.urlopen(req, timeout=120)
    chunks, total = [], int(rate * (seconds + warmup))
    stored0 = stored(mport)

    def reader():
        # as mosquitto_sub -F %U stamps the floor's messages: each read stamped as it returns, the
        # lines parsed after the window (a line is seen when the read holding its end returned)
        lines = 0
        while lines < total:
            data = stream.read1(1 << 16)
            if not data:
                break
            chunks.append((time.time(), data))
            lines += data.count(b"\n")

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    start = []
    sent = _load(bs, rate, seconds + warmup, lambda: start.append((cpu(), time.monotonic())))
    (c0, t0), deadline = start[0], time.monotonic() + 60
    while stored(mport) < stored0 + sent:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # the daemon's CPU from the first message to the last one stored, in % of a core
    core = (cpu() - c0) / (time.monotonic() - t0) * 100
    seen = -1
    while len(chunks) != seen and th.is_alive():  # until the stream has had a second of silence
        seen = len(chunks)
        th.join(1.0)
    stream.close()
    lat, committed, rest = [], [], b""
    for at, data in list(chunks):
        *done, rest = (rest + data).split(b"\n")
        for line in done:
            doc = json.loads(line)
            lat.append(at - doc["m"]["t0"])
            committed.append(doc["stored"] / 1000 - doc["m"]["t0"])  # stamped at the commit, in ms
    skip = int(rate * warmup)
    return (
        _pct(committed, skip),
        _pct(committed, skip, 0.5),
        _pct(lat, skip),
        sent,
        len(lat),
        core,
    )


def cold_batches(work: Path, telemetry, n: int = 6000) -> tuple:
    """The ingest writer's own work (validate, store, its listeners none) on batches of 6-metric
    messages from 1,000 nodes, in this process: CPU per message with the batches back to back, and
    with a sleep between them, as at 1,000 msg/s (batches of LINGER_UNTIL, one each linger, as the
    daemon makes them there). Same code, same rows: the difference is what this machine charges a
    thread that slept (caches and predictors refilled after other work ran), the floor under the
    1,000 msg/s row. `telemetry`: bench.telemetry, the payload every cost row sends.
    Returns (batch size, gap in s, us/msg back to back, us/msg with the gaps)."""
    sys.path.insert(0, str(ROOT / "host"))
    from gridtwin.daemon.ingest import LINGER_S, LINGER_UNTIL, Ingest
    from gridtwin.daemon.store_sqlite import SqliteStore

    batch, gap_s = LINGER_UNTIL, LINGER_S

    class _Bus:  # what Ingest asks of its bus: nothing is acknowledged here
        root, client_id, shared_group, generation, sink = "gridtwin/bench", "bench", "", 1, None

        def ack(self, *_a, **_k):
            pass

    nodes = [f"n{i:04d}" for i in range(1000)]
    now = int(time.time() * 1000)

    def msg(k: int) -> tuple:  # as the bus hands a message to ingest
        node, seq = nodes[k % 1000], k // 1000
        topic, payload = _six(telemetry, _Bus.root, node, 5, seq, now + seq * 1000)
        return (1, k % 65535 + 1, 1, topic.decode(), payload)

    out = []
    store = SqliteStore(work / "cold.db")
    try:
        ingest = Ingest(_Bus(), store, known_nodes=nodes)
        msgs = [msg(k) for k in range(3 * n)]
        for i in range(0, n, batch):  # warm: every node and its index page seen once
            ingest._process(msgs[i : i + batch])
        for k, gap in ((1, 0.0), (2, gap_s)):
            c0 = time.thread_time()
            for i in range(k * n, (k + 1) * n, batch):
                ingest._process(msgs[i : i + batch])
                if gap:
                    time.sleep(gap)
            out.append((time.thread_time() - c0) / n * 1e6)
    finally:
        store.close()
    return (batch, gap_s, *out)


def raw_executemany(work: Path, n: int) -> float:
    """The floor of storing n 6-metric rows in SQLite from Python: one executemany per 20,000 rows
    into a table laid out as the daemon's (its one index, the (node, boot, seq) key), WAL,
    synchronous=NORMAL."""
    db = work / "raw.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(
        "CREATE TABLE r (node TEXT, boot TEXT, seq INTEGER, ts INTEGER, msg TEXT);"
        "CREATE UNIQUE INDEX rk ON r (node, boot, seq);"
    )
    nodes = [f"n{i:04d}" for i in range(1000)]
    m = json.dumps(
        {"p_w": 0.5, "t_c": 21.5, "v": 230.1, "i": 1.25, "pf": 0.98, "f": 50.01},
        separators=(",", ":"),
    )
    rows = [(nodes[k % 1000], "6", k // 1000, 1_700_000_000_000 + k, m) for k in range(n)]
    t0 = time.monotonic()
    for i in range(0, n, 20_000):
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO r VALUES (?,?,?,?,?)", rows[i : i + 20_000])
        conn.execute("COMMIT")
    rate = n / (time.monotonic() - t0)
    conn.close()
    return rate


def run(
    args,
    BenchSite,
    wait_until,
    *,
    start_daemon,
    stop,
    stored,
    healthz,
    free_port,
    RawPublisher,
    telemetry,
    birth,
) -> list:
    figures = []
    work = Path(tempfile.mkdtemp(prefix="gridtwin-bench-cost-"))
    bs = BenchSite(1000, work)
    daemon = None
    try:
        db = work / "gridtwin.db"
        mport = free_port()
        if args.cost_latency:  # before the daemon's first connect: see broker_floor
            floor99, floor50, floor_n = broker_floor(bs, 10_000, 5)
        daemon = start_daemon(bs, db, mport)
        pub = RawPublisher(bs.dev_port, "bench-cost")
        # warm up (sessions, first sight of every node), then 1,000 msg/s for the measured window
        sent = _paced(pub, bs, telemetry, 1000, 3, boot=5)
        wait_until(lambda: stored(mport) >= sent, 60, "the warm-up")
        seconds = args.cost_seconds
        c0, t0 = cpu_s(daemon.pid), time.monotonic()
        n = _paced(pub, bs, telemetry, 1000, seconds, boot=5, start_seq=sent)
        wait_until(
            lambda: stored(mport) >= sent + n,
            60,
            "the paced stream",
        )
        c1, t1 = cpu_s(daemon.pid), time.monotonic()
        steady_us = (c1 - c0) / n * 1e6
        steady_pct = (c1 - c0) / (t1 - t0) * 100
        sent += n

        # latency p99 at 10,000 msg/s (publish -> committed -> seen on the tail stream) and the CPU
        # it takes, against the broker's own delivery latency of the same stream
        if args.cost_latency:
            pid = daemon.pid
            p99, p50, tail99, lat_sent, tail_n, cpu10k = daemon_latency(
                bs, mport, stored, lambda: cpu_s(pid), 10_000, 5
            )
            figures.append(
                (
                    "latency p99 at 10,000 msg/s",
                    f"{p99:.1f} ms, {cpu10k:.0f} % core",
                    f"publish -> committed (acked, on disk), p50 {p50:.1f} ms; on to a reader of "
                    f"the tail stream p99 {tail99:.1f} ms; broker floor, the same stream to "
                    f"mosquitto_sub alone (-F %U, TLS, QoS 1, {floor_n:,} messages, before the "
                    f"daemon's window): p99 {floor99:.1f} ms, p50 {floor50:.1f} ms, ratio "
                    f"{p99 / floor99:.1f}x; {tail_n:,} of {lat_sent:,} on the tail (it drops lines "
                    "for a reader 10,000 behind); load from a process of its own; target <= 25 ms "
                    "under 60 % of a core",
                )
            )

        # its own burst cost: the same daemon drains a backlog queued while it was stopped, and so
        # does mosquitto_sub (a persistent session made now: the broker queues it the same stream)
        stop(daemon)
        sub = bs.subscriber(persistent=True)
        subprocess.run(sub + ["-E"], check=True, stdout=subprocess.DEVNULL, timeout=30)
        burst = 100_000
        now = int(time.time() * 1000)
        per_node = burst // len(bs.node_ids)
        for seq in range(per_node):
            pub.send(
                [_six(telemetry, bs.root, nd, 6, seq, now - 100_000 + seq) for nd in bs.node_ids]
            )
        pub.drain()
        daemon = start_daemon(bs, db, mport, wait=False)
        total = per_node * len(bs.node_ids)
        (t0, c0), t_durable, (t_stored, c_stored) = _drain_times(daemon, mport, total, healthz)
        burst_rate = total / (t_durable - t0)
        stored_rate = total / (t_stored - t0)
        burst_us = (c_stored - c0) / total * 1e6
        t0 = time.monotonic()  # the C client, connect and TLS handshake included
        subprocess.run(sub + ["-C", str(total)], check=True, stdout=subprocess.DEVNULL, timeout=300)
        sub_rate = total / (time.monotonic() - t0)
        cold_batch, cold_gap, warm_us, cold_us = cold_batches(work, telemetry)
        figures.append(
            (
                "daemon CPU at 1,000 msg/s offered",
                f"{steady_us:.0f} us/msg, {steady_pct:.1f} % core",
                f"burst cost {burst_us:.0f} us/msg, ratio {steady_us / burst_us:.1f}x; the "
                f"writer's own work on batches of {cold_batch} in-process: {warm_us:.0f} us/msg "
                f"back to back, {cold_us:.0f} with {cold_gap * 1000:.0f} ms between them (this "
                f"machine's cost of waking cold, {cold_us / warm_us:.1f}x); target <= 50 us/msg, "
                "<= 5 %",
            )
        )
        raw = raw_executemany(work, per_node * len(bs.node_ids))
        figures.append(
            (
                "burst ingest, durable (a backlog of 100,000)",
                f"{burst_rate:,.0f} msg/s",
                f"acked once stored or spilled, from the daemon's first answer (before it "
                f"connects) to the last; mosquitto_sub > /dev/null, same backlog: "
                f"{sub_rate:,.0f} msg/s, ratio {burst_rate / sub_rate:.2f} (target >= 1.0); raw "
                f"SQLite executemany of the same rows (table + its key index): {raw:,.0f} rows/s, "
                f"ratio {burst_rate / raw:.2f} (target >= 0.5)",
            )
        )
        figures.append(
            (
                "burst ingest, stored (queryable)",
                f"{stored_rate:,.0f} msg/s",
                f"the same backlog validated and stored, spilled part included: ratio "
                f"{stored_rate / sub_rate:.2f} of mosquitto_sub, {stored_rate / raw:.2f} of raw "
                "executemany",
            )
        )

        if not args.cost_daemon_only:
            # idle with 10,000 known nodes: nothing arrives, the daemon only keeps its registry
            stop(daemon)
            ids = [f"n{i:05d}" for i in range(10_000)]
            daemon = start_daemon(bs, db, mport, extra=("--nodes", ",".join(ids)))
            time.sleep(3)  # past start-up
            c0, t0 = cpu_s(daemon.pid), time.monotonic()
            time.sleep(args.cost_seconds)
            idle_pct = (cpu_s(daemon.pid) - c0) / (time.monotonic() - t0) * 100
            figures.append(
                (
                    "idle daemon CPU, 10,000 known nodes",
                    f"{idle_pct:.2f} % core",
                    "target <= 0.5 %",
                )
            )
        pub.close()
    finally:
        if daemon:
            stop(daemon)
        bs.stop()
    try:
        if not args.cost_daemon_only:
            figures += _storage_and_query(args, work, free_port, wait_until)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


class _Walks:
    """Six metrics of a node as sensors give them: random walks (seeded, the same every run) at
    each metric's resolution, so the size figure is not flattered by values that repeat."""

    # (start, step's standard deviation, decimals, low, high)
    METRICS = {
        "p_w": (1000.0, 6.0, 1, 0.0, 5000.0),
        "t_c": (21.0, 0.05, 3, -10.0, 90.0),
        "v": (230.0, 0.3, 1, 207.0, 253.0),
        "i": (4.3, 0.03, 2, 0.0, 20.0),
        "pf": (0.97, 0.004, 3, 0.5, 1.0),
        "f": (50.0, 0.008, 3, 49.8, 50.2),
    }

    def __init__(self, nodes: int, seed: int = 20):
        import random

        self.rng = random.Random(seed)
        self.state = [{k: v[0] for k, v in self.METRICS.items()} for _ in range(nodes)]

    def step(self, node: int) -> dict:
        st, gauss, out = self.state[node], self.rng.gauss, {}
        for k, (_start, sd, dec, lo, hi) in self.METRICS.items():
            x = min(hi, max(lo, st[k] + gauss(0.0, sd)))
            st[k] = x
            out[k] = round(x, dec)
        return out


def _influx_bytes(root: Path, points: Path, free_port, wait_until) -> int:
    """Bytes of the TSM files InfluxDB 1.x (the Debian `influxd`) keeps for the line protocol in
    `points` once the cache is written out and its compactions are done. A server of its own on
    free ports, stopped after. `free_port`, `wait_until`: bench.py's."""
    import shutil
    import urllib.request

    influxd = shutil.which("influxd") or "/usr/bin/influxd"
    ports = [free_port(), free_port()]
    root.mkdir(parents=True)
    conf = root / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{ports[1]}"\n'
        f'[meta]\n  dir = "{root}/meta"\n'
        f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n  query-log-enabled = false\n'
        '  cache-snapshot-write-cold-duration = "1s"\n  compact-full-write-cold-duration = "1s"\n'
        f'[http]\n  bind-address = "127.0.0.1:{ports[0]}"\n  log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n"
    )
    url = f"http://127.0.0.1:{ports[0]}"
    with open(root / "influxd.log", "ab") as log:
        proc = subprocess.Popen([influxd, "-config", str(conf)], stdout=log, stderr=log)
    try:

        def post(path: str, body: bytes) -> None:
            urllib.request.urlopen(urllib.request.Request(url + path, data=body), timeout=60).read()

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"influxd exited (see {root}/influxd.log)")
            try:
                return urllib.request.urlopen(url + "/ping", timeout=1).status == 204
            except OSError:
                return False

        wait_until(up, 30, f"influxd to answer (see {root}/influxd.log)")
        post("/query", b"q=CREATE+DATABASE+cost")
        with open(points, "rb") as f:
            while chunk := f.readlines(1 << 20):  # ~1 MB of whole lines a request
                post("/write?db=cost&precision=ns", b"".join(chunk))

        def size() -> tuple:
            # the TSM files only: the series file (sparse) and the emptied WAL come on top
            tsm = list((root / "data").rglob("*.tsm"))
            return sum(f.stat().st_size for f in tsm), len(tsm), sorted(f.name for f in tsm)

        # compacted: the cache written out (a TSM file at least) and no compaction for 10 s (its
        # planner leaves a shard of a few large generations as they are)
        deadline, last, since = time.monotonic() + 300, None, time.monotonic()
        while time.monotonic() < deadline:
            now = size()
            if now != last:
                last, since = now, time.monotonic()
            elif now[1] and time.monotonic() - since >= 10:
                return now[0]
            time.sleep(0.5)
        raise RuntimeError(f"InfluxDB's TSM files still changed after 300 s: {last}")
    finally:
        proc.terminate()
        proc.wait(20)


def _storage_and_query(args, work: Path, free_port, wait_until) -> list:
    sys.path.insert(0, str(ROOT / "host"))
    from gridtwin.daemon import validate
    from gridtwin.daemon.lineprotocol import telemetry_line
    from gridtwin.daemon.store_sqlite import SqliteStore

    figures = []
    db = work / "var" / "gridtwin.db"
    store = SqliteStore(db)
    nodes = [f"n{i:04d}" for i in range(100)]
    n = args.cost_readings
    per_node = n // len(nodes)
    now = int(time.time() * 1000)
    t0 = time.monotonic()
    batch = []
    points = work / "points.lp"  # the same readings in the daemon's line protocol, for InfluxDB
    lp, lp_s = open(points, "w"), 0.0  # (its time is not the store's)
    walk = _Walks(len(nodes))
    for seq in range(per_node):
        ts = now - (per_node - seq) * 1000
        for k, nd in enumerate(nodes):
            doc = {"v": 1, "node": nd, "boot": 7, "seq": seq, "ts": ts, "m": walk.step(k)}
            batch.append(validate.telemetry(nd, json.dumps(doc).encode(), now_ms=now))
        if len(batch) >= 20_000:
            store.write_batch(batch)
            t1 = time.monotonic()
            lp.writelines(telemetry_line(t) + "\n" for t in batch)
            lp_s += time.monotonic() - t1
            batch = []
    if batch:
        store.write_batch(batch)
        lp.writelines(telemetry_line(t) + "\n" for t in batch)
    lp.close()
    write_s = time.monotonic() - t0 - lp_s
    # what the daemon's maintenance thread does every minute: readings older than 5 minutes ->
    # blocks (100,000 a pass: the passes of the next few minutes, back to back)
    t0 = time.monotonic()
    moved = 0
    while step := store.compact(now_ms=now):
        moved += step
    compact_s = time.monotonic() - t0
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    stored = per_node * len(nodes)
    conn = sqlite3.connect(db)
    conn.execute("VACUUM")
    pages = (
        conn.execute("PRAGMA page_count").fetchone()[0]
        * conn.execute("PRAGMA page_size").fetchone()[0]
    )
    conn.close()
    per = pages / stored
    raw = 8 * 6 + 8  # six doubles and a timestamp: the values themselves, uncompressed
    influx = _influx_bytes(work / "influxdb", points, free_port, wait_until) / stored
    points.unlink()
    figures.append(
        (
            "bytes per stored reading (6 metrics)",
            f"{per:.0f} B",
            f"{stored:,} readings written at {stored / write_s:,.0f}/s, the {moved:,} older than 5 "
            f"min compacted at {moved / max(compact_s, 1e-9):,.0f}/s; the bare values are {raw} B "
            f"({per / raw:.1f}x); InfluxDB 1.x, the same points as the daemon writes them "
            f"there, its TSM files once compacted: {influx:.1f} B, ratio "
            f"{per / influx:.2f}; noisy "
            "sensor values (random walks at each metric's resolution); target <= 60 B",
        )
    )

    # query: the CLI as a whole process against a plain script that reads the same rows and blocks
    site = work / "site.toml"
    site.write_text(
        '[site]\nid = "cost"\nvar = "var"\n\n'
        + "".join(f'[[nodes]]\nid = "{nd}"\nrole = "sensor"\n\n' for nd in nodes)
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    cli = [
        sys.executable,
        "-m",
        "gridtwin",
        "--site",
        str(site),
        "query",
        "n0042",
        "p_w",
        "--since",
        "1h",
        "--csv",
    ]
    # every .pyc written first, as pip writes them at install: under PYTHONDONTWRITEBYTECODE a
    # module edited since its last .pyc is compiled again by every run (30 ms more for `query`);
    # not the MicroPython shim's
    compileall = [sys.executable, "-m", "compileall", "-q", "-x", "/virtual/shim/"]
    subprocess.run([*compileall, str(ROOT / "host" / "gridtwin")], check=True)

    plain = work / "plain.py"
    plain.write_text(
        "import sqlite3, sys, time\n"
        "from gridtwin.daemon.blocks import Block\n"
        f"c = sqlite3.connect({str(db)!r})\n"
        "since = int(time.time() * 1000) - 3600_000\n"
        "rows = []\n"
        "for (data,) in c.execute(\"SELECT data FROM blocks WHERE node='n0042' AND ts_hi>=?\", "
        "(since,)):\n    ts, _seq, vs = Block(data).metric('p_w')\n"
        "    rows += [(t, v) for t, v in zip(ts, vs) if t >= since]\n"
        "rows += c.execute(\"SELECT ts, json_extract(msg, '$.p_w') FROM readings WHERE "
        "node='n0042' AND ts>=?\", (since,)).fetchall()\n"
        "rows.sort(key=lambda r: r[0])\n"
        "sys.stdout.write(''.join(f'{t},{v}\\n' for t, v in rows))\n"
    )

    def run_s(cmd) -> float:
        t = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        return time.monotonic() - t

    # the two in turn, 11 rounds, medians: five of one and then five of the other put whatever
    # else the machine did meanwhile on one side only (1.08x to 1.66x in one day's runs)
    rounds = [(run_s(cli), run_s([sys.executable, str(plain)])) for _ in range(11)]
    q = sorted(r[0] for r in rounds)[len(rounds) // 2]
    p = sorted(r[1] for r in rounds)[len(rounds) // 2]
    figures.append(
        (
            "`gridtwin query` --since 1h, whole process",
            f"{q * 1000:.0f} ms",
            f"plain Python script, same rows and blocks: {p * 1000:.0f} ms, ratio {q / p:.2f}; "
            f"{stored:,} readings; target <= 1.5x",
        )
    )
    return figures
