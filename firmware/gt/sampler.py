# The sampler: reads every sensor once per interval and hands the reading to the outbox.
#
# The schedule is kept in ticks_ms: the next sample is due exactly one interval after the previous
# one was due (not after it finished), so the time a read takes never accumulates into drift. When
# a cycle overruns by whole intervals, those slots are skipped and counted instead of bursting.
import asyncio
import gc
import time
from micropython import const

# Free heap under which no reading is taken while a TLS handshake runs (its peak is the node's
# tightest moment for RAM: EL1 ran out in the sampler there at its first boot, issue #20)
_ROOM = const(4096)


class Sampler:
    def __init__(self, app):
        self.app = app
        self.interval = app.cfg["sample_ms"]
        self.trace = app.cfg["trace"]
        self.seq = 0
        self.last = None  # the latest (seq, ticks, metrics): what the OLED's readings page shows
        self.overruns = 0
        self.beat = time.ticks_ms()
        # One dict for every reading: emptied key by key (deleting keeps its table) instead of a
        # new one growing through 8 tables a reading, each a different size; varying sizes are
        # what fragments a small heap. The outbox packs the reading at once; the display and the
        # role only ever look at the latest.
        self.m = {}

    def sample(self, now):
        app = self.app
        m = self.m
        while m:
            m.popitem()
        for s in app.sensors:
            s.read_into(m, now, app.log)
        app.role.sample(m, now)
        rec = (self.seq + 1, now, m)
        app.outbox.push(rec)  # whole or not at all: a MemoryError here leaves no reading behind
        self.seq += 1
        self.last = rec
        if self.trace:
            print("T", self.seq, now, m)
        return rec

    def _take(self, due):
        # RAM too fragmented for this reading at this instant (a TLS handshake's buffers come and
        # go): collect and try once more, else the slot is skipped (counted by the caller). A node
        # that resets here loses far more than one slot.
        for _ in range(2):
            try:
                self.sample(due)
                return True
            except MemoryError:
                gc.collect()
        try:
            self.app.log.warn("sampler", "slot skipped, out of RAM")
        except MemoryError:
            pass  # (counted in overruns all the same)
        return False

    async def run(self):
        due = time.ticks_ms()
        net = self.app.net
        while True:
            if net is not None and net.hs and gc.mem_free() < _ROOM:
                # a handshake's peak left no room for a reading: this slot is skipped and counted
                # (never taken late under an earlier stamp); with room, sampling goes on as ever
                self.overruns += 1
            elif not self._take(due):
                self.overruns += 1
            self.beat = time.ticks_ms()
            due = time.ticks_add(due, self.interval)
            late = time.ticks_diff(self.beat, due)
            if late > 0:
                missed = (late - 1) // self.interval + 1
                self.overruns += missed
                due = time.ticks_add(due, missed * self.interval)
            await asyncio.sleep_ms(time.ticks_diff(due, time.ticks_ms()))
