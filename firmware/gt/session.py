# One connection to the broker, from the TCP connect to the close: what gt/connect.py opens and
# returns, and gt/net.py serves until it breaks (net.py keeps the buffers, allocated once, and
# moves the bytes). Both import this module, never each other; gt/link.py waits with io() too.


def io(queue, s):
    # wait until asyncio's poller says s is ready (as asyncio's own streams wait). Over TLS, s is
    # the TCP socket under it (Session.raw): the TLS object has no file descriptor, and the unix
    # port polls such an object in 1 ms slices (1,645 wake-ups a second at 1 Hz, issue #20). The
    # TLS object is always read first, so bytes it holds decrypted never wait for the socket.
    yield queue(s)


def why(e):
    return e.args[1] if isinstance(e, OSError) and len(e.args) > 1 else repr(e)


class Session:
    """sock: the TLS socket (the TCP one until it is wrapped); raw: the TCP socket, what the event
    loop waits on; addr: the broker's address (kept for the next connect: DNS blocks);
    t_conn: (ticks at the start, ticks at the TCP connect); handshake_ms: start to CONNACK."""

    def __init__(self, raw, addr, t0):
        self.sock = self.raw = raw
        self.addr = addr
        self.t_conn = (t0, t0)
        self.handshake_ms = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
