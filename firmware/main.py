# main.py starts the node. Everything else lives in the gt package, which `gridtwin deploy`
# precompiles to .mpy so it loads fast and costs less RAM.
from gt import startup

startup.start()
