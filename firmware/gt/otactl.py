# Over-the-air updates: the control messages on <root>/<node>/ota (status, begin, abort) and the
# node's full answers (docs/ota.md). gt/ota.py, the receiver, loads this module for each of them
# and drops it after, so none of it is in RAM while the chunks come.
#
# begin picks a slot (or the one a transfer cut by a reset or a lost link was going into: it
# resumes), refuses up front what the flash has no room for, and counts what the flash holds of the
# transfer already: whole files count, a part-written one is hashed again and appended to.
import gc
import hashlib
import json
import os
from micropython import const
from gt import VERSION

_RESERVE = const(16384)  # flash left free after a release (the outbox spill, log.txt, boot.json)
_ROOM = const(3072)  # free heap a transfer needs beyond its state (the check's code, a file)
STAGE = "ota/stage.json"  # the transfer being received: what a resume after a reset continues
SLOTS = ("ota/0", "ota/1", "ota/2", "ota/3", "ota/4")


class Transfer:
    # a transfer's state (no methods: nothing of this module stays in RAM with it); gt/ota.py
    # reads and moves it
    pass


def answer(net, t, st, why):
    """The node's full answer: where it is, the chunk size it takes, its versions."""
    p = net.app.boot.ota
    return json.dumps(
        {
            "id": t.id if t else None,
            "st": st,
            "off": t.off if t else 0,
            # a chunk fills the receive buffer: less the PUBLISH's header (3, the topic
            # <root>/<node>/ota and its length: 2 + len + 3) and the chunk's own 9
            "chunk": len(net.rx) - len(net.root) - 17,
            "fw": VERSION,
            "v": (p.get("cur") or {}).get("v"),
            "ota": p.get("st"),
            "why": why,
        }
    ).encode()


def control(net, msg, t, ota):
    """(st, why, the transfer running) for control message msg; t is the one running now, ota
    the receiver's (done, path, finish)."""
    d = json.loads(msg)
    op = d.get("op")
    if op == "status":
        return ("recv" if t else "idle"), None, t
    if op == "abort":
        if t is not None and t.id == d.get("id"):
            _close(t)
            _rmtree(t.slot)
            _unstage()
            t = None
        return "idle", None, t
    if op != "begin":
        return "err", "unknown op %r" % (op,), t
    if t is not None and t.id == d["id"]:
        return "recv", None, t  # the host asks again (our answer was lost): where we are
    _close(t)
    t = None
    gc.collect()
    if gc.mem_free() < _ROOM:
        return "busy", "out of RAM: %d B free, a transfer needs %d" % (gc.mem_free(), _ROOM), None
    st = _stage()
    if st.get("id") == d["id"]:
        slot = st["slot"]  # a transfer cut by a reset or a lost link: resume it
    else:
        slot = _free_slot(net.app.boot.ota)
        _rmtree(slot)
    need = d["size"] + _RESERVE - _used(slot)
    free = _free()
    if need > free:
        why = "not enough flash: the release needs %d KB, %d KB free" % (need // 1024, free // 1024)
        return "refused", why, None
    for p in ("ota", slot):
        try:
            os.mkdir(p)
        except OSError:
            pass
    with open(STAGE + ".tmp", "w") as f:
        json.dump({"id": d["id"], "slot": slot}, f)
    os.rename(STAGE + ".tmp", STAGE)
    t = Transfer()
    t.id = d["id"]
    t.v = d["v"]
    t.mlen = d["mlen"]
    t.msha = d["msha"]
    t.trial = d.get("trial_s", 120)
    t.kind = "full"
    t.slot = slot
    t.n = -1  # files in the release, once the manifest is in and checked
    t.cur = None  # (path, size, sha256 hex) of file i, from the manifest
    t.off = 0  # the next stream byte wanted
    t.i = -1  # the file being written (-1: the manifest)
    t.start = 0  # where it starts in the stream
    t.f = t.h = t.seen = None
    t.buf = bytearray(256)  # files read back through it (a resume, the check before the switch)
    gc.collect()
    t.low = gc.mem_free()  # the least free heap at the transfer's fullest moments: here (this
    # code, the receiver and the transfer's buffer in), a file's last chunk, the switch (gt/ota.py)
    st = _resume(t, *ota)
    if st == "recv":
        net.log.info(
            "ota", "receiving %s (%d bytes) into %s from %d" % (t.v, d["size"], slot, t.off)
        )
    return st, None, t


def _resume(t, done, path, finish):
    # what the flash holds of this transfer already
    while not done(t):
        name = path(t)
        try:
            have = os.stat(name)[6]
        except OSError:
            have = 0
        end = t.start + (t.mlen if t.i < 0 else t.cur[1])
        if have == 0 or have > end - t.start:
            return "recv"
        t.h = hashlib.sha256()
        with open(name, "rb") as f:
            while True:
                n = f.readinto(t.buf)
                if not n:
                    break
                t.h.update(memoryview(t.buf)[:n])
        t.off = t.start + have
        if t.off < end:
            t.f = open(name, "ab")
            return "recv"
        t.f = open(name, "rb")  # (finish closes it)
        if finish(t) is not True:
            return "recv"
    return "done"


def _close(t):
    if t is not None and t.f is not None:
        try:
            t.f.close()
        except OSError:
            pass
        t.f = None


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


def _rmtree(d):
    try:
        os.stat(d)
    except OSError:
        return  # (the usual case: otastate's code stays out of RAM)
    from gt import otastate

    otastate.rmtree(d)


def _free_slot(p):
    # a slot neither the running nor the previous version uses (the two kept: otastate.keep)
    k = set()
    for v in (p.get("cur"), p.get("prev")):
        if v:
            k.add(v.get("code") or "")
            k.add(v.get("cfg") or "")
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
