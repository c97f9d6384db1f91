# The outbox: every reading goes here first, and the publisher takes it from here, so a reading
# survives any outage the node itself survives.
#
# A reading is one bytes object, packed once when it is pushed (cheaper than a dict, and what the
# flash file holds): boot (u32), seq (u32), t (i64: Unix ms when the clock was known, else
# -(ticks_ms + 1)), then the metrics as compact JSON.
#
#   RAM ring (`queue` readings) --full--> spill on flash (`spill_kb`) --full--> oldest dropped
#
# Order is kept: the spill holds the oldest readings, the ring the newest. When a connection comes
# up, what is waiting is the backlog (published with "hist": true, rate-limited by the publisher);
# readings pushed after that are live and go first, so live data flows during a long replay.
#
# The publisher (gt/publisher.py) drives it: begin() and end() with the connection, live(i) and
# backlog(i) to read ahead for its window of readings in flight (nl live and nb backlog readings
# handed out, always the oldest of each), done(rec) when the broker acknowledged one. A reading
# leaves only then; a connection that ends hands every reading in flight back (end()).
#
# While there is no connection (up False) nothing waits in RAM: when the link goes, the ring (with
# the reading that was in flight) is written to flash, and from then on each reading is appended
# as it is taken, before push() returns. So whenever the power goes in an outage, every reading
# taken is on flash but the one whose append the cut tears (gt/spoolload.py cuts that off): at
# most one is lost, whatever the timing (writing each reading only when the next is taken loses
# two when the cut tears that write: the one written and the newest, still in RAM). That is one
# small append a sample interval, and only during an outage (docs/firmware.md: flash wear).
# While the link is up, readings wait in the RAM ring; flash is written only when it overflows.
#
# The spill (gt/spool.py) is two append-only segment files on flash; a power cut mid-write loses
# at most the record being written. Its code is loaded only while the spill holds readings.
import json
import struct
from micropython import const
from gt import clock

_HDR = const(16)


def pack(boot, seq, ticks, mjson):
    t = clock.unix_ms(ticks)
    return struct.pack("<IIq", boot, seq, -(ticks + 1) if t is None else t) + mjson


def fields(rec):
    """(boot, seq, t) of a packed reading; t >= 0 is Unix ms, t < 0 is -(ticks + 1)."""
    return struct.unpack_from("<IIq", rec)


def metrics(rec):
    """The metrics of a packed reading, as compact JSON (a view, not a copy)."""
    return memoryview(rec)[_HDR:]


def _same(a, b):
    # the same reading: the same object, or its copy read back from flash (same boot and seq)
    return a is b or (a is not None and a[:8] == b[:8])


def stamp(rec, boot):
    """The reading's Unix ms, or None while it cannot be known yet (clock not set)."""
    b, _s, t = struct.unpack_from("<IIq", rec)
    if t >= 0:
        return t
    if b != boot:
        return -1  # ticks of an earlier boot: can never be dated
    return clock.unix_ms(-t - 1)


class Outbox:
    def __init__(self, capacity, spill_bytes=0, boot=0, log=None):
        self.cap = capacity
        self.boot = boot  # boot id stamped on the sampler's readings
        self._ring = [None] * capacity
        self._head = 0  # oldest
        self._n = 0
        self.mark = 0  # ring readings waiting from before the connection came up (backlog)
        self.up = False  # a connection is up: readings wait in RAM (else they go to flash)
        self.spill = None
        self.spill_bytes = spill_bytes
        self._gone = (
            None  # boot + seq of a reading delivered while its copy waits on flash (done())
        )
        self.log = log
        self._dropped = 0  # dropped and counted (RAM, and spills that were emptied)
        if spill_bytes:
            import os

            for name in ("outbox.0", "outbox.1"):
                try:
                    os.stat(name)
                except OSError:
                    continue
                self._sp()  # readings from before the reset wait on flash
                break
        self.pushed = 0
        self.wake = None  # called on push (wakes the publisher)
        self.nl = self.nb = 0  # live / backlog readings in flight: the oldest of each

    def __len__(self):
        return self._n + (self.spill.count if self.spill else 0)

    @property
    def dropped(self):
        return self._dropped + (self.spill.dropped if self.spill else 0)

    def push(self, rec):
        """Take a reading: a packed record, or the sampler's (seq, ticks, m)."""
        if isinstance(rec, tuple):
            rec = pack(
                self.boot, rec[0], rec[1], json.dumps(rec[2], separators=(",", ":")).encode()
            )
        if self._n == self.cap:
            if not self.mark and self.nl:
                # the oldest live reading, in flight, moves to the backlog's end: done() finds it
                # there when its PUBACK comes (or it is sent again: the host de-duplicates)
                self.nl -= 1
            old = self._pop_head()
            if self.spill_bytes:
                try:
                    self._append(self._dated(old))
                except (OSError, MemoryError):
                    self._dropped += 1
            else:
                self._dropped += 1
        self._ring[(self._head + self._n) % self.cap] = rec
        self._n += 1
        if not self.up and self.spill_bytes:
            # no link: the reading goes to flash now, behind any a failing flash left in RAM
            self.flush()
        self.pushed += 1
        if self.wake is not None:
            self.wake()

    def _sp(self):
        if self.spill is None:
            from gt.spool import Spill

            self.spill = Spill("outbox", self.spill_bytes, self.log)
        return self.spill

    def _append(self, rec):
        sp = self._sp()
        n = sp.count
        sp.append(rec)
        lost = n + 1 - sp.count  # a full spill drops its oldest segment: the backlog's first
        if lost > 0:
            self.nb = max(0, self.nb - lost)

    def _dated(self, rec):
        # going to flash, where ticks mean nothing after a reset: stamp it if the clock is known
        b, s, t = fields(rec)
        if t < 0:
            u = clock.unix_ms(-t - 1)
            if u is not None:
                return struct.pack("<IIq", b, s, u) + memoryview(rec)[_HDR:]
        return rec

    def _pop_head(self):
        rec = self._ring[self._head]
        self._ring[self._head] = None
        self._head = (self._head + 1) % self.cap
        self._n -= 1
        if self.mark:
            self.mark -= 1
        return rec

    def begin(self):
        """A connection came up: everything waiting now is backlog, nothing is in flight."""
        self.up = True
        self.mark = self._n
        self.nl = self.nb = 0

    def end(self):
        """The connection ended (or an attempt failed): the readings in flight stay, in their
        place, and are sent again (oldest first) on the next connection. With a spill, everything
        in RAM goes to flash now (a power cut must not take it)."""
        self.up = False
        self.nl = self.nb = 0
        if self.spill_bytes:
            self.flush()

    def live(self, i=0):
        """The i-th oldest reading pushed since the connection came up, or None."""
        if self._n - self.mark > i:
            return self._ring[(self._head + self.mark + i) % self.cap]
        return None

    def backlog(self, i=0):
        """The i-th oldest reading waiting from before the connection came up, or None."""
        sp = self.spill
        while not i and sp is not None and sp.count:
            rec = sp.peek()
            if self._gone is None or rec is None or rec[:8] != self._gone:
                return rec
            # a copy of a reading already delivered (done()): taken out, not sent twice
            self._gone = None
            self.done(rec)
            sp = self.spill
        c = sp.count if sp is not None else 0
        if i < c:
            return sp.read(i)
        if i - c < self.mark:
            return self._ring[(self._head + i - c) % self.cap]
        return None

    def done(self, rec):
        """rec was delivered: take it out. Its copy may be on flash behind older readings (the
        reading in flight when the link went, resent first on the next connection; or one that
        moved there meanwhile): the replay skips that copy when it reaches it (backlog()). A power
        cut before then forgets that, and the copy is sent again: the host de-duplicates by (boot,
        seq). Without a spill, end() took it out already."""
        sp = self.spill
        if sp is not None and sp.count and _same(sp.peek(), rec):
            sp.pop()
            self.nb = max(0, self.nb - 1)
            if self._gone is not None and self._gone == rec[:8]:
                self._gone = None  # sent again before the replay reached its copy
            if not sp.count:
                # replayed to the end: the spill's code leaves RAM until the next outage
                self._dropped += sp.dropped
                self.spill = None
                from gt import unload

                unload("spool")
        elif self._n and self._ring[self._head] is rec:
            if self.mark:
                self.nb = max(0, self.nb - 1)
            else:
                self.nl = max(0, self.nl - 1)
            self._pop_head()
        elif self._n > self.mark and self._ring[(self._head + self.mark) % self.cap] is rec:
            self.nl = max(0, self.nl - 1)
            # the oldest live reading: close the gap by moving the (few) later ones down one
            cap = self.cap
            i = self.mark
            while i < self._n - 1:
                self._ring[(self._head + i) % cap] = self._ring[(self._head + i + 1) % cap]
                i += 1
            self._n -= 1
            self._ring[(self._head + self._n) % cap] = None
        elif self.spill_bytes:
            # not in RAM nor first on flash: its copy is further on (skipped when the replay gets
            # there), or it went with the oldest when the spill was full, counted as dropped: it
            # was delivered after all. The flash is in time order; boot ids are random, but a
            # reading of this boot is newer than one of another.
            h = sp.peek() if sp is not None and sp.count else None
            if h is not None:
                hb, hs, _ = fields(h)
                rb, rs, _ = fields(rec)
                if hs < rs if hb == rb else rb == self.boot:
                    self._gone = rec[:8]
                    return
            self._dropped -= 1

    def flush(self):
        """Move the RAM readings to flash, oldest first (while there is no link, and before a
        planned reset). A flash that fails leaves them in RAM, where the ring bounds them."""
        if not self.spill_bytes:
            return
        while self._n:
            try:
                self._append(self._dated(self._ring[self._head]))
            except (OSError, MemoryError):  # kept in RAM; the next flush tries again
                return
            self._pop_head()
