# The documents a node publishes besides its telemetry (which gt/net.py writes straight into its
# send buffer): the retained birth and the periodic health document on <root>/<node>/status.
# Loaded per document and dropped after it: they go out once a connection and once a minute.
import gc
import json
import time
from gt import VERSION, clock


def birth(net):
    """The retained birth document on <root>/<node>/status (bytes)."""
    app = net.app
    cfg = app.cfg
    boot = app.boot
    box = app.outbox
    gc.collect()
    return json.dumps(
        {
            "state": "online",
            "node": cfg["node"],
            "fw": VERSION,
            "board": cfg["board"],
            "role": cfg["role"],
            "reset": boot.cause,
            "boot": boot.boot_id,
            "boots": boot.boots,
            "heap": gc.mem_free(),
            "heap_min": app.heap_min,
            "rssi": net.rssi(),
            "uptime": app.uptime(),  # (app.py: a ticks_diff from boot wraps after days)
            "cfg": cfg.get("hash"),
            "interval": app.sampler.interval,
            "sensors": app.units(),
            "outbox": len(box),
            "drops": box.dropped,
            "conn": net.conns,
            "handshake_ms": net.handshake_ms,
            "ota": ota(boot.ota),
            "ts": clock.unix_ms(time.ticks_ms()),
        }
    ).encode()


def ota(p):
    """The running version's OTA state (docs/ota.md): version, none/trial/confirmed/rolled_back,
    why a trial failed and which version it was."""
    return {
        "v": (p.get("cur") or {}).get("v"),
        "st": p.get("st", "none"),
        "why": p.get("why"),
        "bad": p.get("bad"),
    }


def health(net):
    """The health document, published on status (retained, as the birth) every health_s: what
    changes while the node runs, under the birth's field names. One bytes object, formatted
    in place (no dict, no JSON encoder)."""
    app = net.app
    box = app.outbox
    free = gc.mem_free()
    if free < app.heap_min:
        app.heap_min = free
    r = net.rssi()
    t = clock.unix_ms(time.ticks_ms())
    return (
        b'{"state":"online","boot":%d,"heap":%d,"heap_min":%d,"rssi":%s,"uptime":%d,'
        b'"outbox":%d,"drops":%d,"ts":%s}'
    ) % (
        app.boot.boot_id,
        free,
        app.heap_min,
        "null" if r is None else r,
        app.uptime(),
        len(box),
        box.dropped,
        "null" if t is None else t,
    )
