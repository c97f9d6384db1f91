# The link to the broker: the MQTT session over TLS (gt/mqtt.py is the protocol, gt/connect.py one
# connection attempt: Wi-Fi, NTP, TCP, TLS, CONNACK, each with a deadline).
#
# run() loops for ever: connect, serve the session until it breaks, wait a backoff with jitter,
# again. While connected, 1.5 keepalives without a byte from the broker, a PUBACK that does not
# come, the Wi-Fi link going or anything a broker must not send end the session; it is logged and
# retried, never a crash. Link state goes to `listeners` as events: fn("up" | "down").
#
# As the publisher's transport: .up and async send(rec, hist) -> True once the broker has the
# reading (QoS 1, PUBACK). One message is in flight at a time; it keeps its packet id and is sent
# again with DUP after a reconnect on the persistent session (clean_session False).
#
# RAM: one tx and one rx buffer, allocated once; the telemetry document is written straight into
# tx behind its PUBLISH header. gt/connect.py and gt/commands.py are imported only while they run.
import asyncio
import errno
import gc
import json
import os
import time
from asyncio import core
from micropython import const
from gt import clock, mqtt, unload
from gt.outbox import fields, stamp
from gt.publisher import Sleeper

_TX = const(384)  # telemetry packets; bigger payloads (birth, acks) go out from their own bytes
_RX = const(256)  # the largest packet accepted: commands are small, bigger means a broken broker


def io(queue, s):
    # wait until asyncio's poller says s is ready (as asyncio's own streams wait). Over TLS, s is
    # the TCP socket under it (self.raw): the TLS object has no file descriptor, and the unix port
    # polls such an object in 1 ms slices (1,645 wake-ups a second at 1 Hz, issue #20). The TLS
    # object is always read first, so bytes it holds decrypted never wait for the socket.
    yield queue(s)


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
        self.sock = self.ctx = self.wlan = self.addr = self.task = self.err = self.ntp_at = None
        self.raw = None  # the TCP socket under the TLS one: what the event loop waits on
        self.busy = False  # a packet is being written: tasks take turns (see take)
        self.acked = self.birth = False
        self.nap = Sleeper()  # the sender waiting for its PUBACK
        self.pid = 0
        self.inflight = None  # (pid, record, hist): the reading waiting for its PUBACK
        self.seen = []  # (id, ack) of recent commands: a repeated id is not run again
        self.conns = self.failures = self.undated = 0
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
                self.logq.append(
                    b'{"lvl":"%s","mod":%s,"msg":%s,"ts":%d}'
                    % (lvl, json.dumps(tag), json.dumps(msg), clock_ms())
                )
            else:
                self.log_dropped += 1

    def doc(self, kind):
        """The birth or health document (bytes), from gt/wire.py, loaded for it and dropped."""
        from gt import wire

        d = getattr(wire, kind)(self)
        wire = None
        unload("wire")
        return d

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
            connect = link = None
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
                    from gt import connect

                    n = await connect.open(self)
                    connect = None
                    unload("connect")
                    # The TLS handshake, the node's tightest moment for RAM, runs here with the
                    # connection code out of RAM and the garbage collected
                    gc.collect()
                    try:
                        await asyncio.wait_for_ms(self._handshake(n), self.c["tls_ms"])
                    except Exception as e:
                        from gt import connect

                        raise connect.failed("tls", e, self.c["tls_ms"])
                    t2 = time.ticks_ms()
                    from gt import connect

                    present = await connect.finish(self, t2)
                    connect = None
                    unload("connect")
                    await self._serve()
            except Exception as e:  # a broken or hostile broker must never take the node down
                connect = link = None  # (the modules leave RAM during the backoff too)
                self.failures += 1
                try:
                    self.log.warn("mqtt", "%s: %s" % ("lost" if self.up else "failed", why(e)))
                except MemoryError:  # out of RAM in the handshake: say less, and try again later
                    self.err = None
            unload("link")
            unload("connect")
            self._close()
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
        s = self.sock
        while True:
            r = s.write(self.txm[:n])
            if r is not None:
                break
            await io(core._io_queue.queue_read, self.raw)
        await self.out(self.txm, n, r)

    async def resend(self, present):
        if self.inflight is not None:
            # the reading the broker never acknowledged: same packet id, DUP if it may have it
            pid, rec, hist = self.inflight
            if not await self._send(pid, rec, hist, present):
                raise self.err or OSError(0, "resent reading not acknowledged")
            self.inflight = None
            self.app.outbox.done(rec)

    async def _serve(self):
        self.app.outbox.begin()
        self.up = True
        self.health_at = time.ticks_ms()  # the birth just went out
        self._event("up")
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
                await self.publish(b"status", self.doc("birth"), 1, True)
                self.health_at = time.ticks_ms()
            if self.health_ms and time.ticks_diff(now, self.health_at) >= self.health_ms:
                self.health_at = now
                await self.publish(b"status", self.doc("health"), 1, True)

    def _event(self, state):
        for fn in self.listeners:
            fn(state)

    def _close(self):
        was = self.up
        self.up = False
        self.nap.wake()  # a sender waiting for its PUBACK gives up now
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = self.raw = None
        self.n = 0
        self.busy = False
        # the reading in flight is resent first thing on the next connection; the outbox keeps
        # what waits (and that reading) on flash while there is no link
        self.app.outbox.end(self.inflight[1] if self.inflight is not None else None)
        if was:
            self._event("down")

    async def packet(self):
        """The next complete packet in rx: (first byte, body start, body end)."""
        while True:
            p = mqtt.parse(self.rx, self.n)
            if p is not None:
                return p
            s = self.sock
            r = s.readinto(memoryview(self.rx)[self.n :])
            if r is None:
                await io(core._io_queue.queue_read, self.raw)
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
        s = self.sock
        while off < n:
            r = s.write(mv[off:n])
            if r is None:
                await io(core._io_queue.queue_write, self.raw)
            else:
                off += r
        self.last_tx = time.ticks_ms()

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
                    inf = self.inflight
                    if inf is not None and inf[0] == rx[b] << 8 | rx[b + 1]:
                        self.acked = True
                        self.nap.wake()
                elif t == mqtt.PUBLISH and rx[b + 1 + (rx[b] << 8 | rx[b + 1])] == 97:
                    # <root>/<node>/ota (the one subscription ending in "a"): an update, whose
                    # module stays loaded while the transfer runs (docs/ota.md)
                    from gt import ota

                    await ota.on_publish(self, first, b, e)
                    ota = None
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
            self.err = e
            self.nap.wake()

    async def send(self, rec, hist):
        """Publish one reading at QoS 1; True once the broker has it (or it can never be sent and
        was counted), False to try again later."""
        if not self.up or self.err is not None:
            return False  # no session, or one that is ending: the reading waits for the next
        if self.inflight is None or self.inflight[1] is not rec:
            self.inflight = (self.next_pid(), rec, hist)
        if await self._send(self.inflight[0], rec, hist, False):
            self.inflight = None
            return True
        return False

    async def _send(self, pid, rec, hist, dup):
        boot, seq, _t = fields(rec)
        ts = stamp(rec, self.app.boot.boot_id)
        if ts is None:
            return False  # the clock is not known yet: wait for NTP
        doc = b'{"v":1,"node":"%s","boot":%d,"seq":%d,"ts":%d,"m":' % (self.cid, boot, seq, ts)
        m = memoryview(rec)[16:]
        tail = b',"hist":true}' if hist else b"}"
        n = len(doc) + len(m) + len(tail)
        if ts < 0 or n + len(self.t_tel) + 9 > _TX:
            self.undated += 1
            self.log.warn("mqtt", "seq %d dropped: %s" % (seq, "undated" if ts < 0 else "too big"))
            return True
        await self.take()
        s = self.sock
        try:
            o = mqtt.head(self.tx, self.t_tel, n, pid, False, dup)
            for part in (doc, m, tail):
                self.tx[o : o + len(part)] = part
                o += len(part)
            self.acked = False
            await self.out(self.txm, o)
        except OSError as e:  # the link broke under us: the session ends, the reading stays
            if s is self.sock:  # (not a connection that is gone already)
                self.err = e
            return False
        finally:
            self.busy = False
        t0 = time.ticks_ms()
        if not self.acked:
            await self.nap.sleep(self.ka)  # woken by the PUBACK, or by the connection ending
        if self.acked:
            return True
        if (
            self.err is None
            and self.sock is not None
            and time.ticks_diff(time.ticks_ms(), t0) >= self.ka
        ):
            self.err = OSError(errno.ETIMEDOUT, "no PUBACK in a keepalive")
        return False

    def rebirth(self):
        self.birth = True


def clock_ms():
    return clock.unix_ms(time.ticks_ms()) or 0


def why(e):
    return e.args[1] if isinstance(e, OSError) and len(e.args) > 1 else repr(e)
