# The fake world a virtual board lives in, described in data (a JSON file named by GT_WORLD).
#
# A test writes the world; the shim modules (machine, network, time, select, ...) read it. Nothing
# in the firmware is patched. Keys (all optional):
#   clock:  {"mode": "real"|"warp", "speed": 1.0, "rtc": <unix s at boot> | null (RTC not set),
#            "true": <unix s an NTP server tells at boot (default 1764000000)>,
#            "true_real": <unix s of the host's clock at which the true time was "true">,
#            "stop_at_ms": <world ms>}
#           With true_real, the true time runs from the host's wall clock, not from this process's
#           start: true = true + (host now - true_real) x speed, the same instant on every board
#           of a fleet (so the host can tell which twin state a reading's timestamp belongs to).
#           real: virtual time = real time x speed.  warp: time jumps to the next timer whenever the
#           board is idle and no socket is registered, so hours run in seconds, deterministically.
#   board:  {"unique_id": "hex", "mcu_temp_c": 45, "freq": 240000000}
#   wlan:   {"ssid": "...", "psk": "...", "rssi": -60 | schedule, "connect_ms": 1200,
#            "down": [[from_ms, to_ms], ...]}
#   i2c:    [{"bus": 0, "model": "lm75", "addr": 72, ...chip values...,
#             "unplugged": [[from_ms, to_ms]], "hang_from_ms": t, "busy_ms": 2}]
#   onewire:[{"pin": 4, "model": "ds18b20", "rom": "28...", ...}]
#   adc:    {"<pin>": volts | schedule},   pins: {"<pin>": 0/1 | schedule}
#   live:   path of a JSON file whose keys a value can name as {"live": "key"} (fed by the twin)
# A schedule is [[t_ms, value], ...], linearly interpolated and held beyond its ends. World time is
# milliseconds since the world started; it keeps running across resets of the board.
#
# Board state that survives a reset (reset cause, world time, RTC memory) lives in GT_BOARD_STATE.
import json
import os
import sys
import gc
import utime as _rt

RESET_EXIT = 75  # exit status that tells the board runner "the chip reset: start me again"

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


def _load(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return default


world = _load(os.getenv("GT_WORLD") or "world.json", {})
_state_dir = os.getenv("GT_BOARD_STATE") or ".board"
try:
    os.mkdir(_state_dir)
except OSError:
    pass
_state_path = _state_dir + "/state.json"
state = _load(_state_path, {})
reset_cause = state.get("reset_cause", PWRON_RESET)
_world_at_boot = state.get("world_ms", 0)


def save_state(**kw):
    state.update(kw)
    with open(_state_path, "w") as f:
        json.dump(state, f)


def emit(msg):
    # Lines for the test harness; the firmware never prints '#world'.
    print("#world " + msg)


class Clock:
    def __init__(self, spec):
        self.warp = spec.get("mode", "real") == "warp"
        self.speed = float(spec.get("speed", 1))
        self.stop_at = spec.get("stop_at_ms")
        self._t0 = _rt.time_ns()
        # Virtual ticks start where the real ones are: asyncio's C task queue stamps new tasks with
        # the real ticks_ms, and since virtual time only ever runs ahead of real time, such a stamp
        # reads as "due now" instead of as a wait of random length.
        self._ticks0_ms = _rt.ticks_ms()
        self._ticks0_us = _rt.ticks_us()
        self._v_us = 0  # warp mode: virtual microseconds since boot
        self.io_objects = 0  # sockets registered with a poller (set by the select shim)
        self.peak_alloc = 0
        self.base = 0  # heap held by the shim itself (and its ballast), set by settle_heap()
        self._probed = _rt.ticks_ms()
        self.hooks = []  # called with world_ms after time moves (watchdog, stop)
        self.pre_wait = []  # called just before the board waits in select (network services)
        rtc = spec.get("rtc", 1764000000)
        # wall clock: unix seconds at boot, or None while nobody has set the RTC (reads 2000-01-01)
        self.rtc_at_boot = state.get("rtc_at_boot", rtc)
        true = spec.get("true", 1764000000)
        if spec.get("true_real") is not None:
            true += (self._t0 / 1e9 - spec["true_real"]) * self.speed
        self.true_at_boot = state.get("true_at_boot", true)

    def us(self):
        if self.warp:
            return self._v_us
        return int((_rt.time_ns() - self._t0) * self.speed) // 1000

    def ticks_ms(self):
        return _rt.ticks_add(self._ticks0_ms, self.us() // 1000)

    def ticks_us(self):
        return _rt.ticks_add(self._ticks0_us, self.us())

    def world_ms(self):
        return _world_at_boot + self.us() // 1000

    def advance_us(self, us):
        # warp mode: time moves only when the board waits
        if us > 0:
            self._v_us += us
        self.tick()

    def idle(self):
        # The board is about to wait: measure the heap it really holds (after a collection), so
        # peak_alloc is the high-water mark of live memory at rest, not of uncollected garbage.
        # It counts the firmware only: the shim's own share (base) is taken off. In real time a
        # probe at most once a second keeps a fleet of boards cheap (a collection costs CPU).
        if not self.warp:
            now = _rt.ticks_ms()
            if _rt.ticks_diff(now, self._probed) < 1000:
                return
            self._probed = now
        gc.collect()
        a = gc.mem_alloc() - self.base
        if a > self.peak_alloc:
            self.peak_alloc = a

    def tick(self):
        for h in self.hooks:
            h()
        if self.stop_at is not None and self.world_ms() >= self.stop_at:
            self.stop_at = None
            emit("stop world_ms=%d peak_alloc=%d" % (self.world_ms(), self.peak_alloc))
            raise KeyboardInterrupt  # as a Ctrl-C on the REPL; the board runner sees exit 0

    def real_ms(self, virtual_ms):
        # how long to really wait for a virtual duration (never 0 for a positive wait: no spinning)
        if virtual_ms < 0:
            return -1
        if self.speed == 1:
            return virtual_ms
        r = int(virtual_ms / self.speed)
        return r if r or not virtual_ms else 1

    def sleep_ms(self, ms):
        if self.warp:
            self.advance_us(ms * 1000)
        else:
            _rt.sleep_ms(self.real_ms(ms))
            self.tick()

    def wall(self):
        # unix seconds (float) by the board's RTC; 946684800 + uptime when never set
        base = self.rtc_at_boot if self.rtc_at_boot is not None else 946684800
        return base + self.us() / 1000000

    def true_wall(self):
        # the time an NTP server would tell
        return self.true_at_boot + self.world_ms() / 1000 - _world_at_boot / 1000

    def set_rtc(self, unix_s):
        self.rtc_at_boot = unix_s - self.us() / 1000000


clock = Clock(world.get("clock", {}))


def reset(cause):
    # The chip resets: remember why and where world time was, then end this process. The board
    # runner starts it again. SystemExit unwinds like a reset: firmware catches only Exception.
    save_state(
        reset_cause=cause,
        world_ms=clock.world_ms(),
        rtc_at_boot=None if clock.rtc_at_boot is None else clock.wall(),
        true_at_boot=clock.true_wall(),
    )
    emit("reset cause=%d world_ms=%d peak_alloc=%d" % (cause, clock.world_ms(), clock.peak_alloc))
    raise SystemExit(RESET_EXIT)


LIVE_MS = 50  # how often (world ms) the live file is read again: well under any sample interval
_live = {"data": {}, "at": None}


def _live_data():
    # Read again after LIVE_MS of world time (not real time: at 10x speed 100 real ms would be a
    # whole second of the node's). Not by mtime: it counts whole seconds here, and the twin rewrites
    # the file many times a second. The writer replaces the file whole, so a read is never torn.
    path = world.get("live")
    if not path:
        return _live["data"]
    now = clock.world_ms()
    if _live["at"] is None or now - _live["at"] >= LIVE_MS or now < _live["at"]:
        _live["at"] = now
        _live["data"] = _load(path, _live["data"])
    return _live["data"]


def value(v, default=0, t=None):
    """The value of a world quantity now: a number, a schedule or a live key."""
    if v is None:
        return default
    if isinstance(v, (int, float, bool)):
        return v
    if isinstance(v, dict):
        return _live_data().get(v.get("live"), v.get("default", default))
    if t is None:
        t = clock.world_ms()
    prev = None
    for p in v:
        if t < p[0]:
            if prev is None:
                return p[1]
            span = p[0] - prev[0]
            return prev[1] + (p[1] - prev[1]) * (t - prev[0]) / span
        prev = p
    return prev[1] if prev else default


def in_windows(windows, t=None):
    if not windows:
        return False
    if t is None:
        t = clock.world_ms()
    for w in windows:
        if w[0] <= t < w[1]:
            return True
    return False


def link_up():
    """Whether the simulated Wi-Fi link (and so the network behind it) is there right now."""
    return not in_windows(world.get("wlan", {}).get("down"))


_ballast = None


def settle_heap():
    """Give the firmware exactly its budget (GT_FW_HEAP bytes) of the interpreter's heap.

    The interpreter's heap is the firmware's budget plus an allowance for the shim (these modules
    and the chip models, which a real board does not carry). The shim loads itself, then holds
    whatever part of the allowance it did not need as ballast, so the firmware finds the budget
    free, no more: a firmware that outgrows it fails here as it would on the chip.
    """
    global _ballast
    # the shim modules a board always has (imported for their side effects, unused here)
    import machine
    import network
    import select
    import socket
    import time

    # the chips themselves, in the shim's share: the firmware's bus objects only find them
    for spec in world.get("i2c", ()):
        device(spec)
    if world.get("onewire"):
        import onewire  # noqa: F401

        for spec in world["onewire"]:
            device(spec)
    budget = int(os.getenv("GT_FW_HEAP") or 0)
    gc.collect()
    spare = gc.mem_free() - budget
    if budget and spare > 0:
        _ballast = bytearray(spare - 64)  # the block header: what remains free is the budget
    gc.collect()
    clock.base = gc.mem_alloc()
    emit(
        "heap shim=%d firmware_free=%d%s"
        % (
            clock.base - (len(_ballast) if _ballast else 0),
            gc.mem_free(),
            "" if spare >= 0 or not budget else " (shim allowance short by %d)" % -spare,
        )
    )


_devices = {}


def device(spec):
    """The chip model of a world entry, made once: a second bus object on the same wires (or a
    board that builds its I2C twice) talks to the same chip, with the same registers."""
    d = _devices.get(id(spec))
    if d is None:
        d = _devices[id(spec)] = device_model(spec["model"])(spec)
    return d


def device_model(name):
    # fakes/<model>.py defines Device; imported on first use so a board loads only its own chips
    mod = __import__("fakes." + name, None, None, ("Device",))
    return mod.Device
