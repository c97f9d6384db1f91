# The publisher: drives the outbox for the transport, the one part that knows both. A transport
# has .up, .ka (ms), next_pid(), fail(e) and async send(pid, rec, ts, hist, dup) -> True (the
# PUBLISH went out), False (no session: try later) or None (it can never be sent); it tells
# acked(pid) for each PUBACK and link("up" | "down") as the connection comes and goes. With no
# transport (no broker configured) readings stay in the bounded outbox, which counts its drops.
#
# Live readings (pushed since the connection came up) go first; the backlog from before it is
# replayed oldest first with "hist": true, at most `replay_per_s` a second, so a long replay never
# holds back what is happening now.
#
# Up to `window` readings are in flight at once (QoS 1, each with its packet id): one PUBLISH
# after another instead of a round trip each, which is what a replay after an outage runs at
# (issue #20). A reading leaves the outbox only when its PUBACK comes; the broker acknowledges in
# order (MQTT 3.1.1 4.6), so the window retires from its front. A connection that ends hands the
# readings in flight back to the outbox, in their place; the next connection sends them first,
# with DUP and their packet ids while they lead the backlog (MQTT 3.1.1 4.4), else again as the
# replay reaches them. Storage stays exactly once and in seq order: the host de-duplicates by
# (node, boot, seq). The window's slots are allocated once.
import asyncio
import errno
import time
from asyncio import core
from micropython import const
from gt.outbox import fields, stamp

_HIST = const(1)
_ACKED = const(2)
_SENT = const(4)


class Sleeper:
    """A sleep another task can cut short (asyncio.Event and wait_for cost ~2 KB of RAM more)."""

    def __init__(self):
        self.task = None

    async def sleep(self, ms):
        self.task = core.cur_task
        try:
            await asyncio.sleep_ms(ms)
        finally:
            self.task = None

    def wake(self):
        t = self.task
        if t is not None:
            # the task sleeps in the run queue: put it back as due now
            self.task = None
            core._task_queue.remove(t)
            core._task_queue.push(t)


class Publisher:
    def __init__(self, app, transport=None):
        self.app = app
        self.transport = transport
        self.sent = self.replayed = 0
        self.undated = 0  # readings that could never be sent (undated after a reset, too big)
        self.last_ok = None  # ticks of the last acknowledged publish
        self.beat = self.moved = time.ticks_ms()  # moved: the window's last PUBACK or first send
        self.nap = Sleeper()  # woken by the outbox on push, by PUBACKs and by the link
        c = app.cfg.get("mqtt", {})
        rate = c.get("replay_per_s", 20)
        self.replay_us = 1000000 // rate if rate else 0
        w = self.w = c.get("window", 8)
        # the window, a ring of w slots (oldest at h, k in use): the reading, its packet id and
        # flags (_HIST, _ACKED, _SENT); then the seq and packet id of each reading the last
        # connection left unacknowledged, oldest first (seq -1: none)
        self.recs = [None] * w
        self.pids = [0] * w
        self.flags = bytearray(w)
        self.h = self.k = 0
        self.old = [-1] * (2 * w)
        self.gen = 0  # counts link events: a send that spans one does not enter the window

    def link(self, state):
        """The transport's connection came up or went down (called as it happens)."""
        box = self.app.outbox
        self.gen += 1
        if state == "up":
            box.begin()
        elif state == "down":
            self._retire(box)  # acknowledged ones leave first
            old = self.old
            for j in range(2 * self.w):
                old[j] = -1
            j = 0
            while self.k:
                i = self.h
                if self.flags[i] & _SENT:
                    old[j] = fields(self.recs[i])[1]
                    old[j + 1] = self.pids[i]
                    j += 2
                self.recs[i] = None
                self.flags[i] = 0
                self.h = (i + 1) % self.w
                self.k -= 1
            box.end()  # the readings in flight stay in their place (on flash, with a spill)
        self.nap.wake()

    def acked(self, pid):
        """A PUBACK for pid (from the transport's reader)."""
        i = self.h
        for _ in range(self.k):
            if self.pids[i] == pid and self.flags[i] & (_SENT | _ACKED) == _SENT:
                self.flags[i] |= _ACKED
                self.moved = time.ticks_ms()
                self.nap.wake()
                return
            i = (i + 1) % self.w

    def _retire(self, box):
        while self.k and self.flags[self.h] & _ACKED:
            i = self.h
            box.done(self.recs[i])
            f = self.flags[i]
            if f & _SENT:
                self.sent += 1
                self.replayed += f & _HIST
                self.last_ok = time.ticks_ms()
            self.recs[i] = None
            self.flags[i] = 0
            self.h = (i + 1) % self.w
            self.k -= 1

    async def _send(self, t, box, rec, hist, pid):
        """rec into the window, sent (True), or not now (False: no clock yet, link gone)."""
        ts = stamp(rec, self.app.boot.boot_id)
        if ts is None:
            return False  # the clock is not known yet: wait for NTP
        i = (self.h + self.k) % self.w
        f = _HIST if hist else 0
        r = None
        if ts >= 0:
            gen = self.gen
            p = pid or t.next_pid()
            r = await t.send(p, rec, ts, hist, pid != 0)
            if r is False or gen != self.gen:
                return False  # no session, or one that ended while this went out
            self.pids[i] = p
            f |= _SENT
        if r is None:
            # it can never be sent: retired in its turn, counted
            self.undated += 1
            self.app.log.warn(
                "mqtt", "seq %d dropped: %s" % (fields(rec)[1], "undated" if ts < 0 else "too big")
            )
            f |= _ACKED
        if not self.k:
            self.moved = time.ticks_ms()
        self.recs[i] = rec
        self.flags[i] = f
        self.k += 1
        if hist:
            box.nb += 1
        else:
            box.nl += 1
        return True

    async def run(self):
        box = self.app.outbox
        old = self.old
        due = time.ticks_us()  # when the next backlog reading may go
        while True:
            self.beat = time.ticks_ms()
            t = self.transport
            wait = 1000
            if t is not None and t.up:
                self._retire(box)
                if self.k and time.ticks_diff(self.beat, self.moved) >= t.ka:
                    t.fail(OSError(errno.ETIMEDOUT, "no PUBACK in a keepalive"))
                elif self.k < self.w:
                    rec = None
                    pid = 0
                    if old[0] >= 0:
                        # what the broker never acknowledged goes first, while it leads the backlog
                        rec = box.backlog(box.nb)
                        if rec is not None:
                            s = fields(rec)[1]
                            for j in range(0, 2 * self.w, 2):
                                if old[j] == s:
                                    pid = old[j + 1]
                        if not pid:
                            rec = None
                            old[0] = -1  # the rest go again when the replay gets there
                    hist = rec is not None
                    if rec is None:
                        rec = box.live(box.nl)
                    if rec is None:
                        left = time.ticks_diff(due, time.ticks_us())
                        if left <= 0:
                            rec = box.backlog(box.nb)
                            hist = rec is not None
                        elif box.backlog(box.nb) is not None:
                            wait = (left + 999) // 1000  # (a 0 ms sleep would not let time pass)
                    if rec is not None:
                        if await self._send(t, box, rec, hist, pid):
                            if hist:
                                # on a schedule (as the sampler): a replay that falls behind its
                                # rate sends back to back instead of sleeping a slice per reading,
                                # at most 100 ms worth of readings ahead, so the average stays
                                # replay_per_s
                                due = time.ticks_add(due, self.replay_us)
                                if time.ticks_diff(time.ticks_us(), due) > 100000:
                                    due = time.ticks_add(time.ticks_us(), -100000)
                            continue
                        wait = 200  # not sent (clock unknown, link lost): try again shortly
            await self.nap.sleep(wait)
