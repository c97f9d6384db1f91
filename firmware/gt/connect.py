# One connection attempt of gt/net.py: Wi-Fi, NTP (async SNTP), the TLS context (built once), DNS,
# TCP, the TLS handshake and CONNACK, each phase with its deadline; then subscription and birth.
# net.py imports this module for the attempt and drops it afterwards: connecting is rare, RAM is
# not. connect(net) returns the CONNACK's session-present flag, or None when there is no link.
import asyncio
import errno
import gc
import json
import socket
import time
from asyncio import core
from gt import VERSION, clock, mqtt
from gt.net import io, why


async def connect(net):
    if not await _wifi(net):
        return None
    await _ntp(net)
    if net.ctx is None:
        net.ctx = context(net.c)  # built once (the app tries at boot), reused by every connection
    c = net.c
    t0 = time.ticks_ms()
    if net.addr is None:
        # DNS blocks on the ESP32 (lwIP's own timeout); an address answers at once, and the
        # result is kept for the next reconnect
        net.addr = socket.getaddrinfo(c["host"], c["port"], 0, socket.SOCK_STREAM)[0][-1]
    s = net.sock = socket.socket()
    s.setblocking(False)
    try:
        s.connect(net.addr)
    except OSError as e:
        if e.errno != errno.EINPROGRESS:
            raise
    await _phase("tcp", io(core._io_queue.queue_write, s), c["tcp_ms"])
    t1 = time.ticks_ms()
    # verification is required (the context's verify_mode) and the server name always checked
    s = net.sock = net.ctx.wrap_socket(s, server_hostname=c["server_hostname"] or c["host"],
                                       do_handshake_on_connect=False)
    will = b'{"state":"offline","node":"%s","boot":%d}' % (net.cid, net.app.boot.boot_id)
    n = mqtt.connect(net.tx, net.cid, net.ka // 1000, net.root + b"status", will)
    await _phase("tls", _handshake(net, n), c["tls_ms"])
    t2 = time.ticks_ms()
    first, b, e = await _phase("connack", net.packet(), c["connack_ms"])
    rx = net.rx
    if first >> 4 != mqtt.CONNACK or e - b != 2:
        raise mqtt.ProtocolError("connack: got packet type %d" % (first >> 4))
    rc, present = rx[b + 1], rx[b] & 1
    net.consume(e)
    if rc:
        raise OSError(0, "connack: refused, code %d" % rc)
    t3 = time.ticks_ms()
    net.handshake_ms = time.ticks_diff(t3, t0)
    net.conns += 1
    net.last_rx = t3
    net.log.info("mqtt", "connected in %d ms (tcp %d, tls %d, connack %d) session=%d conn=%d" % (
        net.handshake_ms, time.ticks_diff(t1, t0), time.ticks_diff(t2, t1),
        time.ticks_diff(t3, t2), present, net.conns))
    net.task = asyncio.create_task(net.reader())
    await net.resend(present)  # the session first: what the broker never acknowledged
    await net.take()
    try:
        # subscribe on every connect: the broker may have lost the session
        await net.out(net.txm, mqtt.subscribe(net.tx, net.next_pid(), net.root + b"cmd"))
    finally:
        net.busy = False
    await net.publish(b"status", birth(net), 1, True)
    return present


async def _phase(name, coro, ms):
    try:
        return await asyncio.wait_for_ms(coro, ms)
    except asyncio.TimeoutError:
        raise OSError(errno.ETIMEDOUT, "%s: no answer in %d ms" % (name, ms))
    except (OSError, ValueError, mqtt.ProtocolError) as e:
        # mbedTLS reports a certificate or name mismatch as ValueError
        raise OSError(0, "%s: %s" % (name, _errno_why(name, e)))


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


async def _handshake(net, n):
    # the TLS handshake runs inside the first write, a step per call on the non-blocking socket;
    # None means it waits for the server
    s = net.sock
    while True:
        r = s.write(net.txm[:n])
        if r is not None:
            break
        await io(core._io_queue.queue_read, s)
    await net.out(net.txm, n, r)


async def _wifi(net):
    w = net.app.cfg["wifi"]
    if not w["ssid"]:
        return True  # no Wi-Fi configured: the port's own network (unix)
    import network

    if net.wlan is None:
        net.wlan = network.WLAN(network.STA_IF)
        net.wlan.active(True)
    if net.wlan.isconnected():
        return True
    net.wlan.connect(w["ssid"], w["psk"])
    t0 = time.ticks_ms()
    while not net.wlan.isconnected():
        if time.ticks_diff(time.ticks_ms(), t0) > net.c["wifi_ms"]:
            net.log.warn("net", "wifi: not joined (status %s)" % net.wlan.status())
            return False
        await asyncio.sleep_ms(100)
    net.log.info("net", "wifi up, rssi %s" % net.rssi())
    return True


async def _ntp(net):
    # After a reset without RTC the clock reads 2000-01-01: certificates would look not yet valid
    # and readings could not be dated. One SNTP exchange over a non-blocking UDP socket, awaited
    # like any other I/O (ntptime would block the event loop for its whole timeout); repeated
    # hourly to keep the RTC from drifting.
    now = time.ticks_ms()
    if net.ntp_at is not None and time.ticks_diff(now, net.ntp_at) < 3600000:
        return
    s = None
    try:
        host = net.app.cfg["ntp"] or net.c["host"]
        addr = socket.getaddrinfo(host, 123, 0, socket.SOCK_DGRAM)[0][-1]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        q = bytearray(48)
        q[0] = 0x1B  # LI 0, version 3, mode 3 (client)
        s.sendto(q, addr)
        await _phase("ntp", io(core._io_queue.queue_read, s), 1500)
        r = s.recv(48)
        if len(r) < 48 or r[0] & 7 != 4:
            raise OSError(0, "ntp: not a server reply")
        unix = int.from_bytes(r[40:44], "big") - 2208988800  # NTP counts from 1900
        us = (int.from_bytes(r[44:48], "big") * 1000000) >> 32
        import machine

        tm = time.gmtime(unix - clock.EPOCH_S)  # the port's own epoch (1970 or 2000)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], us))
        if clock.offset is None:
            net.log.info("clock", "set by NTP")
        clock.check_rtc()
        net.ntp_at = now
    except Exception as e:
        if clock.offset is None:
            net.log.warn("clock", "not set (NTP: %s): cert dates unchecked, readings wait" % why(e))
    finally:
        if s is not None:
            s.close()


def context(c):
    import tls

    def rd(name):
        try:
            with open(name, "rb") as f:
                return f.read()
        except OSError:
            raise OSError(0, "tls: %s is not on the flash (gridtwin deploy puts it there)" % name)

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED  # said explicitly: MicroPython's default checks nothing
    ctx.load_verify_locations(rd(c["ca"]))
    ctx.load_cert_chain(rd(c["cert"]), rd(c["key"]))
    return ctx


def birth(net):
    """The retained birth document on <root>/<node>/status (bytes)."""
    app = net.app
    cfg = app.cfg
    boot = app.boot
    box = app.outbox
    gc.collect()
    return json.dumps({
        "state": "online", "node": cfg["node"], "fw": VERSION, "board": cfg["board"],
        "role": cfg["role"], "reset": boot.cause, "boot": boot.boot_id, "boots": boot.boots,
        "heap": gc.mem_free(), "heap_min": app.heap_min, "rssi": net.rssi(),
        "uptime": time.ticks_diff(time.ticks_ms(), app.started) // 1000,
        "cfg": cfg.get("hash"), "interval": app.sampler.interval, "sensors": app.units(),
        "outbox": len(box), "drops": box.dropped, "conn": net.conns,
        "handshake_ms": net.handshake_ms, "ts": clock.unix_ms(time.ticks_ms()),
    }).encode()
