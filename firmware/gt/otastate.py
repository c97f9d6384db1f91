# The OTA pointer (ota.json, docs/ota.md): which folders hold the running version's code and
# config, which version came before, and the trial. boot.py reads it before anything of the
# firmware loads (and rolls a failed trial back); this module is what the running firmware does
# with it: the config's path at boot, the trial's confirmation or failure (the wait for it:
# gt/otatrial.py). Loaded while needed.
import json
import os

PATH = "ota.json"


def read():
    try:
        with open(PATH) as f:
            p = json.load(f)
        return p if isinstance(p, dict) else {}
    except (OSError, ValueError):
        return {}  # never updated over the air: the version in the flash root


def save(p):
    # the whole file or the old one: a power cut mid-write leaves ota.tmp, never half a pointer
    with open(PATH + ".tmp", "w") as f:
        json.dump(p, f)
    os.rename(PATH + ".tmp", PATH)


def cfg_path(p):
    c = (p.get("cur") or {}).get("cfg")
    return c + "/config.json" if c else "config.json"


def fail(p, why, log):
    """The trial failed (config invalid, not healthy in time): say why, reset; boot.py then
    boots the previous version."""
    p["why"] = why[:120]
    try:
        save(p)
    except OSError:
        pass
    log.error("ota", "trial of %s failed: %s" % ((p.get("cur") or {}).get("v"), why))
    import machine

    machine.reset()


def confirm(app):
    """The node is healthy: the trial is confirmed, the versions neither kept are removed."""
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
