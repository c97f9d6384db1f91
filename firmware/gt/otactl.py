# Over-the-air updates: the control messages on <root>/<node>/ota (status, begin, abort) and the
# node's full answers (docs/ota.md). gt/net.py loads this module for each of them and drops it
# after, so none of it is in RAM while the chunks come.
#
# begin picks a slot (or the one a transfer cut by a reset or a lost link was going into: it
# resumes, gt/ota.py counting what the flash holds), refuses up front what the flash has no room
# for, and makes the transfer's state (net.ota), which the receiver and the switch then use.
import gc
import json
import os
import time
from micropython import const
from gt import VERSION, display, unload

_RESERVE = const(16384)  # flash left free after a release (the outbox spill, log.txt, boot.json)
_ROOM = const(3072)  # free heap a transfer needs beyond its state (the check's code, a file)
STAGE = "ota/stage.json"  # the transfer being received: what a resume after a reset continues
SLOTS = ("ota/0", "ota/1", "ota/2", "ota/3", "ota/4")


class Transfer:
    # a transfer's state, kept on net.ota while it runs (no methods: nothing of this module stays
    # in RAM with it); gt/ota.py and gt/otasw.py read and move it
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


async def on_publish(net, o, e):
    """A control message (JSON) in net.rx[o:e]: the answer."""
    try:
        st, why = control(net, json.loads(bytes(net.rx[o:e])))
    except MemoryError:
        # a transient refusal: what is on flash stays; the host begins again later, it resumes
        _close(net.ota)
        net.ota = None
        gc.collect()
        st, why = "busy", "out of RAM"
    except (ValueError, KeyError, TypeError, IndexError) as x:
        st, why = "err", "bad message: %r" % (x,)
    except OSError as x:  # the flash
        _close(net.ota)
        net.ota = None
        st, why = "err", "failed: %r" % (x,)
    return answer(net, net.ota, st, why)


def control(net, d):
    """(st, why) for control message d; the transfer running is net.ota."""
    t = net.ota
    op = d.get("op")
    if op == "status":
        return ("recv" if t else "idle"), None
    if op == "abort":
        if t is not None and t.id == d.get("id"):
            _close(t)
            net.ota = None
            _rmtree(t.slot)
            try:
                os.remove(STAGE)
            except OSError:
                pass
        return "idle", None
    if op != "begin":
        return "err", "unknown op %r" % (op,)
    if t is not None and t.id == d["id"]:
        t.seen = time.ticks_ms()
        return "recv", None  # the host asks again (our answer was lost): where we are
    _close(t)
    net.ota = t = None
    gc.collect()
    if gc.mem_free() < _ROOM:
        return "busy", "out of RAM: %d B free, a transfer needs %d" % (gc.mem_free(), _ROOM)
    try:
        with open(STAGE) as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = {}
    if st.get("id") == d["id"]:
        slot = st["slot"]  # a transfer cut by a reset or a lost link: resume it
    else:
        slot = _free_slot(net.app.boot.ota)
        _rmtree(slot)
    st = None
    need = d["size"] + _RESERVE - _used(slot)
    free = os.statvfs(os.getcwd())  # the flash filesystem: free blocks x block size
    free = free[1] * free[4]
    if need > free:
        why = "not enough flash: the release needs %d KB, %d KB free" % (need // 1024, free // 1024)
        return "refused", why
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
    t.slot = slot
    t.n = -1  # files in the release, once the manifest is in and checked (and its kind)
    t.off = 0  # the next stream byte wanted
    t.i = -1  # the file being written (-1: the manifest; then cur: its path, size, sha256 hex)
    t.start = 0  # where it starts in the stream
    t.f = None  # the file being written (h: its hash)
    t.seen = time.ticks_ms()  # the host's last message (net drops a transfer silent for 60 s)
    # what files are read back through (a resume, the check before the switch): the OLED's frame
    # buffer while the display is held (display.hold: its pages are out of RAM), else 256 B
    t.buf = display._fb or bytearray(256)
    t.low = 1 << 30  # the least free heap at the transfer's fullest moments (gt/ota.py's low)
    net.ota = t
    size = d["size"]
    d = None
    try:
        os.stat(slot + "/manifest.json")
    except OSError:
        pass
    else:  # the flash holds some of it already: the receiver counts it (loaded for that alone)
        from gt import ota

        ota.resume(t)
        ota = None
        unload("ota")
    gc.collect()
    t.low = gc.mem_free()  # begin's fullest moment: this code and the transfer's state in
    net.log.info("ota", "receiving %s (%d bytes) into %s from %d" % (t.v, size, slot, t.off))
    return "recv", None


def _close(t):
    # a transfer replaced, aborted or dropped: its file closed
    if t is not None and t.f is not None:
        try:
            t.f.close()
        except OSError:
            pass
        t.f = None


def _rmtree(d):
    try:
        os.stat(d)
    except OSError:
        return  # (the usual case: otaprune's code stays out of RAM)
    from gt import otaprune

    otaprune.rmtree(d)


def _free_slot(p):
    # a slot neither the running nor the previous version uses (the two kept: otaprune.keep)
    k = set()
    for v in (p.get("cur"), p.get("prev")):
        if v:
            k.add(v.get("code") or "")
            k.add(v.get("cfg") or "")
    for s in SLOTS:
        if s not in k:
            return s
    raise OSError(0, "no free slot")


def _used(d):
    n = 0
    try:
        for e in os.ilistdir(d):
            q = d + "/" + e[0]
            n += _used(q) if e[1] == 0x4000 else os.stat(q)[6]
    except OSError:
        pass
    return n
