# boot.py runs first after every reset. It stays tiny on purpose: if anything later goes wrong,
# the REPL must still be reachable to fix it (mpremote, `make repl`).
#
# It also picks the firmware version (OTA, docs/ota.md). ota.json names the folders of the running
# version's code and config, and whether it is on trial. A trial that booted once and was not
# confirmed (a crash, a reset, the watchdog, safe mode, its deadline) is over: the previous
# version boots. So it lives here, outside every version, and never imports one.
import gc
import sys


def _ota():
    import json
    import os

    try:
        with open("ota.json") as f:
            p = json.load(f)
    except (OSError, ValueError):
        return  # never updated over the air: the firmware in the flash root
    if p.get("st") == "trial":
        if p.get("tries"):
            why = p.get("why")
            if not why:
                try:
                    with open("boot.json") as f:
                        why = json.load(f).get("crash")
                except (OSError, ValueError):
                    pass
            p["bad"] = p["cur"].get("v")
            p["cur"], p["prev"] = p.get("prev") or {}, None
            p["st"] = "rolled_back"
            p["why"] = why or "reset before it was confirmed"
        else:
            p["tries"] = 1
        with open("ota.tmp", "w") as f:
            json.dump(p, f)
        os.rename("ota.tmp", "ota.json")
    d = (p.get("cur") or {}).get("code")
    if d:
        # first on the import path, before the flash root ("", first on the ESP32)
        sys.path.insert(sys.path.index("") if "" in sys.path else 0, d)


try:
    _ota()
except Exception as e:  # the pointer never stops a boot: the flash root's firmware then
    sys.print_exception(e)
# None first: a deleted global keeps its value in the dict's table (see gt.unload), and on the
# chip main.py runs in these same globals
_ota = None
del _ota
gc.collect()
