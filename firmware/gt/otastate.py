# The OTA pointer (ota.json, docs/ota.md): which folders hold the running version's code and
# config, which version came before, and the trial. boot.py reads it before anything of the
# firmware loads (and rolls a failed trial back); this module is what the running firmware does
# with it: the config's path at boot, the trial and its failure (the confirmation and the versions
# it removes: gt/otaprune.py). Loaded while needed.
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


async def trial(app):
    """Confirm the trial once the node is healthy (config valid: it got here; broker connected,
    birth out, a reading taken) within its deadline; else fail it. The confirmation's code
    (gt/otaprune.py) loads at the end: this task runs through the trial boot's first TLS connect,
    the node's tightest moment for RAM (EL1 ran out there with the whole of it loaded)."""
    import asyncio
    import time

    p = app.boot.ota
    ms = p.get("trial_ms") or 120000
    t0 = time.ticks_ms()
    net = app.net
    while not (net is not None and net.up and not net.birth and app.sampler.seq):
        if time.ticks_diff(time.ticks_ms(), t0) > ms:
            why = "no broker connection" if net is None or not net.up else "no reading"
            fail(p, "not healthy within %d s: %s" % (ms // 1000, why), app.log)
        await asyncio.sleep_ms(250)
    from gt import otaprune, unload

    otaprune.confirm(app, save)
    otaprune = None
    unload("otaprune")
