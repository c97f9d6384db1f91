# boot.py runs first after every reset. It stays tiny on purpose: if anything later goes wrong,
# the REPL must still be reachable to fix it (mpremote, `make repl`).
import gc

gc.collect()
