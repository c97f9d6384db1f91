# Over-the-air updates: the switch (docs/ota.md). The host asks for it (0x01, id) once every file
# of a transfer is in; gt/net.py loads this module for that message alone (the receiver of the
# chunks is out of RAM by then). Each file is hashed again as the flash holds it (what the new
# version boots is what was verified), then ota.json (gt/otastate.py) is replaced in one rename
# and the node resets into the new version's trial (boot.py).
import asyncio
import gc
import hashlib
import json
import os
from binascii import hexlify
from gt import VERSION


async def on_publish(net, o, e):
    """The host asks for the switch (0x01, id in net.rx[o:e]): the answer (as gt/ota.py's)."""
    t = net.ota
    if t is None or int.from_bytes(net.rx[o + 1 : o + 5], "big") != t.id:
        return b'{"id":null,"st":"idle","off":0}'  # no transfer of ours: the host begins again
    if not t.i >= t.n >= 0:
        return b'{"id":%d,"st":"recv","off":%d}' % (t.id, t.off)  # not all in yet
    gc.collect()
    if gc.mem_free() < t.low:
        t.low = gc.mem_free()  # the switch's fullest moment: this code, the transfer's state
    try:
        why = await _switch(net, t)
    except MemoryError:
        why = "out of RAM"  # (what is on flash stays: asked again, it switches then)
        st = "busy"
    else:
        st = "switch" if why is None else "bad"
    if st != "busy":
        net.ota = None  # (a file that changed on flash: the host begins again, afresh)
    if why is None:
        return b'{"id":%d,"st":"%s","off":%d}' % (t.id, st, t.off)
    return json.dumps({"id": t.id, "st": st, "off": t.off, "why": why}).encode()


async def _switch(net, t):
    net.log.info("ota", "verifying %d files" % t.n)
    has_cfg = False
    bad = None
    with open(t.slot + "/manifest.json") as m:
        m.readline()
        for _ in range(t.n):
            _size, sha, name = m.readline().rstrip("\n").split(" ", 2)
            has_cfg = has_cfg or name == "config.json"
            if bad is None and _sha_file(t.slot + "/" + name, t.buf) != sha:
                bad = name
            await asyncio.sleep_ms(0)  # the sampler and the publisher run between files
    if bad is not None:
        from gt import otaprune

        otaprune.rmtree(t.slot)
        _unstage()
        return "%s changed on flash after it was written" % bad
    p = net.app.boot.ota  # the pointer as it is (read at boot, kept current by the trial)
    cur = p.get("cur") or {"v": VERSION, "code": "", "cfg": ""}
    new = {
        "v": t.v,
        "code": t.slot if t.kind == "full" else cur.get("code", ""),
        "cfg": t.slot if has_cfg else cur.get("cfg", ""),
    }
    _save(
        {
            "cur": new,
            "prev": cur,
            "st": "trial",
            "tries": 0,
            "why": None,
            "trial_ms": t.trial * 1000,
        }
    )
    _unstage()
    gc.collect()
    net.log.info(
        "ota",
        "switched to %s (%s), resetting into its trial; free=%d low=%d heap_min_free=%d"
        % (new["v"], t.slot, gc.mem_free(), t.low, net.app.heap_min),
    )
    asyncio.create_task(_reset(net.app))
    return None


def _save(p):
    # the switch: ota.json replaced whole in one rename, as gt/otastate.py's save (not imported
    # for it: its ~2.7 KB beside the receiver were what EL1 did not have at this moment)
    with open("ota.tmp", "w") as f:
        json.dump(p, f)
    os.rename("ota.tmp", "ota.json")


def _unstage():
    try:
        os.remove("ota/stage.json")  # (gt/otactl.py's STAGE)
    except OSError:
        pass


def _sha_file(name, buf):
    h = hashlib.sha256()
    with open(name, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return hexlify(h.digest()).decode()


async def _reset(app):
    import machine

    await asyncio.sleep_ms(500)  # the ack goes out first
    # the readings in RAM go out before the reset rather than to flash (up to 3 s): a spill to
    # replay loads its code (gt/spool.py) beside the trial boot's first TLS connect, which pv1
    # then did not have the RAM for in one demo fleet run (it connected at the next try)
    for _ in range(30):
        if not len(app.outbox):
            break
        await asyncio.sleep_ms(100)
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
