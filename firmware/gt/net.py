# Connectivity: Wi-Fi, NTP, TCP, TLS and the MQTT session over them (gt/mqtt.py is the protocol).
#
# run() loops for ever: bring the link up, set the clock, connect, serve the session until it
# breaks, wait a backoff with jitter, again. Every phase has a deadline (TCP, TLS handshake,
# CONNACK, PUBACK, and 1.5 keepalives of silence), so nothing can hang the event loop; whatever
# goes wrong (refused, garbage, a silent peer, a hostile broker) closes the connection, is logged
# with its phase and is retried. Link state goes to `listeners` as events: fn("up" | "down").
#
# As the publisher's transport: .up and async send(rec, hist) -> True once the broker has the
# reading (QoS 1, PUBACK). One message is in flight at a time; it keeps its packet id and is sent
# again with DUP after a reconnect on the persistent session (clean_session False).
#
# RAM: one tx and one rx buffer, allocated once; the telemetry document is written straight into
# the tx buffer behind its PUBLISH header. Connecting (gt/connect.py) and command handling
# (gt/commands.py) are imported only while they run.
import asyncio
import errno
import os
import sys
import time
from asyncio import core
from micropython import const
from gt import mqtt
from gt import outbox as ob
from gt.publisher import Sleeper

_TX = const(384)  # telemetry packets; bigger payloads (birth, acks) are written from their own bytes
_RX = const(256)  # largest packet accepted: commands are small, bigger means a broken broker


def _io(queue, s):
    # wait until asyncio's poller says s is ready (as asyncio's own streams wait)
    yield queue(s)


class Net:
    def __init__(self, app):
        self.app = app
        self.log = app.log
        cfg = app.cfg
        self.c = c = cfg["mqtt"]
        self.wifi = cfg["wifi"]
        self.ntp_host = cfg["ntp"] or c["host"]
        self.cid = cfg["node"].encode()
        self.root = ("%s/%s/" % (cfg["root"], cfg["node"])).encode()
        self.t_tel = self.root + b"telemetry"
        self.t_cmd = self.root + b"cmd"
        self.ka = c["keepalive"]
        self.up = False
        self.listeners = []
        self.tx = bytearray(_TX)
        self.txm = memoryview(self.tx)
        self.rx = mqtt.Reader(_RX)
        self.sock = self.ctx = self.wlan = self._addr = self._task = self._err = None
        self._busy = False  # a packet is being written (tasks take turns, see _take)
        self._acked = False
        self._nap = Sleeper()  # the sender waiting for its PUBACK
        self._pid = 0
        self.inflight = None  # (pid, record, hist): the reading waiting for its PUBACK
        self.seen = []  # (command id, ack) of the last commands: a repeat is not run again
        self._birth = False
        self.ntp_at = None
        self.conns = self.failures = self.undated = 0
        self.handshake_ms = None
        self.last_rx = self.last_tx = time.ticks_ms()

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _event(self, state):
        for fn in self.listeners:
            fn(state)

    def rssi(self):
        try:
            return self.wlan.status("rssi") if self.wlan else None
        except (OSError, ValueError):
            return None

    async def run(self):
        fails = 0
        while True:
            began = None
            try:
                from gt import connect  # for this attempt only (RAM)

                self._err = None
                present = await connect.connect(self)
                connect = None
                del sys.modules["gt.connect"]
                if present is not None:
                    began = time.ticks_ms()
                    await self._serve(present)
            except Exception as e:  # a broken or hostile broker must never take the node down
                self.failures += 1
                self.log.warn("mqtt", "%s: %s" % ("lost" if self.up else "failed", _why(e)))
            sys.modules.pop("gt.connect", None)
            self._close()
            if began is not None and time.ticks_diff(time.ticks_ms(), began) > self.ka * 1000:
                fails = 0  # it ran a while: back off from the bottom again
            fails += 1
            d = min(self.c["backoff_max_ms"], 500 << min(fails - 1, 12))
            d = d // 2 + d // 2 * os.urandom(1)[0] // 255  # jitter: a fleet must not retry in step
            await asyncio.sleep_ms(d)

    async def _serve(self, present):
        if self.inflight is not None:
            # the reading the broker never acknowledged: same packet id, DUP if it may have it
            pid, rec, hist = self.inflight
            if not await self._send(pid, rec, hist, present):
                raise OSError(0, "puback: resent reading not acknowledged")
            self.inflight = None
            self.app.outbox.done(rec)
        self.app.outbox.begin()
        self.up = True
        self._event("up")
        await self._watch()

    async def _watch(self):
        ka = self.ka * 1000
        while True:
            await asyncio.sleep_ms(250)
            if self._err is not None:
                raise self._err
            if self.wlan is not None and not self.wlan.isconnected():
                raise OSError(0, "wifi link lost")
            now = time.ticks_ms()
            if time.ticks_diff(now, self.last_rx) > ka * 3 // 2:
                raise OSError(errno.ETIMEDOUT, "broker silent for 1.5 keepalives")
            if time.ticks_diff(now, self.last_tx) >= ka // 2:
                await self._take()
                try:
                    self.tx[:2] = mqtt.PINGREQ
                    await self._out(self.txm, 2)
                finally:
                    self._busy = False
            if self._birth:
                self._birth = False
                from gt import connect

                doc = connect.birth(self)
                del sys.modules["gt.connect"]
                await self._publish(b"status", doc, 1, True)

    def _close(self):
        was = self.up
        self.up = False
        self._nap.wake()  # a sender waiting for its PUBACK gives up now
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.rx.n = 0
        if was:
            self._event("down")

    async def _packet(self):
        r = self.rx
        while True:
            p = r.packet()
            if p is not None:
                return p
            s = self.sock
            n = s.readinto(r.mv[r.n:])
            if n is None:
                await _io(core._io_queue.queue_read, s)
            elif n == 0:
                raise OSError(errno.ECONNRESET, "closed by the broker")
            else:
                r.n += n

    async def _out(self, mv, n, off=0):
        # write mv[off:n]; the caller holds the lock
        s = self.sock
        while off < n:
            r = s.write(mv[off:n])
            if r is None:
                await _io(core._io_queue.queue_write, s)
            else:
                off += r
        self.last_tx = time.ticks_ms()

    async def _reader(self):
        try:
            while True:
                first, b, e = await self._packet()
                self.last_rx = time.ticks_ms()
                t = first >> 4
                buf = self.rx.buf
                if t == mqtt.PUBACK:
                    inf = self.inflight
                    if inf is not None and inf[0] == buf[b] << 8 | buf[b + 1]:
                        self._acked = True
                        self._nap.wake()
                elif t == mqtt.PUBLISH:
                    await self._on_publish(first, buf, b, e)
                elif t == mqtt.SUBACK:
                    if buf[e - 1] & 0x80:
                        self.log.error("mqtt", "cmd subscription refused")
                elif t == mqtt.CONNACK:
                    raise mqtt.ProtocolError("second CONNACK")
                self.rx.consume(e)
        except Exception as e:
            self._err = e
            self._nap.wake()

    async def _on_publish(self, first, buf, b, e):
        tl = buf[b] << 8 | buf[b + 1]
        o = b + 2 + tl
        qos = first & 0x06
        if o + (2 if qos else 0) > e:
            raise mqtt.ProtocolError("PUBLISH topic past its end")
        pid = buf[o] << 8 | buf[o + 1] if qos else 0
        if qos:
            o += 2
        if bytes(self.rx.mv[b + 2:b + 2 + tl]) == self.t_cmd:
            from gt import commands  # loaded for the command only

            ack = commands.handle(self.app, self.seen, bytes(self.rx.mv[o:e]))
            del sys.modules["gt.commands"]
            await self._publish(b"ack", ack, 1)
        if qos:
            # acknowledged after our ack went out: if the link drops in between, the broker sends
            # the command again and the repeated id gets the same ack without running twice
            await self._take()
            try:
                await self._out(self.txm, mqtt.puback(self.tx, pid))
            finally:
                self._busy = False

    async def _take(self):
        # one packet at a time on the wire: a writer that finds another mid-packet waits its turn
        # (rare: a packet usually goes out in one write). The taker builds in tx, writes, and
        # clears _busy in a finally.
        while self._busy:
            await asyncio.sleep_ms(2)
        self._busy = True

    async def _publish(self, leaf, payload, qos, retain=False):
        await self._take()
        try:
            topic = self.root + leaf
            o = mqtt.head(self.tx, topic, len(payload), self._next_pid() if qos else 0, qos, retain)
            await self._out(self.txm, o)
            await self._out(memoryview(payload), len(payload))
        finally:
            self._busy = False

    def rebirth(self):
        self._birth = True

    def _telemetry(self, rec, hist, pid, dup):
        # the PUBLISH with its telemetry document, written into tx; its length, or None/-1/-2
        boot, seq, _t = ob.fields(rec)
        ts = ob.stamp(rec, self.app.boot.boot_id)
        if ts is None or ts < 0:
            return ts
        doc = b'{"v":1,"node":"%s","boot":%d,"seq":%d,"ts":%d,"m":' % (self.cid, boot, seq, ts)
        tail = b',"hist":true}' if hist else b"}"
        m = memoryview(rec)[16:]
        n = len(doc) + len(m) + len(tail)
        if n + len(self.t_tel) + 9 > _TX:
            return -2
        o = mqtt.head(self.tx, self.t_tel, n, pid, 1, False, dup)
        for part in (doc, m, tail):
            self.tx[o:o + len(part)] = part
            o += len(part)
        return o

    async def send(self, rec, hist):
        """Publish one reading at QoS 1; True once the broker has it (or it can never be sent and
        was counted), False to try again later."""
        if not self.up:
            return False
        self.inflight = (self._next_pid(), rec, hist)
        if await self._send(self.inflight[0], rec, hist, False):
            self.inflight = None
            return True
        return False

    async def _send(self, pid, rec, hist, dup):
        await self._take()
        try:
            n = self._telemetry(rec, hist, pid, dup)
            if n is not None and n > 0:
                self._acked = False
                await self._out(self.txm, n)
        finally:
            self._busy = False
        if n is None:
            return False  # clock not known yet: wait for NTP
        if n < 0:
            self.undated += 1
            self.log.warn("mqtt", "seq %d dropped: %s" % (ob.fields(rec)[1], "too big" if n == -2 else "undated"))
            return True
        t0 = time.ticks_ms()
        if not self._acked:
            await self._nap.sleep(self.ka * 1000)  # woken by the PUBACK, or by the connection ending
        if self._acked:
            return True
        if self.sock is not None and self._err is None and time.ticks_diff(time.ticks_ms(), t0) >= self.ka * 1000:
            self._err = OSError(errno.ETIMEDOUT, "puback: none in %d s" % self.ka)
        return False


def _why(e):
    if isinstance(e, OSError) and len(e.args) > 1:
        return e.args[1]
    return repr(e)
