"""The running node: cadence, memory over a long run, sensor faults, the watchdog, crash boots."""

import textwrap

LM75 = {"bus": 0, "model": "lm75", "addr": 0x48}


def test_cadence_holds_for_10000_cycles_within_96k(
    vboard, node_config, firmware_build, record_property
):
    # Each read holds the bus for 37 ms of board time: a sampler that slept `interval` after each
    # read would drift by 370 s over this run. Runs the compiled build, as a board does.
    mpy_dir, _sizes = firmware_build
    world = {
        "clock": {"mode": "warp", "stop_at_ms": 10_000_500},
        "i2c": [dict(LM75, temp_c=[[0, 15.0], [10_000_000, 35.0]], busy_ms=37)],
    }
    # a 64-reading RAM queue (the default is 16, what the host renders): the heap still holds
    b = vboard(config=node_config(trace=True, queue=64), world=world, heap="96k", firmware=mpy_dir)
    assert b.run(timeout=240) == 0
    ticks = [int(m[1]) for m in b.grep(r"^T \d+ (\d+) ")]
    assert len(ticks) == 10_001
    start = ticks[0]
    worst = max(abs(((t - start) & 0x3FFFFFFF) - 1000 * k) for k, t in enumerate(ticks))
    assert worst <= 1, f"sample times drifted by up to {worst} ms"
    # the readings follow the world's temperature ramp, in the LM75's 0.125 degC steps
    last = b.grep(r"^T 10001 \d+ \{'t_amb': ([-\d.]+)\}")[0]
    assert abs(float(last[1]) - 35.0) <= 0.125
    assert not b.grep("MemoryError|Traceback")
    summary = b.wait_for(
        r"app: stopped: samples=(\d+) overruns=(\d+) queued=(\d+) dropped=(\d+) heap_min_free=(\d+)"
    )
    assert int(summary[1]) == 10_001 and int(summary[2]) == 0
    # the RAM queue stayed bounded and counted what it had to drop (no transport attached)
    assert int(summary[3]) == 64 and int(summary[4]) == 10_001 - 64
    peak = int(b.wait_for(r"#world stop world_ms=\d+ peak_alloc=(\d+)")[1])
    record_property("peak_alloc", peak)
    record_property("heap_min_free", int(summary[5]))
    assert peak < 96 * 1024
    print(
        f"\n10,000 cycles with a 96 KB firmware heap: peak live gc.mem_alloc()={peak} B "
        f"(the shim's share taken off), least free heap seen by the node={summary[5]} B"
    )


def test_unplugged_sensor_is_reported_bad_then_recovers(vboard, node_config):
    world = {
        "clock": {"mode": "warp", "stop_at_ms": 40_500},
        "i2c": [
            dict(LM75, temp_c=20.0, unplugged=[[10_000, 20_500]]),
            dict(LM75, addr=0x49, temp_c=30.0),
        ],
    }
    cfg = node_config(
        trace=True,
        sensors=[
            {"id": "t_a", "type": "lm75", "addr": 0x48},
            {"id": "t_b", "type": "lm75", "addr": 0x49},
        ],
    )
    b = vboard(config=cfg, world=world)
    assert b.run() == 0
    rows = {int(m[1]): m[2] for m in b.grep(r"^T (\d+) \d+ (\{.*\})")}
    assert len(rows) == 41  # sampling never stopped
    assert all("'t_b': 30.0" in r for r in rows.values())  # the other sensor carried on
    missing = sorted(seq for seq, r in rows.items() if "t_a" not in r)
    # unplugged from 10 s to 20.5 s: seq 11 (t=10 s) fails, retries back off 1 s, 2 s, 4 s, 8 s
    assert missing[0] == 11 and 21 <= missing[-1] <= 27
    assert all("'t_a': 20.0" in rows[s] for s in range(missing[-1] + 1, 42))
    b.wait_for(r"W \d+ sensor: t_a bad: no answer \(OSError 19\); retry in 1000 ms")
    b.wait_for(r"I \d+ sensor: t_a recovered after \d+ errors")


def test_watchdog_resets_a_hung_sampler_and_crash_boots_end_in_safe_mode(vboard, node_config):
    # From 30 s the chip holds the bus forever: the event loop hangs, nothing feeds the WDT.
    world = {
        "clock": {"mode": "warp", "stop_at_ms": 200_000},
        "i2c": [dict(LM75, temp_c=20.0, hang_from_ms=30_000)],
    }
    b = vboard(config=node_config(wdt_ms=8000, crash_limit=3), world=world)
    assert b.run() == 0
    resets = b.grep(r"#world reset cause=(\d+) world_ms=(\d+)")
    assert [int(m[1]) for m in resets] == [3, 3, 3]  # WDT_RESET each time
    first = int(resets[0][2])
    assert 38_000 <= first <= 38_200  # 8 s after the hang, not later
    boots = [m.group(0) for m in b.grep(r"boot=\d+ reset=\S+ crash_streak=\d+")]
    assert boots == [
        "boot=1 reset=power-on crash_streak=0",
        "boot=2 reset=watchdog crash_streak=1",
        "boot=3 reset=watchdog crash_streak=2",
        "boot=4 reset=watchdog crash_streak=3",
    ]
    msg = b.wait_for(r"SAFE MODE: (.*)")[1]
    assert msg.startswith("crashed 3 boots in a row (last: watchdog reset)")
    assert b.boots == 4  # and it stays there: no fifth boot in the remaining board time


def test_crash_in_a_task_is_logged_counted_and_reset(vboard, node_config):
    # A driver bug (not a sensor fault) kills the sampler: the node logs it, records it as the
    # crash reason and resets at once rather than waiting for the watchdog.
    world = {"clock": {"mode": "warp", "stop_at_ms": 30_000}, "i2c": [dict(LM75, temp_c=20.0)]}
    cfg = node_config(params={"crash_at_seq": 3}, role="sensor", crash_limit=2)
    b = vboard(config=cfg, world=world)
    b.flash.joinpath("gt_crash_hook.py").write_text(
        "import gt.roles.base as b\n"
        "_orig = b.Role.sample\n"
        "def sample(self, m, now):\n"
        "    if self.app.sampler.seq + 1 >= self.params.get('crash_at_seq', 10**9):\n"
        "        raise TypeError('driver bug')\n"
        "    _orig(self, m, now)\n"
        "b.Role.sample = sample\n"
    )
    b.flash.joinpath("boot.py").write_text("import gt_crash_hook\n")
    assert b.run() == 0
    b.wait_for(r"E \d+ sampler: Traceback .*TypeError: driver bug")
    assert [int(m[1]) for m in b.grep(r"#world reset cause=(\d+)")] == [5, 5]
    b.wait_for(r"previous boot crashed: sampler: TypeError\('driver bug',\)")
    assert (
        "crashed 2 boots in a row (last: sampler: TypeError('driver bug',))"
        in b.wait_for("SAFE MODE: (.*)")[1]
    )


def test_a_crash_with_no_ram_left_is_still_logged(vboard):
    # A task that dies because RAM ran out: formatting its traceback needs RAM too. log.exc must
    # not raise in turn (the app's crash count and reset come after it), and still say something.
    b = vboard(world={"clock": {"mode": "warp"}})
    b.flash.joinpath("main.py").write_text(
        textwrap.dedent("""
        import micropython
        from gt.log import log
        try:
            raise ValueError("driver bug")
        except ValueError as e:
            err = e
        micropython.heap_lock()  # from here every allocation fails, as with no RAM left
        log.exc("sampler", err)
        micropython.heap_unlock()
        print("still running")
        """)
    )
    assert b.run(timeout=30) == 0
    b.wait_for(r"^E sampler driver bug$")
    b.wait_for(r"^still running$")


def test_a_reading_that_finds_no_ram_is_retried_or_skipped_never_a_reset(vboard, node_config):
    # Issue #20 / CI: at 96 KB, EL1's sampler met a MemoryError while a TLS handshake held its
    # buffers and the node crash-booted (twice), losing every reading of those boots. Now a slot
    # that finds no RAM collects and tries once more, else is skipped and counted; the sequence has
    # no gap (a reading is queued whole or not at all) and the node never resets for it.
    world = {"clock": {"mode": "warp", "stop_at_ms": 12_500}, "i2c": [dict(LM75, temp_c=20.0)]}
    cfg = node_config(trace=True, crash_limit=2)
    b = vboard(config=cfg, world=world)
    b.flash.joinpath("gt_oom_hook.py").write_text(
        "import gt.roles.base as b\n"
        "_orig = b.Role.sample\n"
        "_tries = {}\n"
        "def sample(self, m, now):\n"
        "    n = self.app.sampler.seq + 1\n"
        "    _tries[n] = _tries.get(n, 0) + 1\n"
        "    if (n == 3 and _tries[n] == 1) or n == 6:\n"
        "        raise MemoryError('memory allocation failed, allocating 160 bytes')\n"
        "    _orig(self, m, now)\n"
        "b.Role.sample = sample\n"
        # and seq 4's packing into the outbox fails once: its retry must still be seq 4
        "import gt.outbox as o\n"
        "_pack = o.pack\n"
        "def pack(boot, seq, ticks, mjson):\n"
        "    _tries[-seq] = _tries.get(-seq, 0) + 1\n"
        "    if seq == 4 and _tries[-seq] == 1:\n"
        "        raise MemoryError('memory allocation failed, allocating 96 bytes')\n"
        "    return _pack(boot, seq, ticks, mjson)\n"
        "o.pack = pack\n"
    )
    b.flash.joinpath("boot.py").write_text("import gt_oom_hook\n")
    assert b.run() == 0
    # the sampler died on seq 6 before: every later slot tried seq 6 again, and crashed again
    seqs = [int(m[1]) for m in b.grep(r"^T (\d+) \d+ ")]
    assert b.boots == 1 and not b.grep(r"#world reset")
    assert len(b.grep(r"W \d+ sampler: slot skipped, out of RAM")) >= 1
    # 13 slots in 12.5 s: seqs 3 and 4 taken at their second try; seq 6 never fits (the hook fails
    # it every time), so every slot from its turn on is skipped and counted, none queued with a gap
    assert seqs == [1, 2, 3, 4, 5]
    summary = b.wait_for(r"app: stopped: samples=(\d+) overruns=(\d+)")
    assert int(summary[1]) == 5 and int(summary[2]) == 13 - 5


def test_main_py_source_does_not_stay_on_the_heap(vboard):
    # The shim read main.py whole and passed the text to exec: the string stayed on the heap for
    # the whole run (main.py's 1.2 KB of every node's budget; a real board's runtime lexes the file
    # in pieces). A main.py padded with 20 KB of comment must leave as much free as a bare one.
    free = []
    for name, pad in (("bare", ""), ("padded", ("# " + "x" * 98 + "\n") * 200)):
        b = vboard(name=name, world={"clock": {"mode": "warp"}})
        b.flash.joinpath("main.py").write_text(
            pad + "import gc\ngc.collect()\nprint('free', gc.mem_free())\n"
        )
        assert b.run(timeout=30) == 0
        free.append(int(b.wait_for(r"^free (\d+)$")[1]))
    assert abs(free[0] - free[1]) <= 512, free
