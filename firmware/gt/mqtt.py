# MQTT 3.1.1 packets, pure protocol: no sockets, no asyncio. gt/net.py moves the bytes. CONNECT and
# SUBSCRIBE are written by gt/connect.py (their only sender, loaded only while it connects) with
# the helpers below.
#
# Packets are written into the caller's preallocated bytearray (no per-message garbage), and
# parse() finds a complete packet in the caller's receive buffer. What a broker must not send (a
# bad remaining length, a packet bigger than the buffer, a type a client never receives) raises
# ProtocolError: the caller drops the connection and retries, it never crashes.
from micropython import const

CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBACK = const(9)
PINGRESP = const(13)
PINGREQ = b"\xc0\x00"


class ProtocolError(Exception):
    pass


def _len(buf, o, n):
    # remaining length: 7 bits a byte, high bit = more follows
    while True:
        b = n & 0x7F
        n >>= 7
        buf[o] = b | 0x80 if n else b
        o += 1
        if not n:
            return o


def _str(buf, o, s):
    n = len(s)
    buf[o] = n >> 8
    buf[o + 1] = n & 0xFF
    buf[o + 2 : o + 2 + n] = s
    return o + 2 + n


def _pid(buf, o, pid):
    buf[o] = pid >> 8
    buf[o + 1] = pid & 0xFF
    return o + 2


def head(buf, topic, n, pid=0, retain=False, dup=False):
    """PUBLISH header (QoS 1 when pid, else 0) for an n-byte payload; returns where it starts."""
    qos = 1 if pid else 0
    buf[0] = 0x30 | (8 if dup else 0) | qos << 1 | (1 if retain else 0)
    o = _str(buf, _len(buf, 1, 2 + len(topic) + 2 * qos + n), topic)
    return _pid(buf, o, pid) if pid else o


def puback(buf, pid):
    buf[0] = 0x40
    buf[1] = 2
    return _pid(buf, 2, pid)


def parse(b, n):
    """(first byte, body start, body end) of the complete packet at the start of b[:n], or None."""
    rl = 0
    i = 1
    while True:
        if i >= n:
            return None
        c = b[i]
        rl |= (c & 0x7F) << (7 * i - 7)
        i += 1
        if not c & 0x80:
            break
        if i > 4:
            raise ProtocolError("bad remaining length")
    if b[0] >> 4 not in (CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP):
        raise ProtocolError("packet type %d" % (b[0] >> 4))
    if i + rl > len(b):
        raise ProtocolError("%d byte packet over limit" % (i + rl))
    return (b[0], i, i + rl) if n >= i + rl else None
