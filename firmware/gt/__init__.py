# GridTwin node firmware. This package module is also the one home of the RAM helpers and of the
# two the link's modules share (gt/net.py, gt/link.py, gt/connect.py: io, why): it is always
# loaded, so they cost no module of their own (a module of two functions took ~1 KB, issue #20).
import gc
import sys

VERSION = "0.1.0"

# Collect after every 4 KB allocated instead of when the heap is full, from the first import of
# the package on (set here, not in boot.py, so a board with its own boot.py has it too). Without a
# threshold the allocator walks the whole free heap between collections, scattering what boot
# keeps (modules, the config, drivers) among its garbage: the holes left were too small for a
# 300 B reading, and a node with 17 KB free failed an allocation (every driver + OLED at 96 KB,
# after 15 s). Collected early, garbage is reused at once, what stays packs together and the free
# heap stays in large pieces.
gc.threshold(4096)


def unload(name):
    """Forget gt.<name> (e.g. "connect", "drivers.options"), imported for one job, so its code
    leaves RAM. Each reference is overwritten before it is deleted: a deleted dict entry keeps its
    value in the table until the slot is reused (MicroPython's map.c), so a module only popped from
    sys.modules stays reachable. That kept the validator (~10 KB) alive after boot (issue #20)."""
    key = "gt." + name
    if key in sys.modules:
        sys.modules[key] = None
        del sys.modules[key]
    pkg, _, leaf = key.rpartition(".")
    p = sys.modules.get(pkg)
    if p is not None and hasattr(p, leaf):
        setattr(p, leaf, None)
        delattr(p, leaf)


def io(queue, s):
    # wait until asyncio's poller says s is ready (as asyncio's own streams wait). Over TLS, s is
    # the TCP socket under it (the session's raw): the TLS object has no file descriptor, and the
    # unix port polls such an object in 1 ms slices (1,645 wake-ups a second at 1 Hz, issue #20).
    # The TLS object is always read first, so bytes it holds decrypted never wait for the socket.
    yield queue(s)


def why(e):
    """What an error says, for a log line (an OSError's text, else its repr)."""
    return e.args[1] if isinstance(e, OSError) and len(e.args) > 1 else repr(e)
