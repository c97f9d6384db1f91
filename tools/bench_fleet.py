"""`make bench` section "fleet": what a virtual node costs (tools/bench.py registers it).

N virtual nodes (default 50: issue #7's target) run the compiled firmware at 1 Hz with an LM75
each, over mutual TLS to the Mosquitto gridtwin renders. Figures: time until all are connected, the
CPU they use together (share of the whole machine, from /proc utime+stime over a measured window),
resident memory per node, and the telemetry rate the broker delivered to a host subscriber.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

WINDOW_S = 30.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(args, BenchSite, wait_until):
    import paho.mqtt.client as mqtt

    from gridtwin.micropython import compile_firmware
    from gridtwin.vboard import VirtualBoard

    n = args.fleet_nodes
    work = Path(tempfile.mkdtemp(prefix="gt-bench-fleet-"))
    site = BenchSite(n, work)
    boards: list = []
    try:
        for identity in site.node_ids + ["gridtwin-host"]:
            if not site.pki.has(identity):
                site.pki.issue(identity)
        fw = work / "firmware"
        compile_firmware(fw)
        got = {"n": 0}
        host = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gridtwin-host")
        host.tls_set(
            str(site.pki.ca_cert_path),
            str(site.pki.cert_path("gridtwin-host")),
            str(site.pki.key_path("gridtwin-host")),
        )
        host.on_message = lambda c, u, m: got.__setitem__("n", got["n"] + 1)
        host.connect("localhost", site.port)
        host.subscribe(f"{site.root}/+/telemetry", 0)
        host.loop_start()
        t0 = time.monotonic()
        for node in site.node_ids:
            cfg = {
                "node": node,
                "site": "bench",
                "root": site.root,
                "role": "sensor",
                "sample_ms": 1000,
                "queue": 16,
                "sensors": [{"id": "t", "type": "lm75", "addr": 0x48}],
                "mqtt": {"host": "127.0.0.1", "port": site.port, "server_hostname": "localhost"},
            }
            world = {
                "clock": {"mode": "real", "rtc": None, "true": int(time.time())},
                "i2c": [{"bus": 0, "model": "lm75", "addr": 0x48, "temp_c": 24.0}],
            }
            b = VirtualBoard(work / node, config=cfg, world=world, firmware=fw)
            b.install_identity(site.pki, node)
            boards.append(b.start())
        for b in boards:
            b.wait_for(r"mqtt: connected", timeout=180)
        connected_s = time.monotonic() - t0
        time.sleep(3)  # let the connection burst settle before measuring
        pids = [b._proc.pid for b in boards]
        cpu0, n0, w0 = sum(map(cpu_s, pids)), got["n"], time.monotonic()
        time.sleep(WINDOW_S)
        cpu1, n1, w1 = sum(map(cpu_s, pids)), got["n"], time.monotonic()
        rss = [_rss_mb(p) for p in pids]
        share = (cpu1 - cpu0) / (w1 - w0) / os.cpu_count() * 100
        host.loop_stop()
        host.disconnect()
        return [
            (f"{n} virtual nodes connected (mTLS)", f"{connected_s:.1f} s", "from the first start"),
            (
                f"CPU of {n} nodes at 1 Hz",
                f"{share:.1f} % of the machine",
                f"{os.cpu_count()} cores; target < 50 %; "
                f"{(cpu1 - cpu0) / (w1 - w0) / n * 1000:.1f} ms CPU/s per node",
            ),
            (
                "memory per virtual node (RSS)",
                f"{sum(rss) / len(rss):.1f} MB",
                "CPython host process + MicroPython heap (96 KB + shim)",
            ),
            (
                "telemetry delivered",
                f"{(n1 - n0) / (w1 - w0):.1f} msg/s",
                f"expected {n:.0f} msg/s",
            ),
        ]
    finally:
        for b in boards:
            b.stop()
        site.stop()
        shutil.rmtree(work, ignore_errors=True)
