# The publisher seam: takes readings out of the outbox and hands them to a transport. A transport
# has .up (bool) and async send(rec, hist) -> bool (True: delivered, take it out of the outbox).
# With no transport attached (no broker configured) readings simply stay in the bounded outbox,
# which counts what it has to drop.
#
# Live readings (pushed since the connection came up) go first; the backlog from before it is
# replayed oldest first with "hist": true, at most `replay_per_s` a second, so a long replay never
# holds back what is happening now.
import asyncio
import time
from asyncio import core


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
        self.sent = 0
        self.replayed = 0
        self.last_ok = None  # ticks of the last successful publish
        self.beat = time.ticks_ms()
        self.nap = Sleeper()  # woken by the outbox on push and by the transport coming up
        rate = app.cfg.get("mqtt", {}).get("replay_per_s", 20)
        self.replay_ms = 1000 // rate if rate else 0

    async def run(self):
        box = self.app.outbox
        next_replay = time.ticks_ms()
        while True:
            self.beat = now = time.ticks_ms()
            t = self.transport
            wait = 1000
            if t is not None and t.up:
                rec = box.live()
                hist = False
                if rec is None:
                    left = time.ticks_diff(next_replay, now)
                    if left <= 0:
                        rec = box.backlog()
                        hist = True
                    elif box.backlog() is not None:
                        wait = left
                if rec is not None:
                    if await t.send(rec, hist):
                        box.done(rec)
                        self.sent += 1
                        self.last_ok = time.ticks_ms()
                        if hist:
                            self.replayed += 1
                            # on a schedule (as the sampler): a replay that falls behind its rate
                            # sends back to back instead of sleeping a slice per reading, at most
                            # 100 ms worth of readings ahead, so the average stays replay_per_s
                            next_replay = time.ticks_add(next_replay, self.replay_ms)
                            if time.ticks_diff(now, next_replay) > 100:
                                next_replay = time.ticks_add(now, -100)
                        continue
                    wait = 200  # not delivered (clock unknown, link lost): try again shortly
            await self.nap.sleep(wait)
