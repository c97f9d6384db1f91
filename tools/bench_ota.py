"""`make bench` section "ota" (issue #17): updates over the air on loopback (tools/bench.py
registers it).

- one node (a sensor node, the compiled firmware under the MicroPython unix port in a 96 KB heap,
  mutual TLS to the Mosquitto the host renders): time to transfer and to confirmation, bytes on the
  wire, the release's size, the firmware's heap during the transfer;
- the 12 nodes of the example site (the demo fleet, each in a 96 KB heap): the same, all at once.

Bytes on the wire are what Mosquitto read and wrote on its sockets meanwhile (/proc/<pid>/io:
TLS records and MQTT headers included; both legs, sender -> broker -> node, and the answers), less
what it moved in as long a quiet moment before (the nodes' telemetry). The release is a new VERSION
of the same firmware, compiled as deploy compiles it, and the node's own config.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _io(pid: int) -> int:
    text = Path(f"/proc/{pid}/io").read_text()
    f = dict(line.split(": ") for line in text.splitlines())
    return int(f["rchar"]) + int(f["wchar"])


def _new_firmware(work: Path, version: str) -> dict[str, Path]:
    from gridtwin.micropython import compile_firmware
    from gridtwin.resources import FIRMWARE_DIR

    src = work / "src"
    shutil.copytree(
        Path(os.environ.get("GT_FIRMWARE_SRC") or FIRMWARE_DIR),
        src,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    init = src / "gt" / "__init__.py"
    init.write_text(re.sub(r'VERSION = "[^"]+"', f'VERSION = "{version}"', init.read_text()))
    out = work / "mpy-new"
    compile_firmware(out, src)
    return {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}


def _release(board, files, work: Path, version: str):
    from gridtwin.ota import release_from_files

    cfg = json.loads(board.read_flash("config.json"))
    path = work / f"config-{cfg['node']}.json"
    path.write_text(json.dumps(cfg))
    return release_from_files(cfg["node"], dict(files, **{"config.json": path}), fw_version=version)


def _wire(broker_pid: int, run, quiet_s: float):
    """(run's result, bytes Mosquitto moved for it): the background rate of a quiet moment of the
    same length taken off."""
    b0 = _io(broker_pid)
    t0 = time.monotonic()
    out = run()
    took = time.monotonic() - t0
    b1 = _io(broker_pid)
    time.sleep(min(took, quiet_s))
    b2 = _io(broker_pid)
    background = (b2 - b1) * took / max(min(took, quiet_s), 1e-3)
    return out, max(0, int(b1 - b0 - background)), took


def _one_node(BenchSite, wait_until, work: Path) -> list:
    from gridtwin.micropython import compile_firmware
    from gridtwin.ota import Updater
    from gridtwin.resources import FIRMWARE_DIR
    from gridtwin.vboard import VirtualBoard

    site = BenchSite(1, work)
    node = site.node_ids[0]
    for identity in (node, "gridtwin-ota"):
        if not site.pki.has(identity):
            site.pki.issue(identity)
    board = up = None
    try:
        cfg = {
            "v": 1,
            "node": node,
            "site": "bench",
            "root": site.root,
            "role": "sensor",
            "sample_ms": 1000,
            "queue": 16,
            "sensors": [{"id": "t_amb", "type": "lm75", "addr": 0x48}],
            "mqtt": {"host": "127.0.0.1", "port": site.port, "server_hostname": "localhost"},
        }
        compile_firmware(work / "mpy", Path(os.environ.get("GT_FIRMWARE_SRC") or FIRMWARE_DIR))
        board = VirtualBoard(
            work / "board",
            config=cfg,
            world={
                "clock": {"mode": "real", "speed": 1},
                "i2c": [{"bus": 0, "model": "lm75", "addr": 0x48, "temp_c": 21.5}],
            },
            heap="96k",
            firmware=work / "mpy",
        )
        board.install_identity(site.pki, node)
        board.start()
        board.wait_for(r"mqtt: connected", timeout=60)
        rel = _release(board, _new_firmware(work, "0.9.0"), work, "0.9.0")
        up = Updater.connect(site.pki, "127.0.0.1", site.port, site.root, trial_s=60)
        (res,), wire, _took = _wire(site.proc.pid, lambda: up.update([rel], expire_s=120), 5)
        sw = board.wait_for(r"ota: switched .* free=(\d+) low=(\d+) heap_min_free=", timeout=5)
        peak = board.wait_for(r"#world reset cause=\d+ world_ms=\d+ peak_alloc=(\d+)", timeout=5)
        errors = [ln for ln in board.lines if "MemoryError" in ln or "Traceback" in ln]
        heap = 96 * 1024
        return [
            (
                "one node: transfer, then confirmed",
                f"{res.transfer_s:.2f} s / {res.seconds:.2f} s",
                f"{res.state}; {res.messages} chunks (each what the node's 256 B receive buffer "
                "holds), window 4; reset, trial boot, TLS connect and a reading until the "
                "confirmation",
            ),
            (
                "one node: release size",
                f"{rel.size:,} B",
                f"{len(rel.files)} files (.mpy and config.json) + a {len(rel.manifest):,} B "
                "manifest",
            ),
            (
                "one node: bytes on the wire",
                f"{wire:,} B",
                f"{wire / rel.size:.2f}x the release (Mosquitto's socket bytes, both legs, TLS)",
            ),
            (
                "one node: firmware heap during the transfer",
                f"{heap - int(sw[2]):,} B of {heap:,}",
                f"in use at the transfer's fullest moment, after a collection (free {int(sw[2]):,}"
                f" B; at the switch {int(sw[1]):,} B free); live-heap peak {int(peak[1]):,} B",
            ),
            (
                "one node: MemoryError / Traceback",
                f"{len(errors)}",
                "; ".join(errors[:2]) or "none",
            ),
        ]
    finally:
        if up is not None:
            up.close()
        if board is not None:
            board.stop()
        site.stop()


def _fleet(wait_until, work: Path) -> list:
    from gridtwin import broker as gbroker
    from gridtwin.fleet import VirtualFleet
    from gridtwin.ota import Updater
    from gridtwin.pki import PKI
    from gridtwin.site import example_site_path, load_site

    from bench import free_port

    (work / "site.toml").write_text(example_site_path().read_text())
    site = load_site(work / "site.toml")
    pki = PKI.for_site(site)
    pki.ensure(site)
    brk = gbroker.Mosquitto(site, pki, work / "broker", port=free_port())
    brk.start()
    fleet = up = None
    try:
        # at 96 KB, the issue's budget (the demo's own NODE_HEAP: gridtwin.vboard)
        fleet = VirtualFleet(site, pki, work / "fleet", broker=("127.0.0.1", brk.port), heap="96k")
        fleet.start()
        for n in fleet.nodes.values():
            n.board.wait_for(r"mqtt: connected", timeout=120)
        files = _new_firmware(work, "0.9.0")
        rels = [_release(n.board, files, work, "0.9.0") for n in fleet.nodes.values()]
        up = Updater.connect(pki, "127.0.0.1", brk.port, site.topic_root, trial_s=120)
        results, wire, took = _wire(brk.proc.pid, lambda: up.update(rels, expire_s=300), 5)
        ok = sum(r.ok for r in results)
        size = sum(r.size for r in rels)
        # the least free heap at each node's fullest moment of its transfer (gt/ota.py: begin with
        # the control code in, a file's last chunk, the switch), after a collection
        low = {}
        for n, v in fleet.nodes.items():
            m = v.board.grep(r"ota: switched .* low=(\d+) ")
            if m:
                low[n] = int(m[0][1])
        worst = min(low, key=low.get) if low else None
        errors_seen = [
            f"{name}: {ln}"
            for name, n in fleet.nodes.items()
            for ln in n.board.lines
            if "MemoryError" in ln or "Traceback" in ln
        ]
        errors = len(errors_seen)
        return [
            (
                f"demo fleet ({len(rels)} nodes): all transferred, all confirmed",
                f"{max(r.transfer_s for r in results):.2f} s / {took:.2f} s",
                f"{ok} of {len(rels)} confirmed; concurrently, one session",
            ),
            (
                "demo fleet: releases",
                f"{size:,} B",
                f"{size // len(rels):,} B a node (the same firmware, each node's config)",
            ),
            (
                "demo fleet: firmware heap during the transfer, worst node",
                f"{96 * 1024 - low[worst]:,} B of {96 * 1024:,} ({worst})" if worst else "-",
                f"least free at a transfer's fullest moment: {low[worst]:,} B on {worst}; "
                + ", ".join(f"{n} {b:,}" for n, b in sorted(low.items(), key=lambda x: x[1])[:4])
                if worst
                else "no switch seen",
            ),
            (
                "demo fleet: bytes on the wire",
                f"{wire:,} B",
                f"{wire / size:.2f}x the releases; MemoryError / Traceback on the boards: {errors}"
                + (f" ({errors_seen[0][:120]})" if errors_seen else ""),
            ),
        ]
    finally:
        if up is not None:
            up.close()
        if fleet is not None:
            fleet.stop()
        brk.stop()


def run(args, BenchSite, wait_until):
    figures = []
    for part in (
        lambda w: _one_node(BenchSite, wait_until, w),
        lambda w: _fleet(wait_until, w),
    ):
        work = Path(tempfile.mkdtemp(prefix="gt-bench-ota-"))
        try:
            figures += part(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return figures
