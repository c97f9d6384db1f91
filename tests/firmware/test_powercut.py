"""A power cut during an outage loses at most one reading (issue #19, item 3).

Real MicroPython node, real Mosquitto. The board is killed with SIGKILL (the power goes: no Ctrl-C,
no `finally`, nothing flushed) at seeded random moments while its link is down, and boots again on
the same flash, 20 times. The first boot is connected when the outage starts: the broker freezes, so
the reading sampled next is in flight (sent, never acknowledged) when the Wi-Fi goes, and then the
broker dies with whatever it had buffered (a broker outage). A last boot with the link up replays
what the flash kept; for every cut, the readings the board had taken (its trace lines, printed once
push() returned: in an outage, once the reading is on flash) are compared with what arrived. At
most one may be lost per cut, and only one whose append the cut tore (the next boot says so).

The clock warps through the outages (no socket open), so each boot takes well under a second.
Each boot's wall clock starts SPAN_S later than the one before, so a reading's `ts` names the boot
that took it even when a cut lost all of that boot's readings.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time

from fixtures.broker import wait_until
from fixtures.netnode import LM75, crashed, telemetry
from gridtwin.vboard import VirtualBoard

SEED = 1903
CUTS = 20
WIFI = {"ssid": "lab", "psk": "secret"}
T0 = 1_764_000_000  # Unix s on the RTC at the first boot
SPAN_S = 10_000  # each boot's RTC starts this much later than the previous one's
FOREVER = 10**12


def taken(board) -> set[int]:
    """seq of every reading the board took (trace lines, printed once the outbox has it)."""
    return {int(m[1]) for m in board.grep(r"^T (\d+) ")}


def power_cut(board) -> None:
    """kill -9 of the board's interpreter: the power goes (no Ctrl-C, no `finally`, nothing
    flushed); the runner does not start it again."""
    board._stopping = True
    board._proc.kill()
    board.wait_exit(60)
    board.stop()


def world(k: int, down_from: int = 0) -> dict:
    return {
        "clock": {"mode": "warp", "rtc": T0 + k * SPAN_S, "true": T0 + k * SPAN_S},
        "i2c": [LM75],
        "wlan": {"down": [[down_from, FOREVER]], "connect_ms": 200},
    }


def test_power_cuts_during_an_outage_lose_at_most_one_reading_each(
    net_node, net_build, broker, mqtt_client
):
    rnd = random.Random(SEED)
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "telemetry"))
    # 1 Hz, 16 readings of RAM ring (the site default), a spill big enough for every cut's readings
    first = net_node(
        world=world(0, down_from=3_000),
        wifi=WIFI,
        trace=True,
        spill_kb=256,
        mqtt={"replay_per_s": 1000},
        stable_ms=1000,
    )
    took = []  # per cut: seq of every reading the board took
    boards = []
    for k in range(CUTS):
        b = (
            first
            if k == 0
            else VirtualBoard(first.root, world=world(k), firmware=net_build, heap=first.heap)
        )
        boards.append(b)
        b.start()
        try:
            if k == 0:
                # connected, then the broker freezes: the reading sampled next is sent and never
                # acknowledged, so it is in flight when the Wi-Fi goes at 3 s
                b.wait_for(r"mqtt: connected", timeout=60)
                b.wait_for(r"^T 2 ", timeout=60)
                os.kill(broker.proc.pid, signal.SIGSTOP)
                try:
                    b.wait_for(r"#world link down", timeout=60)
                    b.wait_for(r"W \d+ mqtt: lost", timeout=60)
                finally:
                    broker.proc.kill()  # frozen and killed: what it had buffered is gone
                    broker.proc.wait()
                host.close()
                at = rnd.randrange(8, 40)
            else:
                at = rnd.randrange(3, 40)
            # the cut: after the board took reading `at`, a random moment later (it keeps sampling)
            b.wait_for(r"^T %d " % at, timeout=60)
            time.sleep(rnd.random() * 0.01)
        finally:
            power_cut(b)
        assert not crashed(b), crashed(b)
        took.append(taken(b))

    # the broker is back, then the power with the link: everything the flash kept is replayed
    broker.start()
    before = telemetry(host.messages)  # the first boot's readings before the outage
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "telemetry"))
    last = VirtualBoard(
        first.root,
        world={
            "clock": {"mode": "real", "rtc": T0 + CUTS * SPAN_S, "true": T0 + CUTS * SPAN_S},
            "i2c": [LM75],
        },
        firmware=net_build,
        heap=first.heap,
    )
    boards.append(last)
    last.start()

    def cut_boot(d):
        # the cut (0 .. CUTS-1) whose boot took this reading, by its ts; CUTS: the last boot's own
        return (d["ts"] // 1000 - T0) // SPAN_S

    def replay():
        # (cut, seq) of each reading replayed from flash, in arrival order. Only the new subscriber
        # counts: it sees exactly what the last boot sends (the first boot's readings sent as
        # backlog before the outage are "hist" too, but were never on flash)
        return [
            (cut_boot(d), d["seq"])
            for d in telemetry(host.messages)
            if d.get("hist") and cut_boot(d) < CUTS
        ]

    try:
        m = last.wait_for(r"outbox: (\d+) readings loaded from flash|mqtt: connected", timeout=60)
        kept = int(m[1] or 0)
        # every record on flash is sent once, as "hist": done when that many have arrived
        replayed = wait_until(
            lambda: (lambda r: r if len(r) >= kept else None)(replay()),
            60,
            "the %d readings kept on flash" % kept,
        )
        last.wait_for(r"mqtt: connected", timeout=60)
    finally:
        last.stop()
    assert not crashed(last), crashed(last)

    got = set(replayed) | {(cut_boot(d), d["seq"]) for d in before}
    lost = [sorted(s for s in took[k] if (k, s) not in got) for k in range(CUTS)]
    # records the next boot found torn and cut off (on this host's filesystem a SIGKILL never
    # tears a write, so none; on a board's flash, at most the one being written)
    torn = [len(boards[k + 1].grep(r"outbox: outbox\.\d: torn record")) for k in range(CUTS)]
    print(
        "\npower cuts during an outage (seed %d): readings lost per cut %s, total %d of %d taken; "
        "torn records %d"
        % (SEED, [len(x) for x in lost], sum(map(len, lost)), sum(map(len, took)), sum(torn))
    )
    assert max(len(x) for x in lost) <= 1, "readings lost per cut: %s" % lost
    # each reading was on flash once its trace line was printed: only a torn append loses one
    assert all(len(x) <= t for x, t in zip(lost, torn)), "lost %s, torn %s" % (lost, torn)
    # the backlog came back in order (boot after boot, seq after seq), each reading once
    assert replayed == sorted(set(replayed)), replayed
    # nothing arrived that no boot took (a reading written just before the cut, not yet traced)
    assert all(s in took[k] or s > max(took[k]) for k, s in got)
    assert re.search(r"boot=%d " % (CUTS + 1), "\n".join(last.lines))
