# Over-the-air updates: the switch (docs/ota.md). gt/ota.py loads it when every file of a transfer
# is in: each file is hashed again as the flash holds it (what the new version boots is what was
# verified), then ota.json (gt/otastate.py) is replaced in one rename and the node resets into the
# new version's trial (boot.py).
import asyncio
import gc
import hashlib
import json
import os
from binascii import hexlify
from gt import VERSION


async def switch(net, t, line):
    """("switch", None) once switched (the reset follows), or ("bad", why)."""
    net.log.info("ota", "verifying %d files" % t.n)
    has_cfg = False
    bad = None
    with open(t.slot + "/manifest.json") as m:
        m.readline()
        for _ in range(t.n):
            name, _size, sha = line(m.readline())
            has_cfg = has_cfg or name == "config.json"
            if bad is None and _sha_file(t.slot + "/" + name, t.buf) != sha:
                bad = name
            await asyncio.sleep_ms(0)  # the sampler and the publisher run between files
    if bad is not None:
        from gt import otastate

        otastate.rmtree(t.slot)
        _unstage()
        return "bad", "%s changed on flash after it was written" % bad
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
    return "switch", None


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
