"""The nodes' time source: a small SNTP server (RFC 4330, server mode) run by the host daemon.

Why the daemon serves time: a node's clock is unknown after a reset, and its `ntp` key defaults to
the broker host, the Pi. A stock Raspberry Pi OS runs systemd-timesyncd, a client only: nothing
answered, the nodes' readings carried no usable time and the daemon rejected them all (ts_window).
The daemon judges every reading's timestamp by the host's clock, so the host's clock is the one to
give the nodes, whether or not the host itself reaches a public NTP server (an island site).

What it answers: the host's clock (``time.time()``), to client-mode (3) requests of at least 48
bytes only; the reply is 48 bytes, never more than the request (no amplification). Stratum: 3 when
the kernel says the clock is synchronised (``adjtimex``: timesyncd or chrony keep it, usually from a
stratum-2 server), otherwise ``UNSYNCED_STRATUM`` (10, the classic "local clock" fallback) with the
leap indicator still 0, because the nodes must agree with the daemon, not with the world.

Where: ``[network] ntp_port`` / ``ntp_bind`` (nodenet.py; 0 / "" = udp/123 on every address).
Binding udp/123 needs root or CAP_NET_BIND_SERVICE (the unit `gridtwin daemon install` writes grants
it). Without either, with ``ntp_port`` unset, it serves on ``FALLBACK_PORT`` and says that real
boards, which always ask port 123, will not reach it. If another NTP server (chrony, ntpd) already
holds udp/123 the daemon leaves time to it. ``ntp_serve = false`` turns the responder off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import socket
import struct
import threading
import time

from gridtwin.errors import GridTwinError

log = logging.getLogger("gridtwin.sntp")

NTP_PORT = 123
FALLBACK_PORT = 10123  # when udp/123 is not ours to bind (not root, no CAP_NET_BIND_SERVICE)
SYNCED_STRATUM = 3
UNSYNCED_STRATUM = 10
NTP_EPOCH = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


def _ntp_stamp(t: float) -> bytes:
    return struct.pack(
        "!II", int(t) + NTP_EPOCH & 0xFFFFFFFF, int((t % 1) * 4294967296) & 0xFFFFFFFF
    )


def host_synchronised() -> bool | None:
    """The kernel's word on the clock (what `timedatectl` shows as "System clock synchronized"):
    True, False, or None when it cannot be asked (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != _TIME_ERROR


def reply(request: bytes, now: float, received: float, *, stratum: int) -> bytes | None:
    """The 48-byte server reply to one request, or None when it is not an SNTP client request."""
    if len(request) < 48 or request[0] & 7 != 3:
        return None
    version = (request[0] >> 3) & 7 or 4
    r = bytearray(48)
    r[0] = (version << 3) | 4  # LI 0, the client's version, mode 4 (server)
    r[1] = stratum
    r[2] = request[2]  # poll: the client's
    r[3] = 0xEC  # precision 2^-20 s (about a microsecond: time.time()'s resolution)
    r[8:12] = struct.pack(
        "!I", 0x00000290 if stratum == SYNCED_STRATUM else 0x00010000
    )  # root dispersion
    r[12:16] = b"LOCL" if stratum == UNSYNCED_STRATUM else b"\x7f\x00\x00\x01"  # reference id
    r[16:24] = _ntp_stamp(int(received))  # reference time: the host clock, read this second
    r[24:32] = request[40:48]  # originate = the client's transmit time, as it sent it
    r[32:40] = _ntp_stamp(received)
    r[40:48] = _ntp_stamp(now)
    return bytes(r)


class SntpServer:
    """``SntpServer(bind, port).start()`` answers in a thread until ``stop()``. port 0: udp/123,
    or FALLBACK_PORT when 123 may not be bound. ``port`` is the bound one after start (None: not
    serving); ``served`` counts replies."""

    def __init__(
        self, bind: str = "", port: int = 0, *, clock=time.time, synchronised=host_synchronised
    ):
        self.bind, self.wanted = bind, port
        self.port: int | None = None
        self.clock, self.synchronised = clock, synchronised
        self.served = 0
        self._sock: socket.socket | None = None
        self._wake_r = self._wake_w = None
        self._thread: threading.Thread | None = None

    @property
    def stratum(self) -> int:
        return SYNCED_STRATUM if self.synchronised() else UNSYNCED_STRATUM

    def _bind(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((self.bind, port))
        except OSError:
            s.close()
            raise
        return s

    def start(self) -> "SntpServer":
        where = self.bind or "every address"
        try:
            self._sock = self._bind(self.wanted or NTP_PORT)
        except PermissionError:
            if self.wanted:
                raise GridTwinError(
                    f"cannot serve SNTP on udp/{self.wanted} ({where}): permission denied",
                    hint="run the daemon as its systemd unit (`gridtwin daemon install` grants "
                    "CAP_NET_BIND_SERVICE), or set [network] ntp_port above 1023",
                ) from None
            self._sock = self._bind(FALLBACK_PORT)
            log.warning(
                "SNTP on udp/%d, not 123: binding 123 needs root or CAP_NET_BIND_SERVICE (the unit "
                "`gridtwin daemon install` writes has it); real boards ask port 123 and get no "
                "time from this host",
                FALLBACK_PORT,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and not self.wanted:
                log.info(
                    "udp/123 is served by another NTP server here (chrony, ntpd?): the nodes get "
                    "their time from it, the daemon serves none"
                )
                return self
            raise GridTwinError(
                f"cannot serve SNTP on udp/{self.wanted or NTP_PORT} ({where}): "
                f"{exc.strerror or exc}",
                hint="set [network] ntp_port / ntp_bind, or ntp_serve = false when another "
                "server gives the nodes their time",
            ) from None
        self.port = self._sock.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)
        self._thread.start()
        log.info("SNTP: the nodes' time on udp/%d (%s), stratum %d", self.port, where, self.stratum)
        return self

    def _serve(self) -> None:
        sock = self._sock
        while True:
            ready, _, _ = select.select([sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                req, peer = sock.recvfrom(512)
            except OSError:
                continue
            received = self.clock()
            try:
                out = reply(req, self.clock(), received, stratum=self.stratum)
                if out is not None:
                    self.served += 1  # before the send: a client that has its reply sees it counted
                    sock.sendto(out, peer)
            except OSError as exc:  # one unreachable peer never stops the service
                log.debug("SNTP reply to %s: %s", peer, exc)

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.port = None


def from_site(site) -> SntpServer | None:
    """The responder ``[network]`` asks for (None with ``ntp_serve = false``)."""
    from gridtwin.nodenet import setting

    if not setting(site, "ntp_serve"):
        return None
    return SntpServer(setting(site, "ntp_bind"), setting(site, "ntp_port"))
