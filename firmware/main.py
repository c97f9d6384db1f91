# main.py starts the node. Everything else lives in the gt package, which `gridtwin deploy`
# precompiles to .mpy so it loads fast and costs less RAM.
from gt import startup

go = startup.start()  # count the boot, load the config; in safe mode it never returns
startup = None  # what only boot needed leaves RAM before the node's code loads (None first:
del startup  # a deleted global keeps its value in the dict's table, see gt.unload)
if go:
    from gt import app
    from gt.log import log

    app.run(go[0], go[1], log)
