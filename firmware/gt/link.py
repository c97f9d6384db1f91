# What a connection needs before its TCP phase, loaded for that and dropped before the TLS
# handshake (gt/connect.py), so the handshake has this RAM too: Wi-Fi, the clock (one async SNTP
# exchange, hourly) and the node's TLS context (built once; gt/app.py builds it at boot).
import asyncio
import errno
import socket
import time
from asyncio import core
from gt import clock, io, why


async def up(net):
    """Wi-Fi joined, the clock set (hourly) and the TLS context built: False without Wi-Fi."""
    if not await wifi(net):
        return False
    await ntp(net)
    if net.ctx is None:
        net.ctx = context(net.c)  # built once (the app tries at boot), reused by every connection
    return True


async def wifi(net):
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


async def ntp(net):
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
        try:
            await asyncio.wait_for_ms(io(core._io_queue.queue_read, s), 1500)
        except asyncio.TimeoutError:
            raise OSError(errno.ETIMEDOUT, "ntp: no answer in 1500 ms")
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
