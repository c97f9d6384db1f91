# The link to the broker: the MQTT session over TLS (gt/mqtt.py is the protocol, gt/link.py gets
# Wi-Fi, the clock and the TLS context, gt/connect.py opens one session: TCP and the TLS socket,
# and returns it, a Session; the handshake runs here; gt/connack.py takes the CONNACK; each phase
# with a deadline).
#
# run() loops for ever: connect, serve the session until it breaks, wait a backoff with jitter,
# again. While connected, 1.5 keepalives without a byte from the broker, a PUBACK that does not
# come (the publisher says so: fail()), the Wi-Fi link going or anything a broker must not send
# end the session; it is logged and retried, never a crash. Link state goes to `listeners` as
# events: fn("connecting") before TCP, then fn("up") or fn("failed"), and fn("down") when a
# session that was up ends; PUBACKs go to on_ack(pid).
#
# As the publisher's transport (gt/publisher.py, which drives the outbox and its window of
# readings in flight): .up, .ka, next_pid(), fail(e) and async send(pid, rec, ts, hist, dup),
# which writes one reading's PUBLISH (QoS 1; gt/wire.py builds the document) and returns without
# waiting for its PUBACK. The session is persistent (clean_session False).
#
# RAM: one tx and one rx buffer, allocated once; the telemetry document is written straight into
# tx behind its PUBLISH header. gt/link.py, gt/connect.py, gt/connack.py and gt/commands.py are
# imported only while they run.
import asyncio
import gc
import os
import time
from asyncio import core
from micropython import const
from gt import clock, display, io, mqtt, unload, why

_TX = const(384)  # telemetry packets; bigger payloads (birth, acks) go out from their own bytes
_RX = const(256)  # the largest packet accepted: commands are small, bigger means a broken broker


class Net:
    def __init__(self, app):
        self.app = app
        self.log = app.log
        cfg = app.cfg
        self.c = cfg["mqtt"]
        self.ka = self.c["keepalive"] * 1000
        self.cid = cfg["node"].encode()
        self.root = b"%s/%s/" % (cfg["root"], self.cid)
        self.t_tel = self.root + b"telemetry"
        self.up = False
        self.listeners = []
        self.tx = bytearray(_TX)
        self.txm = memoryview(self.tx)
        self.rx = bytearray(_RX)
        self.n = 0  # bytes in rx
        self.s = None  # the session (gt/connect.py's Session): the sockets, while connected
        self.ctx = self.wlan = self.addr = self.task = self.err = self.ntp_at = None
        self.busy = False  # a packet is being written: tasks take turns (see take)
        self.hs = False  # the TLS handshake runs (its peak is the node's tightest moment for RAM)
        self.birth = False
        self.wire = None  # gt/wire.py while the session serves (_serve)
        self.on_ack = None  # fn(pid) for each PUBACK (the publisher's)
        self.pid = 0
        self.seen = []  # (id, ack) of recent commands: a repeated id is not run again
        self.ota = None  # the update over the air being received (gt/otactl.py's Transfer)
        self.conns = self.failures = 0
        self.handshake_ms = None
        self.last_rx = self.last_tx = time.ticks_ms()
        self.logq = []  # log lines for <root>/<node>/log, sent while connected
        self.log_dropped = 0
        self.log_lvls = "IWE"[
            "iwe".index(cfg["log_level"][0]) :
        ]  # the levels sent (config log_level)
        self.health_ms = cfg["health_s"] * 1000  # the health document on status every so often
        self.health_at = 0
        app.log.sinks.append(self._log)

    def _log(self, lvl, tag, msg):
        if lvl in self.log_lvls and self.up:
            if len(self.logq) < 4:
                self.logq.append(self.wire.log_line(lvl, tag, msg, clock_ms()))
            else:
                self.log_dropped += 1

    def next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    def rssi(self):
        try:
            return self.wlan.status("rssi") if self.wlan else None
        except (OSError, ValueError):
            return None

    async def run(self):
        # The first reading first: sensors starting up (a DS18B20's power-on conversion, warnings
        # written to flash) and the first connection (NTP, the TLS handshake) are a boot's two
        # largest transients; together they ran EL1 out of RAM at every boot (issue #20)
        while not self.app.sampler.seq:
            await asyncio.sleep_ms(20)
        fails = 0
        while True:
            began = time.ticks_ms()
            self.err = None
            present = False
            tried = False
            connect = connack = link = None
            try:
                # One module at a time, each dropped before the next loads (RAM, issue #20):
                # Wi-Fi, NTP and the TLS context; TCP; the handshake here; CONNACK and birth
                from gt import link

                up = await link.up(self)
                link = None
                unload("link")
                if not up:
                    present = None  # no link (Wi-Fi) to try on
                else:
                    tried = True
                    self._event("connecting")
                    from gt import connect

                    self.s, n = await connect.open(self, self.addr)
                    self.addr = self.s.addr
                    connect = None
                    unload("connect")
                    unload("connack")
                    unload("wire")  # (loaded for the will: not needed again before CONNACK)
                    # The TLS handshake, the node's tightest moment for RAM, runs here with the
                    # connection code out of RAM and the garbage collected
                    gc.collect()
                    self.hs = True  # the sampler waits for its end (gt/sampler.py)
                    try:
                        await asyncio.wait_for_ms(self._handshake(n), self.c["tls_ms"])
                    except Exception as e:
                        from gt import connack

                        raise connack.failed("tls", e, self.c["tls_ms"])
                    finally:
                        self.hs = False
                    t2 = time.ticks_ms()
                    from gt import connack

                    present = await connack.finish(self, self.s, t2, self.conns + 1)
                    connack = None
                    unload("connack")
                    self.conns += 1
                    self.handshake_ms = self.s.handshake_ms
                    self.last_rx = time.ticks_ms()
                    self.task = asyncio.create_task(self.reader())
                    await self._serve()
            except Exception as e:  # a broken or hostile broker must never take the node down
                connect = connack = link = None  # (the modules leave RAM in the backoff too)
                self.failures += 1
                try:
                    self.log.warn("mqtt", "%s: %s" % ("lost" if self.up else "failed", why(e)))
                except MemoryError:  # out of RAM in the handshake: say less, and try again later
                    self.err = None
            unload("link")
            unload("connect")
            unload("connack")
            if not self._close() and tried:
                self._event("failed")
            if present is None or time.ticks_diff(time.ticks_ms(), began) > self.ka:
                # no Wi-Fi yet (the join is retried at once, to be back as soon as it is), or the
                # session ran a while: back off from the bottom again
                fails = 0
            fails += 1
            d = min(self.c["backoff_max_ms"], 500 << min(fails, 12))
            await asyncio.sleep_ms(d // 2 + d // 2 * os.urandom(1)[0] // 255)  # jitter

    async def _handshake(self, n):
        # the TLS handshake runs inside the first write of CONNECT (n bytes in tx), a step per
        # call on the non-blocking socket; None means it waits for the server
        s = self.s
        while True:
            r = s.sock.write(self.txm[:n])
            if r is not None:
                break
            await io(core._io_queue.queue_read, s.raw)
        await self.out(self.txm, n, r)

    async def _serve(self):
        # the documents' module, loaded while the session serves (not during the handshake, the
        # node's tightest moment for RAM: connect.py loads it for the will, net.py drops it)
        from gt import wire

        self.wire = wire
        await self.publish(b"status", wire.birth(self), 1, True)
        self.up = True
        self.health_at = time.ticks_ms()  # the birth just went out
        self._event("up")  # the publisher starts: what the broker never acknowledged first
        while True:
            await asyncio.sleep_ms(250)
            if self.err is not None:
                raise self.err
            if self.wlan is not None and not self.wlan.isconnected():
                raise OSError(0, "wifi link lost")
            now = time.ticks_ms()
            if time.ticks_diff(now, self.last_rx) > self.ka * 3 // 2:
                raise OSError(0, "broker silent for 1.5 keepalives")
            if time.ticks_diff(now, self.last_tx) >= self.ka // 2:
                await self.take()
                try:
                    self.tx[:2] = mqtt.PINGREQ
                    await self.out(self.txm, 2)
                finally:
                    self.busy = False
            while self.logq:
                await self.publish(b"log", self.logq.pop(0), 0)
            if self.birth:
                self.birth = False
                await self.publish(b"status", self.wire.birth(self), 1, True)
                self.health_at = time.ticks_ms()
            u = self.ota
            if u is not None and time.ticks_diff(now, u.seen) > 60000:
                # an update whose host went silent: its RAM goes, its flash stays (resumed later).
                # Checked here, not by a task of the receiver's: a task that had ended still held
                # its module's code now and then (EL1: 3.5 KB less at the switch, one run in four)
                from gt import ota

                ota.stop(self, u)
                self.log.info("ota", "host silent: transfer paused at %d (kept on flash)" % u.off)
            if self.health_ms and time.ticks_diff(now, self.health_at) >= self.health_ms:
                self.health_at = now
                await self.publish(b"status", self.wire.health(self), 1, True)

    def _event(self, state):
        for fn in self.listeners:
            fn(state)

    def _close(self):
        was = self.up
        self.up = False
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.s is not None:
            try:
                self.s.sock.close()
            except OSError:
                pass
            self.s = None
        self.n = 0
        self.busy = False
        self.wire = None
        unload("wire")
        if was:  # the publisher hands what is in flight back to the outbox
            self._event("down")
        return was

    async def packet(self):
        """The next complete packet in rx: (first byte, body start, body end)."""
        while True:
            p = mqtt.parse(self.rx, self.n)
            if p is not None:
                return p
            s = self.s
            r = s.sock.readinto(memoryview(self.rx)[self.n :])
            if r is None:
                await io(core._io_queue.queue_read, s.raw)
            elif r == 0:
                raise OSError(0, "closed by the broker")
            else:
                self.n += r

    def consume(self, end):
        # keep what follows the packet (usually nothing, so usually no copy)
        b = self.rx
        left = self.n - end
        for j in range(left):
            b[j] = b[end + j]
        self.n = left

    async def take(self):
        # one packet at a time on the wire: a writer that finds another mid-packet waits its turn
        # (rare: a packet usually goes out in one write). The taker clears busy in a finally.
        while self.busy:
            await asyncio.sleep_ms(2)
        self.busy = True

    async def out(self, mv, n, off=0):
        s = self.s
        while off < n:
            r = s.sock.write(mv[off:n])
            if r is None:
                await io(core._io_queue.queue_write, s.raw)
            else:
                off += r
        self.last_tx = time.ticks_ms()

    async def write(self, n):
        """Send the packet in tx[:n], taking turns with the other writers."""
        await self.take()
        try:
            await self.out(self.txm, n)
        finally:
            self.busy = False

    async def publish(self, leaf, payload, qos, retain=False):
        await self.take()
        try:
            o = mqtt.head(
                self.tx, self.root + leaf, len(payload), self.next_pid() if qos else 0, retain
            )
            await self.out(self.txm, o)
            await self.out(memoryview(payload), len(payload))
        finally:
            self.busy = False

    async def reader(self):
        try:
            while True:
                first, b, e = await self.packet()
                self.last_rx = time.ticks_ms()
                t = first >> 4
                rx = self.rx
                if t == mqtt.PUBACK:
                    if self.on_ack is not None:
                        self.on_ack(rx[b] << 8 | rx[b + 1])
                elif t == mqtt.PUBLISH and rx[b + 1 + (rx[b] << 8 | rx[b + 1])] == 97:
                    # <root>/<node>/ota (the one subscription ending in "a"): an update
                    # (docs/ota.md). The OLED's pages leave RAM until it ends, and the message's
                    # first byte picks the one module that handles it (EL1 had no room for two):
                    # a chunk (0) the receiver, kept while chunks come; the switch (1) and the
                    # control messages (JSON) theirs, loaded for the message
                    display.hold(self.app, True)
                    o = b + 2 + (rx[b] << 8 | rx[b + 1]) + (2 if first & 6 else 0)
                    k = rx[o] if o < e else 0x7B
                    if k == 0:
                        from gt import ota as m
                    elif k == 1:
                        from gt import otasw as m
                    else:
                        from gt import otactl as m
                    a = await m.on_publish(self, o, e)
                    m = None
                    unload("otactl")
                    unload("otasw")
                    if self.ota is None:  # no transfer running: the receiver and the hold go
                        unload("ota")
                        display.hold(None, False)
                    await self.publish(b"ota/ack", a, 0)
                    if first & 6:
                        await self.take()
                        try:
                            await self.out(
                                self.txm, mqtt.puback(self.tx, rx[o - 2] << 8 | rx[o - 1])
                            )
                        finally:
                            self.busy = False
                elif t == mqtt.PUBLISH:
                    from gt import commands  # loaded per command: they are rare, RAM is not

                    c = commands.on_publish(self, first, b, e)
                    commands = None
                    unload("commands")
                    await c
                elif t == mqtt.SUBACK and rx[e - 1] & 0x80:
                    self.log.error("mqtt", "cmd subscription refused")
                elif t == mqtt.CONNACK:
                    raise mqtt.ProtocolError("second CONNACK")
                self.consume(e)
        except Exception as e:
            self.fail(e)

    def fail(self, e):
        """End the session: _serve raises e within its next beat."""
        if self.err is None:
            self.err = e

    async def send(self, pid, rec, ts, hist, dup):
        """Write one reading's PUBLISH (QoS 1, packet id pid, DUP when sent before); its PUBACK
        goes to on_ack. True once written, False without a session (or it broke: the reading
        stays in the outbox), None when it can never fit the send buffer."""
        if not self.up or self.err is not None:
            return False  # no session, or one that is ending: the reading waits for the next
        parts = self.wire.reading(self.cid, rec, ts, hist)
        n = len(parts[0]) + len(parts[1]) + len(parts[2])
        if n + len(self.t_tel) + 9 > _TX:
            return None
        await self.take()
        s = self.s
        try:
            o = mqtt.head(self.tx, self.t_tel, n, pid, False, dup)
            for part in parts:
                self.tx[o : o + len(part)] = part
                o += len(part)
            await self.out(self.txm, o)
        except OSError as e:  # the link broke under us: the session ends, the reading stays
            if s is self.s:  # (not a connection that is gone already)
                self.err = e
            return False
        finally:
            self.busy = False
        return True

    def rebirth(self):
        self.birth = True


def clock_ms():
    return clock.unix_ms(time.ticks_ms()) or 0
