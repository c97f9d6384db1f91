# Over-the-air updates, the node's side (protocol: docs/ota.md): the receiver. gt/net.py loads
# it for a message on <root>/<node>/ota, the OLED's pages out of RAM first (display.hold); it
# stays loaded while a transfer runs and drops itself when the transfer ends or the host goes quiet
# (what was received stays on flash: the transfer resumes).
#
# The release is one byte stream: the manifest (a JSON line: version, kind, file count; then a
# line per file: size, SHA-256, path; read a line at a time, never held whole in RAM), then
# each file in its order. Chunks carry their stream offset; the node takes only the next one
# (anything else is answered with the offset it wants, so the host rewinds or skips) and writes
# it straight from net's own receive buffer into the slot folder, hashing as it goes. A file whose
# hash differs is removed and asked for again. Nothing of the running version is touched.
#
# RAM: EL1 at 96 KB has ~11.5 KB free with its OLED's pages out, and the whole receiver in one
# module (~11 KB of code) did not fit beside it. So this module is only what a chunk needs: a
# chunk fits the receive buffer net has anyway (the node says how many data bytes it takes), the
# answer to a chunk is one small bytes object, and the control messages (gt/otactl.py) and the
# check and switch at the end (gt/otasw.py) are loaded while they run and dropped after.
import asyncio
import gc
import hashlib
import os
import time
from binascii import hexlify
from micropython import const
from gt import display, unload

_IDLE_MS = const(60000)  # the host silent this long: drop the transfer's RAM (flash keeps it)

T = None  # the transfer running (gt/otactl.py's Transfer)


def low(t):
    # the free heap with everything of a transfer held, after a collection: the transfer's
    # fullest moments (a file's last chunk, the switch) set what the node has left (bench: ota)
    gc.collect()
    f = gc.mem_free()
    if f < t.low:
        t.low = f


def _end(t):
    return t.start + (t.mlen if t.i < 0 else t.cur[1])


def path(t):
    return t.slot + "/" + ("manifest.json" if t.i < 0 else t.cur[0])


def done(t):
    return t.i >= t.n >= 0


async def on_publish(net, first, b, e):
    """A PUBLISH on <root>/<node>/ota in net.rx[b:e]: handle it, answer on ota/ack, PUBACK it."""
    global T
    rx = net.rx
    o = b + 2 + (rx[b] << 8 | rx[b + 1])
    qos = first & 6
    pid = rx[o] << 8 | rx[o + 1] if qos else 0
    o += qos
    a = why = None
    try:
        if o < e and rx[o] == 0:
            st, why = _chunk(rx, o, e)
        else:
            from gt import otactl

            st, why, T = otactl.control(net, bytes(rx[o:e]), T, (done, path, finish))
            if st != "done":
                a = otactl.answer(net, T, st, why)
            otactl = None
            unload("otactl")
            if T is not None and T.seen is None:  # begun, or resumed from flash
                T.seen = time.ticks_ms()
                low(T)  # the receiver and the transfer's state in, the control code gone
                asyncio.create_task(_idle(net, T))
        if st == "done":
            from gt import otasw

            low(T)  # the check's code in as well: the transfer's fullest moment
            st, why = await otasw.switch(net, T, line)
            otasw = None
            unload("otasw")
    except MemoryError:
        # a transient refusal: what is on flash stays; the host begins again later, it resumes
        st, why = "busy", "out of RAM"
    except Exception as x:  # the flash, or a bug: said to the host, never the link's end
        st, why = "err", "failed: %r" % (x,)
    t = T
    if st in ("busy", "err", "switch") or (st == "bad" and t is not None and done(t)):
        # (the switch: the node resets; a file changed on flash: the host begins afresh)
        _close(t)
        T = None
        a = None
        gc.collect()
    if a is None:
        if why is None and t is not None:
            a = b'{"id":%d,"st":"%s","off":%d}' % (t.id, st, t.off)
        else:
            from gt import otactl

            a = otactl.answer(net, t, st, why)
            otactl = None
            unload("otactl")
    await net.publish(b"ota/ack", a, 0)
    if pid:
        from gt import mqtt

        await net.take()
        try:
            await net.out(net.txm, mqtt.puback(net.tx, pid))
        finally:
            net.busy = False
    if T is None:
        _unload()


def _chunk(rx, o, e):
    t = T
    if t is None or int.from_bytes(rx[o + 1 : o + 5], "big") != t.id:
        return "idle", None  # a chunk of no transfer we run: the host begins again
    t.seen = time.ticks_ms()
    if int.from_bytes(rx[o + 5 : o + 9], "big") != t.off:
        return "recv", None  # lost or repeated: the host sends from t.off
    mv = memoryview(rx)
    o += 9
    while o < e:
        if t.f is None:
            _mkdirs(path(t))
            t.f = open(path(t), "wb")
            t.h = hashlib.sha256()
        k = min(e - o, _end(t) - t.off)
        t.f.write(mv[o : o + k])
        t.h.update(mv[o : o + k])
        t.off += k
        o += k
        if t.off == _end(t):
            low(t)  # a file's last chunk: the file open, its hash, the packet in rx
            why = finish(t)
            if why is not True:
                return "bad", why
    return ("done" if done(t) else "recv"), None


def finish(t):
    """The file at t.i is complete: check it; True, or why not (it is removed, asked again)."""
    t.f.close()
    t.f = None
    got = hexlify(t.h.digest()).decode()
    t.h = None
    want = t.msha if t.i < 0 else t.cur[2]
    if got != want:
        name = path(t)
        os.remove(name)
        t.off = t.start
        return "%s: SHA-256 %s, the manifest says %s" % (name, got[:16], want[:16])
    if t.i < 0:
        with open(path(t)) as f:
            h = f.readline()  # {"v","node","kind","n"}: the two the node needs, without a parser
        t.n = int(h[h.index('"n":') + 4 :].rstrip("}\n "))
        t.kind = "config" if '"kind":"config"' in h else "full"
    t.start = _end(t)
    t.i += 1
    _seek(t)
    # empty files have no chunk of their own
    while not done(t) and t.cur[1] == 0:
        _mkdirs(path(t))
        open(path(t), "wb").close()
        t.i += 1
        _seek(t)
    return True


def line(ln):
    """(path, size, sha256 hex) of a manifest line."""
    size, sha, name = ln.rstrip("\n").split(" ", 2)
    return name, int(size), sha


def _seek(t):
    # file t.i's manifest line into t.cur
    t.cur = None
    if t.i < t.n:
        with open(t.slot + "/manifest.json") as f:
            for _ in range(t.i + 2):
                ln = f.readline()
        t.cur = line(ln)


async def _idle(net, t):
    global T
    while T is t:
        await asyncio.sleep_ms(1000)
        if T is t and time.ticks_diff(time.ticks_ms(), t.seen) > _IDLE_MS:
            T = None
            _close(t)
            net.log.info("ota", "host silent: transfer paused at %d (kept on flash)" % t.off)
            _unload()


def _close(t):
    if t is not None and t.f is not None:
        try:
            t.f.close()
        except OSError:
            pass
        t.f = None


def _unload():
    # the receiver leaves RAM and the OLED's pages come back (at the display's next update)
    unload("ota")
    display.hold(None, False)
    gc.collect()


def _mkdirs(path):
    # the folders above a file, one level at a time (MicroPython has no makedirs)
    i = path.find("/")
    while i > 0:
        try:
            os.mkdir(path[:i])
        except OSError:
            pass
        i = path.find("/", i + 1)
