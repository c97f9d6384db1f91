# Every document a node publishes, built here and nowhere else: the reading on telemetry (in
# parts, which gt/net.py copies into its send buffer behind the PUBLISH header), the retained
# birth, health and will (the broker's, for a node gone) on status, a command's ack and a log line.
# The OTA acks are gt/ota.py's (loaded only while an update runs). Loaded while a session serves
# (a reading goes out every interval) and for the will, dropped during the TLS handshake, the
# node's tightest moment for RAM; the host reads these field names (host/gridtwin/daemon).
import gc
import json
import time
from gt import VERSION, clock
from gt.outbox import fields, metrics


def reading(cid, rec, ts, hist):
    """The telemetry document of the packed reading rec (gt/outbox.py), dated ts (Unix ms), in
    three parts: head, the metrics (a view of rec), tail. hist: replayed from the backlog."""
    boot, seq, _t = fields(rec)
    return (
        b'{"v":1,"node":"%s","boot":%d,"seq":%d,"ts":%d,"m":' % (cid, boot, seq, ts),
        metrics(rec),
        b',"hist":true}' if hist else b"}",
    )


def will(cid, boot_id):
    """The will the broker publishes (retained) on status when the node is gone."""
    return b'{"state":"offline","node":"%s","boot":%d}' % (cid, boot_id)


def log_line(lvl, tag, msg, ts):
    """A line on <root>/<node>/log."""
    return b'{"lvl":"%s","mod":%s,"msg":%s,"ts":%d}' % (lvl, json.dumps(tag), json.dumps(msg), ts)


def ack(cid, ok, key, val):
    """A command's ack on <root>/<node>/ack: {"id", "ok", "result" or "err", "ts"}."""
    return json.dumps(
        {"id": cid, "ok": ok, key: val, "ts": clock.unix_ms(time.ticks_ms())}
    ).encode()


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
