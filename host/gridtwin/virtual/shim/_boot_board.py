# What the ESP32's runtime does after a reset: run boot.py, then main.py, from the flash
# filesystem (the current folder), falling back to the firmware folder (GT_FIRMWARE) for files not
# deployed there. The board runner (gridtwin.vboard) starts the interpreter on this file.
import os
import _world

_world.settle_heap()


def _find(name):
    for d in ("", os.getenv("GT_FIRMWARE") or ""):
        p = (d + "/" + name) if d else name
        try:
            os.stat(p)
            return p
        except OSError:
            pass


try:
    # after a soft reset into the raw REPL a board runs boot.py but not main.py
    for _f in ("boot.py",) if os.getenv("GT_SKIP_MAIN") else ("boot.py", "main.py"):
        _p = _find(_f)
        if _p:
            # from the file, as the ESP32's runtime runs it: the lexer reads it in small pieces.
            # (Its source read whole and passed to exec stayed on the heap for the whole run:
            # main.py's 1.2 KB charged to the firmware's budget, which a real board never pays.)
            execfile(_p, {"__name__": "__main__", "__file__": _p})  # noqa: F821 (MicroPython)
except KeyboardInterrupt:
    # Ctrl-C (or the world's stop time): the program ends and, with -i, the REPL takes over
    print("KeyboardInterrupt")
