# Over-the-air updates: a trial confirmed, and the versions neither kept removed (docs/ota.md).
# Loaded by gt/otastate.py's trial once the node is healthy, and by the receiver to clear a slot;
# apart from gt/otastate.py so that the trial's wait holds less RAM through the TLS connect.
import os


def confirm(app, save):
    """The node is healthy: the trial is confirmed (save: gt/otastate.py's), the versions neither
    kept are removed."""
    p = app.boot.ota
    p["st"] = "confirmed"
    p["tries"] = 0
    p["why"] = None
    save(p)
    try:
        prune(p)
    except Exception as e:  # (MemoryError too) the confirmation stands; the next one prunes
        app.log.warn("ota", "prune: %r" % (e,))
    app.log.info("ota", "confirmed %s" % p["cur"].get("v"), persist=True)
    app.net.rebirth()  # the host learns it from the birth


def keep(p):
    """The folders the running and the previous version use (the two versions kept)."""
    k = set()
    for v in (p.get("cur"), p.get("prev")):
        if v:
            k.add(v.get("code") or "")
            k.add(v.get("cfg") or "")
    return k


def prune(p, slots=("ota/0", "ota/1", "ota/2", "ota/3", "ota/4")):
    # exactly two versions on flash: every slot neither of them uses goes, and so does the copy
    # deploy put in the flash root once neither uses it (called after the confirmed pointer is
    # saved, so no boot from here on reads the root's; a cut midway leaves a part of it, never
    # booted, which the next confirmation removes). boot.py, main.py, ota.json and the node's
    # identity are outside every version and stay.
    k = keep(p)
    for s in slots:
        if s not in k:
            rmtree(s)
    for v in (p.get("cur"), p.get("prev")):
        if not (v and v.get("code")):
            break
    else:
        rmtree("gt")
    for v in (p.get("cur"), p.get("prev")):
        if not (v and v.get("cfg")):
            return
    try:
        os.remove("config.json")
    except OSError:
        pass


def rmtree(d):
    try:
        it = list(os.ilistdir(d))
    except OSError:
        return
    for e in it:
        q = d + "/" + e[0]
        if e[1] == 0x4000:
            rmtree(q)
        else:
            os.remove(q)
    os.rmdir(d)
