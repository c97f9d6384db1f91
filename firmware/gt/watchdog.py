# The hardware watchdog, fed only while the tasks that matter are alive. Each watched task beats
# (sets its .beat to ticks_ms()) every time round its loop; if any has been silent for longer than
# its limit, feeding stops and the WDT resets the node — a hung sampler cannot hide behind a
# healthy event loop.
import asyncio
import time
import machine


class Watchdog:
    def __init__(self, timeout_ms, log):
        # started before any driver runs, so a hang while the node starts up is covered too
        self._wdt = machine.WDT(timeout=timeout_ms)
        self.timeout = timeout_ms
        self.log = log
        self.watched = []  # (name, object with .beat, max silence ms)
        self.starved = None

    def watch(self, name, obj, max_ms):
        self.watched.append((name, obj, max_ms))

    def stalled(self, now):
        for name, obj, max_ms in self.watched:
            if time.ticks_diff(now, obj.beat) > max_ms:
                return name
        return None

    async def run(self):
        wdt = self._wdt
        period = self.timeout // 4
        while True:
            name = self.stalled(time.ticks_ms())
            if name is None:
                wdt.feed()
            elif self.starved != name:
                self.starved = name
                self.log.error(
                    "wdt", "task '%s' stalled; letting the watchdog reset the node" % name
                )
            await asyncio.sleep_ms(period)
