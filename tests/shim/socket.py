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
    return _s.getaddrinfo(host, port, af, type, proto, flags)


def socket(af=AF_INET, type=SOCK_STREAM, proto=0):
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
