# Boot sequence: count the boot, load and validate the config, then hand (config, boot state) to
# main.py, which runs the node — or explain in safe mode why not (start() then never returns).
# After `crash_limit` crash boots in a row the node stays in safe mode and says why.
import gc
from gt import VERSION, safemode, unload
from gt.bootstate import BootState
from gt.log import log


def _load_config(path):
    # The validator and its schema are needed once; dropping the module afterwards gives their
    # RAM back to the running node. What the node keeps (the sensor and role tables) is imported
    # first, so it does not end up scattered among the validator's garbage.
    from gt import sensors, roles  # noqa: F401
    from gt import config

    try:
        return config.load(path), None
    except config.ConfigError as e:
        return None, str(e)
    finally:
        del config
        unload("config")
        unload("drivers.options")  # the sensor types' config rows, loaded by the validator
        gc.collect()


def start():
    boot = BootState()
    crashed = boot.begin()
    log.info(
        "boot",
        "GridTwin %s boot=%d reset=%s crash_streak=%d"
        % (VERSION, boot.boots, boot.cause, boot.streak),
        persist=True,
    )
    if crashed:
        log.warn("boot", "previous boot crashed: %s" % boot.last_crash)
    # which version's config (an update over the air may have brought one: gt/otastate.py)
    from gt import otastate

    boot.ota = p = otastate.read()
    cfg, problem = _load_config(otastate.cfg_path(p))
    if (problem or boot.streak >= cfg["crash_limit"]) and p.get("st") == "trial":
        # a version on trial never holds the node in safe mode: reset, boot.py rolls it back
        otastate.fail(p, problem or "safe mode: %s" % boot.last_crash, log)
    otastate = None
    unload("otastate")
    if problem:
        return safemode.run(problem, log)
    if boot.streak >= cfg["crash_limit"]:
        # the config is good, so the LED and the OLED can say it too (issue #2: the reason on the
        # OLED); neither may stop safe mode from holding the node still
        hw = disp = None
        try:
            from gt.hw import Hardware
            from gt import display

            hw = Hardware(cfg["pins"])
            disp = display.open(cfg, hw, log)
        except Exception as e:
            log.warn("safe", "no LED/display: %r" % e)
        return safemode.run(
            "crashed %d boots in a row (last: %s); fix the cause, then press reset"
            % (boot.streak, boot.last_crash),
            log,
            hw,
            disp,
            [
                "crashed %d boots" % boot.streak,
                "in a row; last:",
                boot.last_crash,
                "fix it, then",
                "press reset",
            ],
        )
    from gt import display

    display.reserve(cfg)
    # Boot's code leaves RAM before the node's is loaded: main.py drops this module (and safe
    # mode's) and runs the app with what start() returns.
    unload("safemode")
    unload("startup")
    return cfg, boot
