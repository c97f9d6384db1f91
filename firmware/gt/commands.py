# Commands from the host and their acknowledgements. gt/net.py imports this module only while it
# handles a command, then drops it (RAM).
#
# A command is JSON on <root>/<node>/cmd: {"id", "cmd", "args", "ts"}. Every command gets exactly
# one ack on <root>/<node>/ack: {"id", "ok", "result"?, "err"?, "ts"}, err saying why (not JSON,
# no id, unknown command, bad argument). The last ids and their acks are remembered (net.seen): a
# repeated id (the broker redelivering, the host retrying) gets the same ack and is not run again.
#
# Handlers: name -> fn(app, args) -> result (JSON-able). The role's `commands` table (name ->
# fn(args)) comes first, so simulated components bring set_fault, set_load and their own; a
# handler raises ValueError/TypeError/KeyError for a bad argument.
import asyncio
import json
from gt import mqtt, wire

_SEEN = 16


def on_publish(net, first, b, e):
    """A PUBLISH from the broker, in net.rx[b:e]: the command's ack, then its PUBACK (a coroutine
    for the reader to await once this module is dropped)."""
    rx = net.rx
    o = b + 2 + (rx[b] << 8 | rx[b + 1])
    qos = first & 6
    if o + qos > e:
        raise mqtt.ProtocolError("PUBLISH topic past its end")
    pid = rx[o] << 8 | rx[o + 1] if qos else 0
    ack = None
    if bytes(rx[b + 2 : o]) == net.root + b"cmd":
        ack = handle(net.app, net.seen, bytes(rx[o + qos : e]))
    return _reply(net, ack, pid)


async def _reply(net, ack, pid):
    if ack is not None:
        await net.publish(b"ack", ack, 1)
    if pid:
        # acknowledged after our ack went out: if the link drops in between, the broker sends
        # the command again, and the repeated id gets the same ack without running twice
        await net.take()
        try:
            await net.out(net.txm, mqtt.puback(net.tx, pid))
        finally:
            net.busy = False


def handle(app, seen, payload):
    """The ack (bytes) for one command payload."""
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeError):
        return _ack(None, False, "err", "not JSON")
    if not isinstance(d, dict) or "id" not in d:
        return _ack(None, False, "err", 'no id: a command is {"id", "cmd", "args"}')
    cid = d["id"]
    for e in seen:
        if e[0] == cid:
            return e[1]  # done already: the same answer, not run again
    name = d.get("cmd")
    args = d.get("args")
    if args is None:
        args = {}
    role = app.role.commands
    fn = role.get(name)
    builtin = _BUILTIN.get(name)
    if fn is None and builtin is None:
        known = sorted(set(_BUILTIN) | set(role))
        ack = _ack(cid, False, "err", "unknown command %r (known: %s)" % (name, ", ".join(known)))
    elif not isinstance(args, dict):
        ack = _ack(cid, False, "err", "bad argument: args must be an object")
    else:
        try:
            ack = _ack(cid, True, "result", fn(args) if fn is not None else builtin(app, args))
        except (ValueError, TypeError, KeyError) as e:
            ack = _ack(cid, False, "err", "bad argument: %s" % (e.args[0] if e.args else repr(e)))
        except Exception as e:
            app.log.exc("cmd", e)
            ack = _ack(cid, False, "err", "failed: %r" % e)
    app.log.info("cmd", "%s id=%s -> %s" % (name, cid, ack.decode()))
    seen.append((cid, ack))
    if len(seen) > _SEEN:
        seen.pop(0)
    return ack


def _ack(cid, ok, key, val):
    return wire.ack(cid, ok, key, val)


def ping(app, args):
    return {
        "pong": True,
        "uptime_s": app.uptime(),
    }  # (app.py: a ticks_diff from boot wraps after days)


def get_config(app, args):
    cfg = dict(app.cfg)
    if cfg.get("wifi", {}).get("psk"):
        cfg["wifi"] = dict(cfg["wifi"], psk="***")  # secrets stay on the node
    cfg["sample_ms"] = app.sampler.interval
    return cfg


def set_interval(app, args):
    ms = args["ms"]
    if not isinstance(ms, int) or isinstance(ms, bool) or not 50 <= ms <= 3600000:
        raise ValueError("ms must be an integer from 50 to 3600000, got %r" % (ms,))
    app.sampler.interval = ms
    w = app.wdt.watched
    for i, row in enumerate(w):
        if row[0] == "sampler":  # a slower cadence must not starve the watchdog
            w[i] = (row[0], row[1], 3 * ms + 2000)
    return {"sample_ms": ms}


def rebirth(app, args):
    app.net.rebirth()
    return {}


def identify(app, args):
    s = args.get("s", 10)
    if not isinstance(s, int) or not 1 <= s <= 300:
        raise ValueError("s must be 1 to 300 seconds")
    asyncio.create_task(_identify(app, s))
    return {"s": s}


async def _identify(app, s):
    try:
        app.display.show(["IDENTIFY", app.cfg["node"], app.cfg["role"]])
    except Exception:
        pass
    for i in range(s * 4):
        app.hw.blink(not i & 1)
        await asyncio.sleep_ms(250)
    app.hw.blink(False)


def reboot(app, args):
    asyncio.create_task(_reboot(app))
    return {"in_ms": 500}


async def _reboot(app):
    import machine

    await asyncio.sleep_ms(500)  # time for the ack to go out
    app.log.info("cmd", "reboot asked by the host", persist=True)
    try:
        app.outbox.flush()  # the RAM readings survive on flash
    except OSError as e:
        app.log.warn("cmd", "outbox not saved: %r" % e)
    app.boot.plan_reset()
    if app.net is not None:
        app.net._close()  # the session ends here, not in a finaliser (see gt/ota.py _reset)
    machine.reset()


def _role_only(app, args):
    raise ValueError("role '%s' has no such command (simulated components only)" % app.cfg["role"])


_BUILTIN = {
    "ping": ping,
    "get_config": get_config,
    "set_interval": set_interval,
    "rebirth": rebirth,
    "identify": identify,
    "reboot": reboot,
    "set_fault": _role_only,
    "set_load": _role_only,
}
