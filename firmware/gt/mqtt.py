# MQTT 3.1.1 packets, pure protocol: no sockets, no asyncio. gt/net.py moves the bytes.
#
# Outgoing packets are written into the caller's preallocated bytearray (no per-message garbage);
# incoming bytes collect in Reader's fixed buffer and come out as (first byte, start, end) of a
# complete packet. What a broker must not send (a bad remaining length, a packet bigger than the
# buffer, a type a client never receives) raises ProtocolError: the caller drops the connection
# and retries, it never crashes.
from micropython import const

CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBACK = const(9)
PINGRESP = const(13)
PINGREQ = b"\xc0\x00"
_OK_IN = (CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP)


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
    buf[o + 2:o + 2 + n] = s
    return o + 2 + n


def connect(buf, cid, keepalive, will_topic, will):
    """CONNECT (clean_session False, retained QoS 1 will) into buf; returns its length."""
    buf[0] = 0x10
    o = _len(buf, 1, 16 + len(cid) + len(will_topic) + len(will))
    o = _str(buf, o, b"MQTT")
    buf[o] = 4  # protocol level 3.1.1
    buf[o + 1] = 0x2C  # will retained, will QoS 1, will flag; clean session off
    buf[o + 2] = keepalive >> 8
    buf[o + 3] = keepalive & 0xFF
    o = _str(buf, o + 4, cid)
    o = _str(buf, o, will_topic)
    return _str(buf, o, will)


def head(buf, topic, n, pid=0, qos=0, retain=False, dup=False):
    """The PUBLISH header for an n-byte payload into buf; returns where the payload starts."""
    rl = 2 + len(topic) + (2 if qos else 0) + n
    buf[0] = 0x30 | (8 if dup else 0) | qos << 1 | (1 if retain else 0)
    o = _str(buf, _len(buf, 1, rl), topic)
    if qos:
        buf[o] = pid >> 8
        buf[o + 1] = pid & 0xFF
        o += 2
    return o


def subscribe(buf, pid, topic):
    buf[0] = 0x82
    o = _len(buf, 1, 5 + len(topic))
    buf[o] = pid >> 8
    buf[o + 1] = pid & 0xFF
    o = _str(buf, o + 2, topic)
    buf[o] = 1  # QoS 1
    return o + 1


def puback(buf, pid):
    buf[0] = 0x40
    buf[1] = 2
    buf[2] = pid >> 8
    buf[3] = pid & 0xFF
    return 4


class Reader:
    """Incoming bytes -> complete packets, in one buffer allocated once."""

    def __init__(self, size):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0

    def packet(self):
        """(first byte, body start, body end) of the first complete packet, or None."""
        b = self.buf
        n = self.n
        rl = 0
        i = 1
        while True:
            if i >= n:
                return None
            c = b[i]
            rl |= (c & 0x7F) << (7 * (i - 1))
            i += 1
            if not c & 0x80:
                break
            if i > 4:
                raise ProtocolError("bad remaining length")
        if b[0] >> 4 not in _OK_IN:
            raise ProtocolError("packet type %d" % (b[0] >> 4))
        if i + rl > len(b):
            raise ProtocolError("%d byte packet over limit" % (i + rl))
        return (b[0], i, i + rl) if n >= i + rl else None

    def consume(self, end):
        # keep what follows the packet (usually nothing, so usually no copy)
        b = self.buf
        left = self.n - end
        for j in range(left):
            b[j] = b[end + j]
        self.n = left
