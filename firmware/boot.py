# boot.py runs first after every reset. It stays tiny on purpose: if anything later goes wrong,
# the REPL must still be reachable to fix it (mpremote, `make repl`).
import gc

gc.collect()
# Collect after every 4 KB allocated instead of when the heap is full. Without a threshold the
# allocator walks the whole free heap between collections, scattering what boot keeps (modules,
# the config, drivers) among its garbage; the holes left are too small for a 300 B reading and a
# node with 18 KB free still fails an allocation. Collected early, garbage is reused at once and
# the kept objects pack together, leaving the free heap in large pieces. (Measured: every driver
# + OLED at 96 KB ran out after 15 s without it; with it, 40 s clean.)
gc.threshold(4096)
