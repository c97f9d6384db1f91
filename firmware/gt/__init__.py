# GridTwin node firmware.
import gc

VERSION = "0.1.0"

# Collect after every 4 KB allocated instead of when the heap is full, from the first import of
# the package on (set here, not in boot.py, so a board with its own boot.py has it too). Without a
# threshold the allocator walks the whole free heap between collections, scattering what boot
# keeps (modules, the config, drivers) among its garbage: the holes left were too small for a
# 300 B reading, and a node with 17 KB free failed an allocation (every driver + OLED at 96 KB,
# after 15 s). Collected early, garbage is reused at once, what stays packs together and the free
# heap stays in large pieces.
gc.threshold(4096)
