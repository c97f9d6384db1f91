# One connection attempt of gt/net.py, after gt/link.py (Wi-Fi, NTP and the TLS context): DNS,
# TCP, the TLS handshake and CONNACK, each phase with its deadline; then the subscription. net.py
# imports this module for the attempt and drops it afterwards: connecting is rare, RAM is not.
# open() returns the new session (a Session); net.py keeps it. Nothing here writes into Net.
import asyncio
import errno
import gc
import socket
import time
from asyncio import core
from gt import io, mqtt, why


class Session:
    """One connection to the broker, which net.py keeps while it lasts: sock, the TLS socket (the
    TCP one until it is wrapped); raw, the TCP socket, what the event loop waits on; addr, the
    broker's address (kept for the next connect: DNS blocks); t_conn, ticks at the start and at
    the TCP connect; handshake_ms, start to CONNACK. No methods: nothing of this module stays in
    RAM with it once it is unloaded."""


async def open(net, addr):
    """DNS (unless addr is known from the last connect), TCP, the TLS socket (not yet shaken
    hands) and the CONNECT packet written into net.tx: (session, its length). The TLS handshake
    comes next, run by net.py with this module out of RAM."""
    c = net.c
    t0 = time.ticks_ms()
    if addr is None:
        # DNS blocks on the ESP32 (lwIP's own timeout); an address answers at once, and the
        # result is kept for the next reconnect (Session.addr)
        addr = socket.getaddrinfo(c["host"], c["port"], 0, socket.SOCK_STREAM)[0][-1]
    ses = Session()
    ses.sock = ses.raw = socket.socket()
    ses.addr = addr
    ses.handshake_ms = None
    try:
        s = ses.raw
        s.setblocking(False)
        try:
            s.connect(addr)
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        await _phase("tcp", io(core._io_queue.queue_write, s), c["tcp_ms"])
        ses.t_conn = (t0, time.ticks_ms())
        gc.collect()  # the TLS socket's buffers are the largest blocks a connection takes
        # verification is required (the context's verify_mode) and the server name always checked
        ses.sock = net.ctx.wrap_socket(
            s, server_hostname=c["server_hostname"] or c["host"], do_handshake_on_connect=False
        )
    except Exception:
        ses.sock.close()
        raise
    from gt import wire  # (net.py drops it before the handshake)

    will = wire.will(net.cid, net.app.boot.boot_id)
    # CONNECT: clean session off, a retained QoS 1 will (the packets net.py sends are in mqtt.py;
    # CONNECT and SUBSCRIBE are written here, their only sender, loaded only while connecting)
    buf = net.tx
    buf[0] = 0x10
    o = mqtt._str(
        buf, mqtt._len(buf, 1, 16 + len(net.cid) + len(net.root) + 6 + len(will)), b"MQTT"
    )
    buf[o] = 4  # protocol level 3.1.1
    buf[o + 1] = 0x2C  # will retained, will QoS 1, will flag; clean session off
    o = mqtt._str(buf, mqtt._pid(buf, o + 2, net.ka // 1000), net.cid)
    return ses, mqtt._str(buf, mqtt._str(buf, o, net.root + b"status"), will)


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
