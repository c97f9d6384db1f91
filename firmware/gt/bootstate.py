# Boot bookkeeping on flash (boot.json): how many times the node booted, why it reset, and how many
# boots in a row ended in a crash. A boot counts as a crash when it ended in an unhandled exception
# or a watchdog reset; it stops counting once the node has run `stable_ms` without trouble, and a
# power-on or a deliberate reboot starts the count again. Enough crashes in a row -> safe mode.
import json
import os
import machine

PATH = "boot.json"
CAUSES = {
    machine.PWRON_RESET: "power-on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}


class BootState:
    def __init__(self, path=PATH):
        self.path = path
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError):
            d = {}
        self.boots = d.get("boots", 0)
        self.streak = d.get("streak", 0)
        self.last_crash = d.get("crash")  # why the previous boot crashed, if it did
        self.planned = d.get("planned", False)
        self.cause_code = machine.reset_cause()
        self.cause = CAUSES.get(self.cause_code, "unknown")
        self.boot_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        self.ota = {}  # the OTA pointer (gt/otastate.py), which startup reads

    def begin(self):
        """Count this boot; return True when the previous boot ended in a crash."""
        crashed = self.last_crash is not None or (
            self.cause_code == machine.WDT_RESET and not self.planned
        )
        if crashed:
            self.streak += 1
            if self.last_crash is None:
                self.last_crash = "watchdog reset"
        elif self.cause_code != machine.DEEPSLEEP_RESET:
            self.streak = 0
        self.boots += 1
        self._save(crash=None, planned=False)
        return crashed

    def stable(self):
        # the node ran long enough: a later crash starts a new streak
        if self.streak:
            self.streak = 0
            self._save()

    def crash(self, why):
        # called just before the firmware resets itself after an unhandled exception
        self._save(crash=why[:120])

    def plan_reset(self):
        # a reboot someone asked for is not a crash
        self._save(planned=True)

    def clear(self):
        """From the REPL after fixing a crash: `from gt import bootstate;
        bootstate.BootState().clear()`."""
        self.streak = 0
        self._save(crash=None)

    def _save(self, **extra):
        d = {"boots": self.boots, "streak": self.streak}
        d.update(extra)
        try:
            with open(self.path, "w") as f:
                json.dump(d, f)
        except OSError:
            pass
