#!/usr/bin/env python3
"""Flash wear of the outbox spill during an outage, measured on a real LittleFS v2 (issue #19, item
3).

The node writes what the firmware's gt/spool.py writes while its link is down: one append of one
record (6-byte header, the reading's 16-byte head, its metrics JSON) per sample interval, each
with its own open/write/close, into two segment files of spill_kb/2 that take turns (a new
segment starts with an 8-byte header). The filesystem is configured as MicroPython's esp32 port
mounts its `vfs` partition (extmod/vfs_lfsx.c: 4 KB blocks, read/prog 32, cache 128, lookahead
32, block_cycles 100) over 2 MB (the generic 4 MB ESP32 layout), with ~200 KB of firmware,
certificates and config already on it. The block device counts erases per block.

Needs littlefs-python (`pip install littlefs-python`; not a GridTwin dependency). Prints erases
per append and the most-worn block after one simulated day, and the days of outage until that
block reaches 100,000 erase cycles (ESP32 SPI NOR flash, per 4 KB sector).
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib

BLOCK = 4096
CYCLES = 100_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval-s", type=float, default=1.0, help="sample interval (default 1 s)")
    ap.add_argument(
        "--hours", type=float, default=24.0, help="outage length simulated (default 24)"
    )
    ap.add_argument(
        "--fs-kb", type=int, default=2048, help="filesystem size (default 2048: ESP32 4 MB)"
    )
    ap.add_argument(
        "--used-kb", type=int, default=200, help="static files already on it (default 200)"
    )
    ap.add_argument("--spill-kb", type=int, default=64, help="the node's spill_kb (default 64)")
    ap.add_argument(
        "--metrics-bytes", type=int, default=48, help="metrics JSON per reading (default 48)"
    )
    a = ap.parse_args()
    try:
        import littlefs
    except ImportError:
        print("flash_wear: needs littlefs-python (pip install littlefs-python)", file=sys.stderr)
        return 2

    class Counting(littlefs.UserContext):
        def __init__(self, size):
            super().__init__(size)
            self.erases = [0] * (size // BLOCK)

        def erase(self, cfg, block):
            self.erases[block] += 1
            return super().erase(cfg, block)

    ctx = Counting(a.fs_kb * 1024)
    fs = littlefs.LittleFS(
        ctx,
        block_size=BLOCK,
        block_count=a.fs_kb // 4,
        read_size=32,
        prog_size=32,
        cache_size=128,
        lookahead_size=32,
        block_cycles=100,
    )
    for i in range(
        a.used_kb // 8
    ):  # the firmware's .mpy files, certificates, config: never rewritten
        with fs.open(f"fw{i}.mpy", "wb") as f:
            f.write(bytes(8192))
    base = list(ctx.erases)

    seg_cap = a.spill_kb * 1024 // 2
    body = bytes(16) + b"x" * a.metrics_bytes
    rec = struct.pack("<HI", len(body), zlib.crc32(body)) + body
    segs = []  # [slot, size] oldest first, as gt/spool.py keeps them
    n = int(a.hours * 3600 / a.interval_s)
    for _ in range(n):
        if not segs or segs[-1][1] + len(rec) > seg_cap:
            slot = segs.pop(0)[0] if len(segs) == 2 else (1 - segs[0][0] if segs else 0)
            with fs.open(f"outbox.{slot}", "wb") as f:
                f.write(b"GTO1" + struct.pack("<I", 1))
            segs.append([slot, 8])
        with fs.open(f"outbox.{segs[-1][0]}", "ab") as f:
            f.write(rec)
        segs[-1][1] += len(rec)

    wear = [e - b for e, b in zip(ctx.erases, base)]
    total, worst = sum(wear), max(wear)
    per_day = 24 / a.hours
    print(
        f"appends: {n} in {a.hours:g} h of outage at one reading per {a.interval_s:g} s "
        f"({n * per_day:,.0f} a day), record {len(rec)} bytes"
    )
    print(
        f"block erases: {total:,} ({total / n:.2f} per append), over {sum(1 for w in wear if w)} "
        f"of {len(wear)} blocks; most-worn block {worst * per_day:,.0f} erases a day"
    )
    print(
        f"days of outage until the most-worn block reaches {CYCLES:,} cycles: "
        f"{CYCLES / (worst * per_day):,.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
