"""`make bench` section "firmware": the node's MQTT client under the real MicroPython unix port,
against the real Mosquitto the host renders (tools/bench.py registers it).

Figures: the TLS + MQTT connect time (TCP, handshake, CONNACK), and a 10,000-message soak over
mutual TLS in a 96 KB firmware heap: free heap after a collection over the first and the last
thousand messages (as the node's birth reports it when asked to rebirth), the live-heap peak, and
whether every reading arrived. Then the replay rate (issue #20): one node's outbox replayed over TLS
at QoS 1 after a 10-minute outage (board time warps through it), with one reading in flight and
with the default window (`mqtt.window`), each the median of RUNS.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

MESSAGES = 10_000
SAMPLE_MS = 50
SPEED = 5  # board time runs 5x real time: 100 readings a second, 10,000 in 100 s
RUNS = 3  # replay runs per window size


def run(args, BenchSite, wait_until):
    import paho.mqtt.client as mqtt

    from gridtwin.micropython import compile_firmware
    from gridtwin.resources import FIRMWARE_DIR
    from gridtwin.vboard import VirtualBoard

    work = Path(tempfile.mkdtemp(prefix="gt-bench-fw-"))
    site = BenchSite(1, work)
    node = site.node_ids[0]
    for identity in (node, "gridtwin-host"):
        if not site.pki.has(identity):
            site.pki.issue(identity)
    host = None
    board = None
    try:
        got, births = {}, []
        cond = threading.Condition()

        def on_message(client, userdata, msg):
            d = json.loads(msg.payload)
            with cond:
                if msg.topic.endswith("/telemetry"):
                    got.setdefault((d["boot"], d["seq"]), d)
                elif msg.topic.endswith("/status") and d.get("state") == "online":
                    births.append(d)
                cond.notify_all()

        host = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gridtwin-host")
        host.tls_set(
            ca_certs=str(site.pki.ca_cert_path),
            certfile=str(site.pki.cert_path("gridtwin-host")),
            keyfile=str(site.pki.key_path("gridtwin-host")),
        )
        host.on_message = on_message
        host.connect("127.0.0.1", site.port)
        host.subscribe(f"{site.root}/{node}/#", qos=1)
        host.loop_start()

        cfg = {
            "v": 1,
            "node": node,
            "site": "bench",
            "root": site.root,
            "role": "sensor",
            "sample_ms": SAMPLE_MS,
            "queue": 16,
            "sensors": [{"id": "t_amb", "type": "lm75", "addr": 0x48}],
            "mqtt": {
                "host": "127.0.0.1",
                "port": site.port,
                "server_hostname": "localhost",
                "keepalive": 60,
                "replay_per_s": 200,
            },
        }
        stop_ms = (MESSAGES + 400) * SAMPLE_MS
        world = {
            "clock": {"mode": "real", "speed": SPEED, "stop_at_ms": stop_ms},
            "i2c": [
                {"bus": 0, "model": "lm75", "addr": 0x48, "temp_c": [[0, 10.0], [stop_ms, 40.0]]}
            ],
        }
        # the compiled build, as deploy puts it on a board (GT_FIRMWARE_SRC: another source folder)
        compile_firmware(work / "mpy", Path(os.environ.get("GT_FIRMWARE_SRC") or FIRMWARE_DIR))
        board = VirtualBoard(
            work / "board", config=cfg, world=world, heap="96k", firmware=work / "mpy"
        )
        board.install_identity(site.pki, node)
        t0 = time.monotonic()
        board.start()
        hs = board.wait_for(
            r"connected in (\d+) ms \(tcp (\d+), tls (\d+), connack (\d+)\)", timeout=60
        )

        def heap_at(n):
            wait_until(lambda: len(got) >= n, 600, f"{n} readings")
            before = len(births)
            host.publish(
                f"{site.root}/{node}/cmd", json.dumps({"id": f"b{n}", "cmd": "rebirth"}), qos=1
            )
            wait_until(lambda: len(births) > before, 60, "a birth")
            return births[-1]["heap"]

        for i in range(16):  # fill the node's ring of remembered command ids first
            host.publish(
                f"{site.root}/{node}/cmd", json.dumps({"id": f"warm{i}", "cmd": "ping"}), qos=1
            )
        points = (
            [300, 600, 1000]
            + list(range(2000, MESSAGES - 1000, 1000))
            + [MESSAGES - 700, MESSAGES - 400, MESSAGES]
        )
        heap = [heap_at(n) for n in points]
        first, last = heap[:3], heap[-3:]
        elapsed = time.monotonic() - t0
        board.wait_exit(timeout=300)
        peak = board.wait_for(r"#world stop world_ms=\d+ peak_alloc=(\d+)", timeout=5)[1]
        errors = [line for line in board.lines if "MemoryError" in line or "Traceback" in line]
        seqs = sorted(s for _, s in got)
        missing = sorted(set(range(1, MESSAGES + 1)) - set(seqs))
        ms = [int(x) for x in hs.groups()]
        return [
            (
                "connect (board ms / speed = real ms)",
                f"{ms[0] / SPEED:.0f} ms",
                f"tcp {ms[1] / SPEED:.0f}, TLS handshake {ms[2] / SPEED:.0f}, CONNACK "
                f"{ms[3] / SPEED:.0f} (ECDSA P-256, mutual)",
            ),
            (
                "soak messages (QoS 1, TLS)",
                f"{len(seqs)}",
                f"{MESSAGES} wanted, {len(missing)} missing,"
                f" {elapsed:.0f} s real at {1000 * SPEED // SAMPLE_MS} msg/s",
            ),
            (
                "free heap, first 1,000 messages",
                " / ".join(map(str, first)) + " B",
                "after gc.collect(), at msgs 300/600/1000",
            ),
            (
                "free heap, last 1,000 messages",
                " / ".join(map(str, last)) + " B",
                f"at msgs {MESSAGES - 700}/{MESSAGES - 400}/{MESSAGES};"
                f" change of the lowest: {min(last) - min(first):+d} B",
            ),
            (
                "free heap along the soak (KB)",
                " ".join(f"{h / 1024:.1f}" for h in heap),
                "at msgs " + ", ".join(map(str, points)),
            ),
            (
                "live-heap peak (firmware, of 96 KB)",
                f"{int(peak)} B",
                "at idle points, after collection",
            ),
            ("MemoryError / Traceback", f"{len(errors)}", "; ".join(errors[:2]) or "none"),
        ] + [replay(site, host, got, cond, work, window, wait_until) for window in (1, 8)]
    finally:
        if board is not None:
            board.stop()
        if host is not None:
            host.loop_stop()
            host.disconnect()
        site.stop()
        shutil.rmtree(work, ignore_errors=True)


def replay(site, host, got, cond, work, window, wait_until):
    """(figure, value, note): the replay rate of one node's outbox after an outage, median of RUNS:
    600 readings wait on flash while the Wi-Fi is down from board second 3 to 603, then go at the
    highest configurable rate (`replay_per_s` 10000) with `window` readings in flight."""
    from gridtwin.vboard import VirtualBoard

    node = site.node_ids[0]
    rates = []
    for run_no in range(RUNS):
        with cond:
            got.clear()
        cfg = {
            "v": 1,
            "node": node,
            "site": "bench",
            "root": site.root,
            "role": "sensor",
            "sample_ms": 1000,
            "queue": 16,
            "wifi": {"ssid": "lab", "psk": "secret"},
            "sensors": [{"id": "t_amb", "type": "lm75", "addr": 0x48}],
            "mqtt": {
                "host": "127.0.0.1",
                "port": site.port,
                "server_hostname": "localhost",
                "keepalive": 10,
                "replay_per_s": 10000,
                "window": window,
            },
        }
        world = {
            "clock": {"mode": "warp"},
            "i2c": [{"bus": 0, "model": "lm75", "addr": 0x48, "temp_c": 21.5}],
            "wlan": {"ssid": "lab", "psk": "secret", "down": [[3_000, 603_000]], "connect_ms": 500},
        }
        arrived = []  # host receive time of each replayed reading of the outage

        def on_message(client, userdata, msg, _t=time.monotonic):
            d = json.loads(msg.payload)
            if msg.topic.endswith("/telemetry") and d.get("hist") and d["seq"] >= 5:
                arrived.append((_t(), d["seq"]))

        host.on_message = on_message
        board = VirtualBoard(
            work / f"replay{window}-{run_no}",
            config=cfg,
            world=world,
            heap="96k",
            firmware=work / "mpy",
        )
        board.install_identity(site.pki, node)
        try:
            board.start()
            wait_until(lambda: len(arrived) >= 598, 120, "the outage's readings replayed")
        finally:
            board.stop()
        seqs = [s for _, s in arrived]
        if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
            raise AssertionError(f"replay out of order or twice (window {window})")
        rates.append((len(arrived) - 1) / (arrived[-1][0] - arrived[0][0]))
    rates.sort()
    return (
        f"replay after an outage, window {window} (msg/s)",
        f"{rates[len(rates) // 2]:,.0f}",
        f"median of {RUNS} ({', '.join(f'{r:,.0f}' for r in rates)}); ~600 readings, QoS 1 over "
        "TLS, in order, each once; target >= 1,000 (issue #20)",
    )
