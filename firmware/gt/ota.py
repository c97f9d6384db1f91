# Over-the-air updates, the node's side (protocol: docs/ota.md): the receiver of the chunks.
# gt/net.py hands it each chunk on <root>/<node>/ota (the OLED's pages out of RAM while an update
# runs: display.hold); it stays loaded while chunks come and leaves RAM when every file is in, or
# when net finds the host silent for a minute (what was received stays on flash: it resumes).
#
# The release is one byte stream: the manifest (a JSON line: version, kind, file count; then a
# line per file: size, SHA-256, path; read a line at a time, never held whole in RAM), then
# each file in its order. Chunks carry their stream offset; the node takes only the next one
# (anything else is answered with the offset it wants, so the host rewinds or skips) and writes
# it straight from net's own receive buffer into the slot folder, hashing as it goes. A file whose
# hash differs is removed and asked for again. Nothing of the running version is touched.
#
# RAM: EL1 at 96 KB has ~11-14 KB free with its OLED's pages out, and the whole receiver in one
# module (~11 KB of code) did not fit beside it. So each phase has its own module, one in RAM at a
# time: the control messages (status, begin, abort: gt/otactl.py, which makes the transfer's state,
# net.ota), this one for the chunks, the check and the switch (gt/otasw.py). A chunk fits the
# receive buffer net has anyway, and its answer is one small bytes object.
import gc
import hashlib
import json
import os
import time
from binascii import hexlify
from gt import display, unload


def low(t):
    # the free heap with everything of a transfer held, after a collection: the transfer's
    # fullest moments (begin, a file's last chunk, the switch) set what the node has left
    gc.collect()
    f = gc.mem_free()
    if f < t.low:
        t.low = f


def end(t):
    return t.start + (t.mlen if t.i < 0 else t.cur[1])


def path(t):
    return t.slot + "/" + ("manifest.json" if t.i < 0 else t.cur[0])


def done(t):
    return t.i >= t.n >= 0


def answer(t, st, why=None):
    """The answer to a chunk (and to the switch): where the transfer is."""
    if why is None:
        return b'{"id":%d,"st":"%s","off":%d}' % (t.id, st, t.off)
    return json.dumps({"id": t.id, "st": st, "off": t.off, "why": why}).encode()


async def on_publish(net, o, e):
    """A chunk in net.rx[o:e] (0x00, id, stream offset, data): the answer."""
    t = net.ota
    rx = net.rx
    if t is None or int.from_bytes(rx[o + 1 : o + 5], "big") != t.id:
        return b'{"id":null,"st":"idle","off":0}'  # no transfer of ours: the host begins again
    t.seen = time.ticks_ms()  # (net drops a transfer whose host is silent for a minute)
    if int.from_bytes(rx[o + 5 : o + 9], "big") != t.off:
        return answer(t, "recv")  # lost or repeated: the host sends from t.off
    mv = memoryview(rx)
    o += 9
    try:
        while o < e:
            if t.f is None:
                _mkdirs(path(t))
                t.f = open(path(t), "wb")
                t.h = hashlib.sha256()
            k = min(e - o, end(t) - t.off)
            t.f.write(mv[o : o + k])
            t.h.update(mv[o : o + k])
            t.off += k
            o += k
            if t.off == end(t):
                low(t)  # a file's last chunk: the file open, its hash, the packet in rx
                why = finish(t)
                if why is not True:
                    return answer(t, "bad", why)
    except MemoryError:
        # a transient refusal: what is on flash stays; the host begins again later, it resumes
        stop(net, t)
        return answer(t, "busy", "out of RAM")
    except OSError as x:
        stop(net, t)
        return answer(t, "err", "failed: %r" % (x,))
    if done(t):  # every file in: the host asks for the switch (gt/otasw.py) next
        unload("ota")
    return answer(t, "recv")


def resume(t):
    """What the flash holds of transfer t already (gt/otactl.py, at begin): whole files count, a
    part-written one is hashed again and appended to."""
    while not done(t):
        name = path(t)
        try:
            have = os.stat(name)[6]
        except OSError:
            return
        e = end(t)
        if have == 0 or have > e - t.start:
            return
        t.h = hashlib.sha256()
        with open(name, "rb") as f:
            while True:
                n = f.readinto(t.buf)
                if not n:
                    break
                t.h.update(memoryview(t.buf)[:n])
        t.off = t.start + have
        if t.off < e:
            t.f = open(name, "ab")
            return
        t.f = open(name, "rb")  # (finish closes it)
        if finish(t) is not True:
            return


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
            m = json.loads(f.readline())
        t.n = m["n"]
        t.kind = m.get("kind", "full")
    t.start = end(t)
    t.i += 1
    _seek(t)
    # empty files have no chunk of their own
    while not done(t) and t.cur[1] == 0:
        _mkdirs(path(t))
        open(path(t), "wb").close()
        t.i += 1
        _seek(t)
    return True


def _seek(t):
    # file t.i's manifest line (size, SHA-256, path) into t.cur: (path, size, sha256 hex)
    t.cur = None
    if t.i < t.n:
        with open(t.slot + "/manifest.json") as f:
            for _ in range(t.i + 2):
                ln = f.readline()
        size, sha, name = ln.rstrip("\n").split(" ", 2)
        t.cur = (name, int(size), sha)


def stop(net, t):
    """Transfer t ends here (out of RAM, the flash failed, the host silent): its RAM goes (its
    file closed), the receiver and the OLED hold with it; what it wrote stays for a resume."""
    if t.f is not None:
        try:
            t.f.close()
        except OSError:
            pass
        t.f = None
    net.ota = None
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
