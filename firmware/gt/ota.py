# Over-the-air updates, the node's side (protocol: docs/ota.md). gt/net.py loads this module for a
# message on <root>/<node>/ota; it stays loaded while a transfer runs and drops itself when the
# transfer ends or the host goes quiet (what was received stays on flash: the transfer resumes).
#
# The release is one byte stream: the manifest (a JSON line: version, kind, file count; then a
# line per file: size, SHA-256, path; read a line at a time, never held whole in RAM), then
# each file in its order. Chunks carry their stream offset; the node takes only the next one
# (anything else is answered with the offset it wants, so the host rewinds or skips) and writes
# it straight from the receive buffer into the slot folder, hashing as it goes. A file whose hash
# differs is removed and asked for again. Nothing of the running version is touched: when every
# file is in, each is hashed again from flash, then ota.json (gt/otastate.py) is replaced in one
# rename and the node resets into the new version's trial (boot.py).
import asyncio
import gc
import hashlib
import json
import os
import time
from binascii import hexlify
from micropython import const
from gt import VERSION, otastate, unload

_BUF = const(1152)  # rx while a transfer runs: CHUNK data + the PUBLISH and chunk headers
CHUNK = const(1024)  # data bytes per chunk the node takes (told to the host in each ack)
_IDLE_MS = const(60000)  # the host silent this long: drop the transfer's RAM (flash keeps it)
_RESERVE = const(16384)  # flash left free after a release (the outbox spill, log.txt, boot.json)
STAGE = "ota/stage.json"
SLOTS = ("ota/0", "ota/1", "ota/2", "ota/3", "ota/4")

T = None  # the transfer running
_SMALL = None  # net's own receive buffer while a transfer's larger one is in use


class Transfer:
    def __init__(self, d, slot):
        self.d = d  # the begin message: id, v, mlen, msha, size, trial_s
        self.id = d["id"]
        self.slot = slot
        self.n = -1  # files in the release, once the manifest is in and checked
        self.cur = None  # (path, size, sha256 hex) of file i, read from the manifest
        self.off = 0  # the next stream byte wanted
        self.i = -1  # the file being written (-1: the manifest)
        self.start = 0  # where it starts in the stream
        self.f = self.h = None
        self.seen = time.ticks_ms()

    def end_of(self):
        return self.start + (self.d["mlen"] if self.i < 0 else self.cur[1])

    def path(self):
        return self.slot + "/" + ("manifest.json" if self.i < 0 else self.cur[0])

    def done(self):
        return self.i >= self.n >= 0


def _line(ln):
    size, sha, name = ln.rstrip("\n").split(" ", 2)
    return name, int(size), sha


def entries(t):
    """(path, size, sha256 hex) of each file, read from the manifest on flash line by line (the
    caller runs it to its end: the file closes there)."""
    with open(t.slot + "/manifest.json") as f:
        f.readline()
        for _ in range(t.n):
            yield _line(f.readline())


def _seek(t):
    # file t.i's manifest line into t.cur
    t.cur = None
    if t.i < t.n:
        with open(t.slot + "/manifest.json") as f:
            for _ in range(t.i + 2):
                ln = f.readline()
        t.cur = _line(ln)


def ack(net, st, why=None):
    t = T
    p = net.app.boot.ota
    return json.dumps(
        {
            "id": t.id if t else None,
            "st": st,
            "off": t.off if t else 0,
            "chunk": CHUNK,
            "fw": VERSION,
            "v": (p.get("cur") or {}).get("v"),
            "ota": p.get("st"),
            "why": why,
        }
    ).encode()


async def on_publish(net, first, b, e):
    """A PUBLISH on <root>/<node>/ota in net.rx[b:e]: handle it, answer on ota/ack, PUBACK it."""
    rx = net.rx
    o = b + 2 + (rx[b] << 8 | rx[b + 1])
    qos = first & 6
    pid = rx[o] << 8 | rx[o + 1] if qos else 0
    mv = memoryview(rx)[o + qos : e]
    try:
        if mv and mv[0] == 0:
            a = await _chunk(net, mv)
        else:
            a = await _control(net, json.loads(bytes(mv)))
    except (ValueError, KeyError, TypeError, IndexError) as x:
        a = ack(net, "err", "bad message: %r" % (x,))
    except Exception as x:  # the flash, or a bug: said to the host, never the link's end
        _close()
        a = ack(net, "err", "failed: %r" % (x,))
    mv = None
    if a is not None:
        await net.publish(b"ota/ack", a, 0)
    if pid:
        from gt import mqtt

        await net.take()
        try:
            await net.out(net.txm, mqtt.puback(net.tx, pid))
        finally:
            net.busy = False
    if T is None:
        _drop(net)


async def _control(net, d):
    global T, _SMALL
    op = d.get("op")
    if op == "status":
        return ack(net, "recv" if T else "idle")
    if op == "abort":
        if T is not None and T.id == d.get("id"):
            _close()
            otastate.rmtree(T.slot)
            _unstage()
            T = None
        return ack(net, "idle")
    if op != "begin":
        return ack(net, "err", "unknown op %r" % (op,))
    if T is not None and T.id == d["id"]:
        return ack(net, "recv")  # the host asks again (our ack was lost): where we are
    _close()
    T = None
    st = _stage()
    if st.get("id") == d["id"]:
        slot = st["slot"]  # a transfer cut by a reset or a lost link: resume it
    else:
        slot = _free_slot()
        otastate.rmtree(slot)
    need = d["size"] + _RESERVE - _used(slot)
    free = _free()
    if need > free:
        return ack(
            net,
            "refused",
            "not enough flash: the release needs %d KB, %d KB free" % (need // 1024, free // 1024),
        )
    _mkdirs(slot + "/x")
    with open(STAGE + ".tmp", "w") as f:
        json.dump({"id": d["id"], "slot": slot}, f)
    os.rename(STAGE + ".tmp", STAGE)
    t = Transfer(d, slot)
    T = t
    if len(net.rx) < _BUF:  # room for a chunk (kept only while the transfer runs)
        big = bytearray(_BUF)
        big[: net.n] = memoryview(net.rx)[: net.n]
        _SMALL = net.rx
        net.rx = big
    await _resume(t)
    asyncio.create_task(_idle(net, t))
    if t.done():
        return await _switch(net, t)  # all in before a reset: only the switch was left
    net.log.info(
        "ota", "receiving %s (%d bytes) into %s from %d" % (d["v"], d["size"], slot, t.off)
    )
    return ack(net, "recv")


async def _resume(t):
    # what the flash holds of this transfer already: whole files count, a part-written one is
    # hashed again and appended to
    while True:
        if t.done():
            return
        try:
            have = os.stat(t.path())[6]
        except OSError:
            have = 0
        end = t.end_of()
        if have == 0 or have > end - t.start:
            return
        t.h = hashlib.sha256()
        with open(t.path(), "rb") as f:
            buf = _scratch()
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                t.h.update(memoryview(buf)[:n])
        t.off = t.start + have
        if t.off < end:
            t.f = open(t.path(), "ab")
            return
        if _finish_file(t) is not True:
            return
        await asyncio.sleep_ms(0)


async def _chunk(net, mv):
    t = T
    if t is None or int.from_bytes(mv[1:5], "big") != t.id:
        return ack(net, "idle")  # a chunk of no transfer we run: the host begins again
    t.seen = time.ticks_ms()
    if int.from_bytes(mv[5:9], "big") != t.off:
        return ack(net, "recv")  # lost or repeated: the host sends from t.off
    data = mv[9:]
    while len(data):
        if t.f is None:
            _mkdirs(t.path())
            t.f = open(t.path(), "wb")
            t.h = hashlib.sha256()
        n = min(len(data), t.end_of() - t.off)
        part = data[:n]
        t.f.write(part)
        t.h.update(part)
        t.off += n
        data = data[n:]
        if t.off == t.end_of():
            why = _finish_file(t)
            if why is not True:
                return ack(net, "bad", why)
    if t.done():
        return await _switch(net, t)
    return ack(net, "recv")


def _finish_file(t):
    """The file at t.i is complete: check it; True, or why not (it is removed, asked again)."""
    if t.f is not None:
        t.f.close()
        t.f = None
    got = hexlify(t.h.digest()).decode()
    t.h = None
    want = t.d["msha"] if t.i < 0 else t.cur[2]
    if got != want:
        name = t.path()
        os.remove(name)
        t.off = t.start
        return "%s: SHA-256 %s, the manifest says %s" % (name, got[:16], want[:16])
    if t.i < 0:
        with open(t.path()) as f:
            m = json.loads(f.readline())
        t.n = m["n"]
        t.d["kind"] = m.get("kind", "full")
    t.start = t.end_of()
    t.i += 1
    _seek(t)
    # empty files have no chunk of their own
    while not t.done() and t.cur[1] == 0:
        _mkdirs(t.path())
        open(t.path(), "wb").close()
        t.i += 1
        _seek(t)
    return True


def _scratch():
    # what files are read back through (a resume's part-written file, the check before the switch):
    # net's own receive buffer, idle while the transfer's larger one is in use; a fresh 512 B at the
    # switch ran out once at 96 KB (srv_a, with the receiver's code loaded)
    return _SMALL if _SMALL is not None else bytearray(256)


def _sha_file(name, buf):
    h = hashlib.sha256()
    with open(name, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return hexlify(h.digest()).decode()


async def _switch(net, t):
    global T
    # every file again, as the flash holds it: what the new version boots is what was verified
    net.log.info("ota", "verifying %d files" % t.n)
    buf = _scratch()
    has_cfg = False
    bad = None
    for name, size, sha in entries(t):
        has_cfg = has_cfg or name == "config.json"
        if bad is None and _sha_file(t.slot + "/" + name, buf) != sha:
            bad = name
        await asyncio.sleep_ms(0)  # the sampler and the publisher run between files
    if bad is not None:
        otastate.rmtree(t.slot)
        _unstage()
        T = None  # (on_publish gives the receive buffer back)
        return ack(net, "bad", "%s changed on flash after it was written" % bad)
    p = otastate.read()
    cur = p.get("cur") or {"v": VERSION, "code": "", "cfg": ""}
    new = {
        "v": t.d["v"],
        "code": t.slot if t.d["kind"] == "full" else cur.get("code", ""),
        "cfg": t.slot if has_cfg else cur.get("cfg", ""),
    }
    otastate.save(
        {
            "cur": new,
            "prev": cur,
            "st": "trial",
            "tries": 0,
            "why": None,
            "trial_ms": t.d.get("trial_s", 120) * 1000,
        }
    )  # the switch: one rename
    _unstage()
    gc.collect()  # the transfer's RAM is all still held: the free heap at its fullest
    net.log.info(
        "ota",
        "switched to %s (%s), resetting into its trial; free=%d heap_min_free=%d"
        % (new["v"], t.slot, gc.mem_free(), net.app.heap_min),
    )
    a = ack(net, "switch")
    T = None
    asyncio.create_task(_reset(net.app))
    return a


async def _reset(app):
    import machine

    await asyncio.sleep_ms(500)  # the ack goes out first
    app.log.info("ota", "resetting after reading %d" % app.sampler.seq)
    try:
        app.outbox.flush()  # the readings in RAM survive on flash
    except OSError as e:
        app.log.warn("ota", "outbox not saved: %r" % e)
    app.boot.plan_reset()
    if app.net is not None:
        # the TLS socket closed here, not by its finaliser at the unix port's exit, where a
        # close_notify that cannot be written raised with the heap locked (a traceback in CI)
        app.net._close()
    machine.reset()


async def _idle(net, t):
    global T
    while T is t:
        await asyncio.sleep_ms(1000)
        if T is t and time.ticks_diff(time.ticks_ms(), t.seen) > _IDLE_MS:
            T = None
            _close(t)
            net.log.info("ota", "host silent: transfer paused at %d (kept on flash)" % t.off)
            _drop(net)


def _close(t=None):
    t = t or T
    if t is not None and t.f is not None:
        try:
            t.f.close()
        except OSError:
            pass
        t.f = None


def _give_back(net):
    # the bytes waiting in rx move along (a swap is safe at any await: the reader reads net.rx
    # afresh); while they do not fit (a chunk being handled), later
    global _SMALL
    if _SMALL is not None and net.n <= len(_SMALL):
        _SMALL[: net.n] = memoryview(net.rx)[: net.n]
        net.rx = _SMALL
        _SMALL = None
    return _SMALL is None


async def _give_back_later(net):
    # the module stays loaded until then: a transfer begun meanwhile finds the same state
    while T is None:
        if _give_back(net):
            _unload()
            return
        await asyncio.sleep_ms(50)


def _drop(net):
    if _give_back(net):
        _unload()
    else:
        asyncio.create_task(_give_back_later(net))


def _unload():
    unload("ota")
    gc.collect()


def _stage():
    try:
        with open(STAGE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _unstage():
    try:
        os.remove(STAGE)
    except OSError:
        pass


def _free_slot():
    k = otastate.keep(otastate.read())
    for s in SLOTS:
        if s not in k:
            return s
    raise OSError(0, "no free slot")


def _free():
    s = os.statvfs(os.getcwd())  # the flash filesystem: free blocks x block size
    return s[1] * s[4]


def _used(d):
    n = 0
    try:
        for e in os.ilistdir(d):
            q = d + "/" + e[0]
            n += _used(q) if e[1] == 0x4000 else os.stat(q)[6]
    except OSError:
        pass
    return n


def _mkdirs(path):
    # the folders above a file, one level at a time (MicroPython has no makedirs)
    i = path.find("/")
    while i > 0:
        try:
            os.mkdir(path[:i])
        except OSError:
            pass
        i = path.find("/", i + 1)
