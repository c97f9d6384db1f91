# Shim for `socket` on a virtual board: real sockets (loopback to the test's broker), cut by the
# world's Wi-Fi link. While the link is down, name lookups and new sockets fail as on an ESP32
# with no network; when it goes down, every open socket is closed under the firmware (a dropped
# link breaks TCP: the next read or write raises, select reports the socket as invalid), and the
# broker sees the connection go (so it publishes the will), as it would after its own timeout.
#
# The firmware gets the port's own socket objects, so ssl.wrap_socket and select.poll see real
# file descriptors (no busy polling, as they would on lwIP).
from usocket import *  # noqa: F401,F403  constants and the rest of the API
import usocket as _s
import _world as W

_EHOSTUNREACH = const(113)
_live = []  # open sockets, closed by the world when the link drops
_was_up = [True]
stats = {"cut": 0}


def _watch():
    # called by the world's clock after time moves (every wait and sleep of the board)
    up = W.link_up()
    if up == _was_up[0]:
        return
    _was_up[0] = up
    if not up:
        W.emit("link down world_ms=%d sockets=%d" % (W.clock.world_ms(), len(_live)))
        for s in _live:
            try:
                s.close()
            except OSError:
                pass
            stats["cut"] += 1
        _live.clear()
    else:
        W.emit("link up world_ms=%d" % W.clock.world_ms())


W.clock.hooks.append(_watch)


def _need_link():
    if not W.link_up():
        raise OSError(_EHOSTUNREACH)


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    _need_link()
    if port == 123:
        real = W.world.get("ntp", {}).get("port")
        if real:
            # {"ntp": {"port": P}}: the world leaves time to a real server on the host the board
            # names (the daemon's SNTP responder), on port P because a test cannot take udp/123
            return _s.getaddrinfo(host, real, af, type, proto, flags)
        # every NTP server the board asks for is the world's: it tells the world's true time
        return [(_s.AF_INET, _s.SOCK_DGRAM, 0, "", _ntp_server())]
    return _s.getaddrinfo(host, port, af, type, proto, flags)


# --- the site's NTP server, as the world sees it ----------------------------------------------
# A real UDP socket on loopback: the firmware's SNTP client sends to it and waits in select.poll
# like on the chip. Requests are answered just before the board waits (the select shim's
# pre-wait hooks), with the world's true time, and only while the link is up (world
# {"ntp": {"silent": true}} makes it a server that never answers; {"ntp": {"port": P}} sends the
# board to a real server instead, see getaddrinfo).
_ntpd = []


def _ntp_server():
    if not _ntpd:
        import os

        srv = _s.socket(_s.AF_INET, _s.SOCK_DGRAM)
        for _ in range(50):  # no getsockname() here: pick a free port ourselves
            port = 20000 + int.from_bytes(os.urandom(2), "big") % 40000
            addr = _s.getaddrinfo("127.0.0.1", port)[0][-1]
            try:
                srv.bind(addr)
                break
            except OSError:
                pass
        srv.setblocking(False)
        _ntpd.append((srv, addr))
        W.clock.pre_wait.append(_ntp_answer)
    return _ntpd[0][1]


def _ntp_answer():
    srv = _ntpd[0][0]
    while True:
        try:
            req, peer = srv.recvfrom(64)
        except OSError:
            return
        if len(req) < 48 or not W.link_up() or W.world.get("ntp", {}).get("silent"):
            continue  # a lost request, as over a dead link or to a server that is down
        t = W.clock.true_wall() + 2208988800  # NTP counts from 1900
        sec, frac = int(t), int((t % 1) * 4294967296) & 0xFFFFFFFF
        r = bytearray(48)
        r[0], r[1] = 0x24, 1  # LI 0, version 4, mode 4 (server); stratum 1
        r[24:32] = req[40:48]  # originate = the client's transmit time
        for off in (32, 40):  # receive and transmit time
            r[off : off + 8] = sec.to_bytes(4, "big") + frac.to_bytes(4, "big")
        srv.sendto(r, peer)


def socket(af=_s.AF_INET, type=_s.SOCK_STREAM, proto=0):
    _need_link()
    s = _s.socket(af, type, proto)
    # forget sockets the firmware closed itself (fileno() is -1 once closed)
    i = 0
    while i < len(_live):
        if _live[i].fileno() < 0:
            _live.pop(i)
        else:
            i += 1
    _live.append(s)
    return s
