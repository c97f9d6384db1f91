# The running node: builds its parts from the config and runs them as asyncio tasks.
#
#   sensors -> sampler -> outbox -> publisher -> transport (MQTT, when configured)
#   app state -> display pages;  watchdog fed while sampler and publisher keep beating
import asyncio
import gc
import time
import machine
from gt import clock, display, roles, sensors
from gt.hw import Hardware
from gt.outbox import Outbox
from gt.publisher import Publisher
from gt.sampler import Sampler
from gt.watchdog import Watchdog


class App:
    def __init__(self, cfg, boot, log):
        Net = ctx = None
        if cfg["mqtt"]["host"]:
            # imported first, while the heap is least fragmented: loading it grows MicroPython's
            # string table by one large block
            from gt import unload
            from gt.net import Net

            # The TLS context too: kept for good, and its largest part is one ~3 KB block, which
            # a heap that has run a while may not have in one piece at the first connect (the
            # demo's EL1 failed there with 14 KB free). Missing certificates: each connection
            # attempt tries again and says why.
            from gt import link

            try:
                ctx = link.context(cfg["mqtt"])
            except (OSError, ValueError):
                pass
            link = None
            unload("link")
        self.cfg = cfg
        self.boot = boot
        self.log = log
        self._up_at = time.ticks_ms()
        self.up_s = self._up_ms = 0
        self.wdt = Watchdog(cfg["wdt_ms"], log)
        self.hw = Hardware(cfg["pins"])
        self.sensors = sensors.build(cfg["sensors"], self.hw, log)
        self.role = roles.load(cfg["role"], self)
        self.net = None
        # with a broker configured, readings spill to flash while it cannot be reached
        spill = cfg["spill_kb"] * 1024 if Net is not None else 0
        self.outbox = Outbox(cfg["queue"], spill, boot.boot_id, log)
        self.sampler = Sampler(self)
        self.publisher = Publisher(self)
        self.outbox.wake = self.publisher.nap.wake
        if Net is not None:
            self.net = self.publisher.transport = Net(self)
            self.net.ctx = ctx
            # the publisher drives the outbox with the link, and retires readings on their PUBACK
            self.net.listeners.append(self.publisher.link)
            self.net.listeners.append(self._link_event)
            self.net.on_ack = self.publisher.acked
        self.display = display.open(cfg, self.hw, log)
        self.link = "none"  # what the display shows: none / down / up (connecting: paused)
        gc.collect()
        self.heap_min = gc.mem_free()
        clock.check_rtc()

    def _link_event(self, state):
        # net.py: "connecting" (TCP, TLS, CONNACK next), then "up" or "failed"; "down" ends "up"
        self.link = state if state in ("up", "connecting") else "down"
        if state == "connecting":
            display.pause(self)  # the OLED's pages give their RAM to the TLS handshake
        elif state == "up":
            self.publisher.nap.wake()

    def uptime(self):
        """Seconds since boot. ticks_ms wraps (every ~12.4 days on the ESP32), so the steps are
        added up (housekeeping takes one a second); seconds stay a small int for decades."""
        now = time.ticks_ms()
        self._up_ms += time.ticks_diff(now, self._up_at)
        self._up_at = now
        if self._up_ms >= 1000:
            self.up_s += self._up_ms // 1000
            self._up_ms %= 1000
        return self.up_s

    def faults(self):
        return [(s.id, s.why) for s in self.sensors if not s.ok]

    def units(self):
        u = {}
        for s in self.sensors:
            u.update(s.units())
        u.update(self.role.units())
        return u

    async def _guard(self, name, coro):
        # a task that dies takes the node down quickly and visibly, not silently
        try:
            await coro
        except Exception as e:
            self.log.exc(name, e)
            try:
                self.boot.crash("%s: %r" % (name, e))
            except MemoryError:
                pass  # no RAM left to record it: the reset matters more
            machine.reset()

    async def _housekeeping(self):
        # Collect garbage on our schedule (short, regular pauses instead of one long one when the
        # heap runs out) and keep the least free heap seen, which the birth document reports.
        while True:
            gc.collect()
            free = gc.mem_free()
            if free < self.heap_min:
                self.heap_min = free
            self.uptime()
            try:
                self.display.update(self)
            except MemoryError:
                pass  # a moment short of RAM (a TLS handshake's): the next second draws it
            except Exception as e:  # a broken OLED never stops the node
                self.log.warn("display", "update failed: %r" % e)
                self.display = display.NullDisplay()
            await asyncio.sleep_ms(1000)

    async def main(self):
        interval = self.cfg["sample_ms"]
        self.wdt.watch("sampler", self.sampler, 3 * interval + 2000)
        self.wdt.watch("publisher", self.publisher, 30000)
        for name, coro in (
            ("sampler", self.sampler.run()),
            ("publisher", self.publisher.run()),
            ("housekeeping", self._housekeeping()),
            ("wdt", self.wdt.run()),
        ):
            asyncio.create_task(self._guard(name, coro))
        if self.net is not None:
            self.link = "down"
            asyncio.create_task(self._guard("net", self.net.run()))
        if self.boot.ota.get("st") == "trial":  # a new version: healthy in time, or rolled back
            from gt import otastate, unload

            asyncio.create_task(self._guard("ota", otastate.trial(self)))
            otastate = None  # (held by its task alone: its code leaves RAM when the trial ends)
            unload("otastate")
        self.log.info(
            "app",
            "running node=%s role=%s sensors=%d interval=%dms boot=%d"
            % (self.cfg["node"], self.cfg["role"], len(self.sensors), interval, self.boot.boots),
        )
        await asyncio.sleep_ms(self.cfg["stable_ms"])
        self.boot.stable()
        while True:
            await asyncio.sleep_ms(60000)

    def summary(self):
        return "samples=%d overruns=%d queued=%d dropped=%d heap_min_free=%d faults=%d" % (
            self.sampler.seq,
            self.sampler.overruns,
            len(self.outbox),
            self.outbox.dropped,
            self.heap_min,
            len(self.faults()),
        )


def run(cfg, boot, log):
    # An unhandled exception is logged, counted as a crash and ends in a reset. KeyboardInterrupt
    # and SystemExit pass: Ctrl-C gives the REPL.
    try:
        app = App(cfg, boot, log)
        try:
            asyncio.run(app.main())
        except KeyboardInterrupt:  # Ctrl-C on the REPL: say where the node was, then the prompt
            log.info("app", "stopped: " + app.summary())
            raise
    except Exception as e:
        log.exc("crash", e)
        try:
            boot.crash(repr(e))
        except MemoryError:
            pass
        time.sleep_ms(1000)
        machine.reset()
