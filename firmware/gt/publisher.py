# The publisher seam: takes readings out of the outbox and hands them to a transport. A transport
# has .up (bool) and async send(rec) -> bool. With no transport attached (no network configured)
# readings simply stay in the bounded outbox, which counts what it has to drop.
import asyncio
import time


class Publisher:
    def __init__(self, app, transport=None):
        self.app = app
        self.transport = transport
        self.sent = 0
        self.last_ok = None  # ticks of the last successful publish
        self.beat = time.ticks_ms()

    async def run(self):
        box = self.app.outbox
        while True:
            self.beat = time.ticks_ms()
            t = self.transport
            if t is not None and t.up and len(box):
                rec = box.peek()
                if await t.send(rec):
                    box.pop()
                    self.sent += 1
                    self.last_ok = time.ticks_ms()
                    continue
            await asyncio.sleep_ms(200 if t is not None else 1000)
