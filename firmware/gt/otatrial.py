# The trial of a version updated over the air (docs/ota.md): confirmed once the node is healthy
# (config valid: it got here; broker connected, birth out, a reading taken) within its deadline,
# else failed (boot.py then boots the previous version). This task runs through the trial boot's
# first TLS connect, the node's tightest moment for RAM, so it is only the wait: the pointer's
# code (gt/otastate.py, ~2.7 KB, which EL1 did not have beside that connect) is loaded at the end.
import asyncio
import time


async def watch(app):
    p = app.boot.ota
    ms = p.get("trial_ms") or 120000
    t0 = time.ticks_ms()
    net = app.net
    while not (net is not None and net.up and not net.birth and app.sampler.seq):
        if time.ticks_diff(time.ticks_ms(), t0) > ms:
            why = "no broker connection" if net is None or not net.up else "no reading"
            from gt import otastate

            otastate.fail(p, "not healthy within %d s: %s" % (ms // 1000, why), app.log)
        await asyncio.sleep_ms(250)
    from gt import otastate, unload

    otastate.confirm(app)
    otastate = None
    unload("otastate")
