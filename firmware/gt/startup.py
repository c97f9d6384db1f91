# Boot sequence: count the boot, load and validate the config, then run the node — or explain in
# safe mode why not. An unhandled exception is logged, counted as a crash and ends in a reset;
# after `crash_limit` crash boots in a row the node stays in safe mode and says why.
import time
import machine
from gt import VERSION, config, safemode
from gt.bootstate import BootState
from gt.log import log


def start():
    boot = BootState()
    crashed = boot.begin()
    log.info("boot", "GridTwin %s boot=%d reset=%s crash_streak=%d" % (
        VERSION, boot.boots, boot.cause, boot.streak), persist=True)
    if crashed:
        log.warn("boot", "previous boot crashed: %s" % boot.last_crash)
    try:
        cfg = config.load()
    except config.ConfigError as e:
        return safemode.run(str(e), log)
    if boot.streak >= cfg["crash_limit"]:
        return safemode.run("crashed %d boots in a row (last: %s); fix the cause, then press reset"
                            % (boot.streak, boot.last_crash), log)
    from gt import app

    try:
        app.run(cfg, boot, log)
    except Exception as e:  # KeyboardInterrupt and SystemExit pass: Ctrl-C gives the REPL
        log.exc("crash", e)
        boot.crash(repr(e))
        time.sleep_ms(1000)
        machine.reset()
