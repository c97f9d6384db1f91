# The start of a connection attempt of gt/net.py, after gt/link.py (Wi-Fi, NTP and the TLS
# context): DNS, TCP (with its deadline), the TLS socket and the CONNECT packet. net.py imports
# this module for it and drops it before the TLS handshake; gt/connack.py does the rest after it.
# open() returns the new session (a Session); net.py keeps it. Nothing here writes into Net.
import errno
import gc
import socket
import time
from asyncio import core
from gt import io, mqtt
from gt.connack import _phase


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
