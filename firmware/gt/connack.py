# The end of a connection attempt of gt/net.py, after the TLS handshake (gt/connect.py opened the
# session): CONNACK (with its deadline), the subscription and the "connected" line with the free
# heap; and what a failed phase is reported as (failed(): connect.py's TCP phase, net.py's
# handshake, the CONNACK here). A module of its own, loaded per use: at the CONNACK, where the node
# logs its free heap, the code that opened the connection is out of RAM (issue #20).
import asyncio
import errno
import gc
import time
from gt import mqtt, why


async def finish(net, ses, t2, conn):
    """After the handshake (done at ticks t2) on net's session ses: CONNACK and the subscription;
    conn numbers this connection. Returns the CONNACK's session-present flag; net.py then starts
    its reader and the publisher (which resends what the broker never acknowledged)."""
    c = net.c
    t0, t1 = ses.t_conn
    first, b, e = await _phase("connack", net.packet(), c["connack_ms"])
    rx = net.rx
    if first >> 4 != mqtt.CONNACK or e - b != 2:
        raise mqtt.ProtocolError("connack: got packet type %d" % (first >> 4))
    rc, present = rx[b + 1], rx[b] & 1
    net.consume(e)
    if rc:
        raise OSError(0, "connack: refused, code %d" % rc)
    t3 = time.ticks_ms()
    ses.handshake_ms = time.ticks_diff(t3, t0)
    gc.collect()  # the free heap at the connect, the tightest moment of a node's life (issue #20)
    free = gc.mem_free()
    # subscribe on every connect (the broker may have lost the session), before the line that
    # says the node is connected: a command sent on seeing it finds the subscription (the SUBACK
    # waits in rx for net's reader, started as soon as this returns; nothing else writes yet)
    buf = net.tx
    buf[0] = 0x82  # SUBSCRIBE to <root>/<node>/cmd and <root>/<node>/ota (docs/ota.md), QoS 1
    o = mqtt._pid(buf, mqtt._len(buf, 1, 2 + 2 * (len(net.root) + 6)), net.next_pid())
    for leaf in (b"cmd", b"ota"):
        o = mqtt._str(buf, o, net.root + leaf)
        buf[o] = 1
        o += 1
    await net.write(o)
    net.log.info(
        "mqtt",
        "connected in %d ms (tcp %d, tls %d, connack %d) session=%d conn=%d free=%d"
        % (
            ses.handshake_ms,
            time.ticks_diff(t1, t0),
            time.ticks_diff(t2, t1),
            time.ticks_diff(t3, t2),
            present,
            conn,
            free,
        ),
    )
    return present


async def _phase(name, coro, ms):
    try:
        return await asyncio.wait_for_ms(coro, ms)
    except Exception as e:
        raise failed(name, e, ms)


def failed(name, e, ms):
    """The error a phase's failure is reported as (net.py asks for the handshake's)."""
    if isinstance(e, asyncio.TimeoutError):
        return OSError(errno.ETIMEDOUT, "%s: no answer in %d ms" % (name, ms))
    if isinstance(e, (OSError, ValueError, mqtt.ProtocolError)):
        # mbedTLS reports a certificate or name mismatch as ValueError
        return OSError(0, "%s: %s" % (name, _errno_why(name, e)))
    return e


def _errno_why(name, e):
    # A bare errno ("OSError(111,)") tells a user nothing: what it means at this phase. A broker
    # that refuses our certificate sends its alert and closes, so our next write finds the pipe
    # broken (EPIPE, 32: not in MicroPython's errno) or the connection reset.
    n = e.args[0] if isinstance(e, OSError) and len(e.args) == 1 else None
    if n == errno.ECONNREFUSED:
        return "broker not listening (connection refused)"
    if name == "tls" and n in (32, errno.ECONNRESET, errno.ECONNABORTED):
        return "certificate refused (expired, revoked or foreign CA?)"
    if n == errno.EHOSTUNREACH:
        return "broker host unreachable"
    return why(e)
