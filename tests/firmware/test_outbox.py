"""Store-and-forward: the node never loses a reading it could keep (issue #4).

Real MicroPython node, real Mosquitto, a host subscriber. The world's Wi-Fi link drops (the shim
refuses sockets and cuts open ones); the board clock warps through the outage (no socket is
open then), so ten minutes of board time pass in a moment, deterministically.
"""

import json
import textwrap

from fixtures.broker import wait_until
from fixtures.netnode import LM75, crashed, telemetry

WIFI = {"ssid": "lab", "psk": "secret"}


def dedup(docs):
    """(boot, seq) -> doc, as the host de-duplicates."""
    out = {}
    for d in docs:
        out.setdefault((d["boot"], d["seq"]), d)
    return out


def samples(board):
    """seq -> ticks of every sample the board took (trace lines)."""
    return {int(m[1]): int(m[2]) for m in board.grep(r"^T (\d+) (\d+) ")}


def received(host, broker):
    return telemetry(host.received(broker.topic("pv1", "telemetry")))


def test_link_drop_of_10_minutes_loses_nothing(net_node, broker, mqtt_client):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "telemetry"))
    # 1 Hz; the link is down from 3 s to 603 s of board time: 600 readings are taken meanwhile
    world = {
        "clock": {"mode": "warp"},
        "i2c": [dict(LM75, temp_c=[[0, 10.0], [700_000, 80.0]])],
        "wlan": {"ssid": "lab", "psk": "secret", "down": [[3_000, 603_000]], "connect_ms": 500},
    }
    b = net_node(world=world, wifi=WIFI, trace=True, mqtt={"replay_per_s": 200})
    b.start()
    b.wait_for(r"#world link down", timeout=30)
    b.wait_for(r"mqtt: connected .* conn=2", timeout=60)
    taken = samples(b)
    outage = [s for s, t in taken.items() if 3_000 <= t - taken[1] < 603_000]
    got = wait_until(
        lambda: (lambda g: g if set(outage) <= {s for _, s in g} else None)(
            dedup(received(host, broker))
        ),
        60,
        "the 600 readings of the outage",
    )
    b.stop()
    assert len(outage) == 600
    boot = next(iter(got))[0]
    t1 = got[(boot, 1)]["ts"]
    for s in outage:
        # every reading of the outage arrived, stamped when it was taken, and flagged as replayed
        # (but the one in flight as the link went: it is sent again as it was, with DUP)
        assert got[(boot, s)]["ts"] - t1 == taken[s] - taken[1]
        assert got[(boot, s)].get("hist") is True or s == outage[0]
    # replayed in order, at the rate limit, while live readings went first
    arrivals = received(host, broker)
    hist = [d["seq"] for d in arrivals if d.get("hist")]
    assert hist == sorted(hist) and set(outage[1:]) <= set(hist)
    live = [i for i, d in enumerate(arrivals) if d["seq"] > outage[-1] and not d.get("hist")]
    last_hist = max(i for i, d in enumerate(arrivals) if d.get("hist"))
    assert live and live[0] < last_hist
    # sampling kept its cadence through the outage: one reading a second, none missed
    ticks = [taken[s] for s in sorted(taken)]
    assert sorted(taken) == list(range(1, len(taken) + 1))
    assert all(y - x == 1000 for x, y in zip(ticks, ticks[1:]))
    # and the replayed values are what the chip read then (the temperature ramp)
    assert got[(boot, outage[-1])]["m"]["t_amb"] > got[(boot, outage[0])]["m"]["t_amb"] + 50
    assert not crashed(b)


def test_full_outbox_drops_the_oldest_and_the_birth_counts_them(net_node, broker, mqtt_client):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "#"))
    # RAM for 4 readings and a 1 KB spill (two 512-byte segments): a 120 s outage overflows it
    world = {
        "clock": {"mode": "warp"},
        "i2c": [LM75],
        "wlan": {"down": [[2_000, 122_000]], "connect_ms": 200},
    }
    b = net_node(
        world=world, wifi=WIFI, queue=4, spill_kb=1, trace=True, mqtt={"replay_per_s": 200}
    )
    b.start()
    b.wait_for(r"mqtt: connected .* conn=2", timeout=60)
    status = [
        json.loads(host.wait_for(broker.topic("pv1", "status"), timeout=30).payload)
        for _ in range(3)
    ]
    # birth, the will the broker published when the link went, the birth after it
    assert [d["state"] for d in status] == ["online", "offline", "online"]
    assert status[0]["drops"] == 0 and status[2]["conn"] == 2
    dropped = status[2]["drops"]
    assert dropped > 0
    last = max(samples(b))
    got = wait_until(
        lambda: (lambda g: g if max(s for _, s in g) >= last else None)(
            dedup(received(host, broker))
        ),
        30,
        "the readings up to the reconnect",
    )
    b.stop()
    seqs = sorted(s for _, s in got)
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    # exactly as many readings are missing as the birth counted, and they are the oldest ones
    # of the outage: a run, with every reading after it (replayed) and before it (live) there
    assert len(missing) == dropped
    assert missing == list(range(missing[0], missing[0] + dropped))
    replayed = sorted(s for (_, s), d in got.items() if d.get("hist") and s > missing[-1])
    assert 3 <= missing[0] <= 4 and replayed[0] == missing[-1] + 1


def test_power_cut_mid_spill_write_loses_at_most_that_record(net_node, broker, mqtt_client):
    # Boot 1: no link; 31 readings, each appended to flash as it is taken. Then the power goes
    # while a record is being written: the file ends in half a record.
    world = {
        "clock": {"mode": "warp", "stop_at_ms": 30_500},
        "i2c": [LM75],
        "wlan": {"down": [[0, 10**9]]},
    }
    b = net_node(world=world, wifi=WIFI, queue=4)
    assert b.run(timeout=60) == 0
    data = (b.flash / "outbox.0").read_bytes()
    recs = _records(data)
    assert len(recs) >= 20
    cut = recs[-1][0] + (len(data) - recs[-1][0]) // 2
    seqs = [int.from_bytes(body[4:8], "little") for _, body in recs]
    boot1 = int.from_bytes(recs[0][1][0:4], "little")

    # Boot 2 (the same flash): the link is there; the node repairs the file and replays it.
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "telemetry"))
    b2 = net_node(world={"clock": {"mode": "real"}, "i2c": [LM75]}, wifi=WIFI, queue=4)
    (b2.flash / "outbox.0").write_bytes(data[:cut])
    (b2.flash / "boot.json").write_bytes((b.flash / "boot.json").read_bytes())
    b2.start()
    b2.wait_for(
        r"outbox: outbox.0: torn record after %d good ones; cut there" % (len(recs) - 1), timeout=20
    )
    b2.wait_for(r"outbox: %d readings loaded from flash" % (len(recs) - 1), timeout=5)
    old = wait_until(
        lambda: (lambda o: o if len(o) >= len(recs) - 1 else None)(
            sorted(s for bt, s in dedup(received(host, broker)) if bt == boot1)
        ),
        30,
        "the readings saved before the power cut",
    )
    b2.stop()
    # every record written before the cut arrived; only the torn one is lost
    assert old == seqs[:-1]
    assert not crashed(b2)


def _records(data):
    """(offset, body) of each intact record in a spill segment."""
    import struct
    import zlib

    assert data[:4] == b"GTO1"
    out, o = [], 8
    while o + 6 <= len(data):
        n, crc = struct.unpack_from("<HI", data, o)
        body = data[o + 6 : o + 6 + n]
        if len(body) < n or zlib.crc32(body) != crc:
            break
        out.append((o, body))
        o += 6 + n
    return out


def test_readings_taken_before_the_clock_is_known_get_real_time_stamps(
    net_node, broker, mqtt_client
):
    # No RTC time at boot (reads 2000-01-01) and no link for the first 5 s: the node says it has no
    # time, keeps sampling, and once NTP answers every reading carries real Unix time.
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "telemetry"))
    world = {
        "clock": {"mode": "warp", "rtc": None},
        "i2c": [LM75],
        "wlan": {"down": [[0, 5_000]], "connect_ms": 200},
    }
    b = net_node(world=world, wifi=WIFI, trace=True)
    b.start()
    b.wait_for(r"clock: set by NTP", timeout=30)
    b.wait_for(r"conn=1", timeout=30)
    docs = wait_until(
        lambda: (lambda d: d if len(d) >= 8 else None)(dedup(received(host, broker))),
        30,
        "8 readings",
    )
    b.stop()
    taken = samples(b)
    boot = next(iter(docs))[0]
    first = docs[(boot, 1)]["ts"]
    assert 1_764_000_000_000 <= first < 1_764_000_060_000  # the world's true time, not 2000-01-01
    for s in range(1, 9):
        assert docs[(boot, s)]["ts"] - first == taken[s] - taken[1]
    assert not crashed(b)


def test_a_silent_ntp_server_never_holds_up_sampling(net_node, broker, mqtt_client):
    # The NTP server never answers: the SNTP exchange times out on its own deadline while the
    # sampler keeps its 200 ms cadence, the node says its clock is not set, and it still connects.
    world = {"clock": {"mode": "real", "rtc": None}, "i2c": [LM75], "ntp": {"silent": True}}
    b = net_node(world=world, trace=True, sample_ms=200)
    b.start()
    b.wait_for(r"W \d+ clock: not set \(NTP: ntp: no answer in 1500 ms\)", timeout=30)
    b.wait_for(r"mqtt: connected", timeout=30)
    b.wait_for(r"^T 20 ", timeout=30)
    b.stop()
    taken = samples(b)
    gaps = [taken[s + 1] - taken[s] for s in range(1, 20)]
    assert max(gaps) <= 201 and min(gaps) >= 199, gaps  # no beat missed while NTP was awaited
    assert not crashed(b)


def run_outbox(vboard, code):
    """Run `code` against the firmware's own Outbox on a board's flash (no link, no broker: the
    script plays the transport); `show(label, value)` prints a result; -> {label: value}."""
    prelude = textwrap.dedent("""
        from gt.outbox import Outbox, fields
        from gt.log import Log
        def show(label, value):
            print('=', label, repr(value))
        def reading(s):
            return (s, s * 1000, {"v": s})
        def replay(box):
            out = []
            while True:
                r = box.backlog()
                if r is None:
                    return out
                out.append(fields(r)[1])
                box.done(r)
    """)
    b = vboard(world={"clock": {"mode": "warp"}})
    b.flash.joinpath("main.py").write_text(prelude + textwrap.dedent(code))
    assert b.run(timeout=30) == 0 and not b.grep("Traceback"), "\n".join(b.lines)
    return {m[1]: eval(m[2]) for m in b.grep(r"^= (\S+) (.*)$")}  # noqa: S307 - our own repr() output


def test_readings_in_flight_when_the_link_goes_stay_in_their_place_and_are_sent_again(vboard):
    # The publisher reads ahead (live(i), backlog(i)) for its window of readings in flight; a
    # reading leaves the outbox only when the broker acknowledged it (done()). When the link
    # goes, those in flight stay where they are (on flash, in order) and the next connection
    # sends them again, once each, in seq order; a full spill drops the oldest, counted.
    out = run_outbox(
        vboard,
        """
        box = Outbox(4, 4096, boot=7, log=Log())
        for s in (1, 2, 3):
            box.push(reading(s))  # no link: on flash as it is taken
        show('on_flash_as_taken', box.spill.count)
        box.begin()  # link up: 1-3 are backlog
        r = box.backlog(box.nb); box.nb += 1; box.done(r)  # 1 sent and acknowledged
        box.push(reading(4))
        live = box.live(box.nl); box.nl += 1  # 4 goes first, sent, never acknowledged
        box.end()  # the link goes: 4 to flash, behind 2 and 3
        show('on_flash_at_end', box.spill.count)
        box.begin()
        show('replay', replay(box))
        show('dropped', box.dropped)

        # a window of 4 reads ahead on flash, and retires from its front
        box = Outbox(4, 4096, boot=9, log=Log())
        for s in range(1, 7):
            box.push(reading(s))
        box.begin()
        box.push(reading(7))  # live
        win = []
        for _ in range(4):
            win.append(box.backlog(box.nb)); box.nb += 1
        show('ahead', [fields(r)[1] for r in win])
        show('live_ahead', fields(box.live(box.nl))[1])
        box.done(win.pop(0)); box.done(win.pop(0))
        while box.backlog(box.nb) is not None:
            win.append(box.backlog(box.nb)); box.nb += 1
        show('window', [fields(r)[1] for r in win])
        for r in win:
            box.done(r)
        show('left', (len(box), box.nb, fields(box.live())[1]))

        # a spill of two 100-byte segments (3 of these records each)
        box = Outbox(4, 200, boot=8, log=Log())
        box.begin()
        box.push(reading(1))
        live = box.live(box.nl); box.nl += 1  # in flight when the link goes
        box.end()
        for s in range(2, 8):
            box.push(reading(s))  # 7 overflows the spill: 1-3 go, counted
        show('dropped_full', box.dropped)
        box.begin()
        show('replay_full', replay(box))
    """,
    )
    assert out["on_flash_as_taken"] == 3 and out["on_flash_at_end"] == 3
    assert out["replay"] == [2, 3, 4]  # 4 once more, in its place
    assert out["dropped"] == 0
    assert out["ahead"] == [1, 2, 3, 4] and out["live_ahead"] == 7
    assert out["window"] == [3, 4, 5, 6]
    assert out["left"] == (1, 0, 7)
    assert out["dropped_full"] == 3
    assert out["replay_full"] == [4, 5, 6, 7]
