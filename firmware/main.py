# main.py starts the node. Everything else lives in the gt package, which `gridtwin deploy`
# precompiles to .mpy so it loads fast and costs less RAM.
try:
    from gt import startup

    go = startup.start()  # count the boot, load the config; in safe mode it never returns
    startup = None  # what only boot needed leaves RAM before the node's code loads (None first:
    del startup  # a deleted global keeps its value in the dict's table, see gt.unload)
    if go:
        from gt import app
        from gt.log import log
except Exception as e:
    # A version that cannot even start (an update over the air on its trial, docs/ota.md): say
    # why in ota.json and reset, so boot.py boots the previous one. Otherwise the REPL stays.
    import json
    import os
    import sys

    sys.print_exception(e)
    try:
        with open("ota.json") as f:
            p = json.load(f)
    except (OSError, ValueError):
        p = {}
    if p.get("st") != "trial":
        raise
    p["why"] = ("crash at start: %r" % (e,))[:120]
    with open("ota.tmp", "w") as f:
        json.dump(p, f)
    os.rename("ota.tmp", "ota.json")
    import machine

    machine.reset()
if go:
    app.run(go[0], go[1], log)
