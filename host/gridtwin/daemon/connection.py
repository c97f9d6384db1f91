"""Where the broker is and who we are to it: one place that builds paho clients with mutual TLS."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gridtwin.errors import BrokerError, PKIError
from gridtwin.identities import HOST_IDENTITY  # noqa: F401  (re-exported: the daemon's identity)

PUBACK = 0x40
_PARSED = (mqtt.MQTTv311, mqtt.MQTTv5)  # the PUBLISH layouts BufferedClient reads itself


class BufferedClient(mqtt.Client):
    """paho's client with a fast receive path; it takes ingest from ~6k to tens of thousands msg/s.

    paho reads a packet as three ``recv`` calls (command byte, length digits, body), handles one
    packet per ``select`` and builds a message object per PUBLISH; over TLS, where mosquitto sends
    each packet as its own record, that costs ~100 us a message. Here:

    - reads gather every TLS record the socket holds (up to 64 KiB) into a buffer, straight from
      the SSL object (mosquitto sends each packet as a record of its own, and OpenSSL returns one
      record a read: four Python frames a message fewer than through paho's and ssl's wrappers);
    - with ``on_publish_many`` set (MQTT 3.1.1 or 5: a v5 PUBLISH's properties are skipped, paho
      would decode each), complete QoS 0/1 PUBLISH packets are parsed straight from the buffer
      and handed to it a read at a time, as a list of ``(deliver_tag, mid, qos, topic,
      payload)``; any other packet (CONNACK, SUBACK, PUBACK, PINGRESP) goes to paho's own
      reader, which reads it from the buffer;
    - ``ack_many`` queues the PUBACKs of a batch as one write instead of one TLS record per ack;
    - with ``read_pause`` set, a drained socket is left to fill for the time it says (once a
      ``loop_read``) before the next read, instead of a wake-up for every few messages.

    This relies on paho-mqtt 2.x internals (``_sock_recv``, ``_in_packet``, ``_packet_queue``,
    ``_loop_rc_handle``), checked at import; without them the plain client is used (slower, same
    behaviour). Manual acks make the bypass safe: paho keeps no state for received QoS 1 messages.
    """

    _READ = 65536

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._gt_data, self._gt_pos, self._gt_sock = b"", 0, None
        self.on_publish_many = None
        self.deliver_tag = 0  # the first item of each message handed over (the bus's generation)
        # fn() -> seconds to let messages gather in the socket before the next read, once the
        # socket is drained (ingest's: while its writer lingers for more; 0: none)
        self.read_pause = None

    def _gt_check_sock(self) -> None:
        if self._gt_sock is not self._sock:  # a new connection: nothing buffered belongs to it
            self._gt_sock, self._gt_data, self._gt_pos = self._sock, b"", 0

    def _gt_fill(self) -> int:
        """Append what the socket holds to the buffer: bytes read, 0 if none; EOF raises."""
        chunks, size = [], 0
        sslobj = getattr(self._sock, "_sslobj", None)
        if sslobj is not None:
            read, would_block = sslobj.read, ssl.SSLWantReadError
        else:  # not TLS (or not CPython's ssl): paho's own read
            read, would_block = super()._sock_recv, BlockingIOError
        while size < self._READ:
            try:
                data = read(self._READ)
            except would_block:
                break
            except ssl.SSLWantWriteError:  # OpenSSL must write first (a TLS 1.3 key update)
                self._call_socket_register_write()
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # the broker closed the TLS session
            if not data:
                if chunks:
                    break
                raise ConnectionError("connection closed by the broker")
            chunks.append(data)
            size += len(data)
        if chunks:
            self._gt_data = self._gt_data[self._gt_pos :] + b"".join(chunks)
            self._gt_pos = 0
            self._last_bytes_received = mqtt.time_func()  # paho's keepalive clock
        return size

    def _sock_recv(self, bufsize: int) -> bytes:
        self._gt_check_sock()
        if self._gt_pos >= len(self._gt_data) and not self._gt_fill():
            raise BlockingIOError()
        out = self._gt_data[self._gt_pos : self._gt_pos + bufsize]
        self._gt_pos += len(out)
        return out

    def _gt_parse(self) -> bool:
        """Hand complete QoS 0/1 PUBLISH packets to on_publish_many. True: another packet type is
        next (paho's turn); False: the buffer is empty or ends in a partial packet."""
        data, pos, end = self._gt_data, self._gt_pos, len(self._gt_data)
        v5, tag, out = self._protocol == mqtt.MQTTv5, self.deliver_tag, []
        put = out.append
        try:
            while pos < end:
                h = data[pos]
                if h & 0xF0 != 0x30 or h & 0x06 == 0x06 or h & 0x06 == 0x04:
                    return True
                i, mult, length = pos + 1, 1, 0
                while True:
                    if i >= end:
                        return False
                    b = data[i]
                    length += (b & 127) * mult
                    i += 1
                    if b < 128:
                        break
                    mult *= 128
                    if mult > 2097152:
                        return True  # malformed length: paho reports the protocol error
                if i + length > end:
                    return False
                tl = (data[i] << 8) | data[i + 1]
                if not tl:
                    return True  # a topic alias (v5, never allowed here): paho's to refuse
                j = i + 2 + tl
                topic = data[i + 2 : j].decode("utf-8", "replace")
                qos = (h >> 1) & 3
                mid = 0
                if qos:
                    mid = (data[j] << 8) | data[j + 1]
                    j += 2
                if v5:  # the properties (a length, then its bytes): none of them concern ingest
                    plen, mult = 0, 1
                    while j < i + length:
                        b = data[j]
                        j += 1
                        plen += (b & 127) * mult
                        if b < 128:
                            break
                        mult *= 128
                    j += plen
                    if j > i + length:
                        return True  # malformed: paho reports the protocol error
                pos = i + length
                put((tag, mid, qos, topic, data[j:pos]))
            return False
        finally:
            self._gt_pos = pos
            if out:
                self.on_publish_many(out)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        ok = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        if self.on_publish_many is None or self._protocol not in _PARSED:
            rc = super().loop_read(max_packets)
            while (
                rc == ok
                and self._sock is not None
                and self._gt_sock is self._sock
                and self._gt_pos < len(self._gt_data)
            ):
                rc = super().loop_read(max_packets)
            return rc
        paused = False
        while True:
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            self._gt_check_sock()
            if self._in_packet["command"] != 0:  # paho is in the middle of a packet
                rc = super().loop_read(1)
                if rc != ok or self._in_packet["command"] != 0:
                    return rc
                continue
            if self._gt_parse():  # a non-PUBLISH packet is next
                rc = super().loop_read(1)
                if rc != ok:
                    return rc
                continue
            try:
                if not self._gt_fill():
                    pause = 0.0 if paused or self.read_pause is None else self.read_pause()
                    if pause <= 0.001:
                        return ok  # wait for select (paho writes what is queued first)
                    # one read of all that came meanwhile, instead of a wake-up, a select and a
                    # read for every few messages; once a call: then paho writes the acks
                    time.sleep(pause)
                    paused = True
            except (ConnectionError, OSError) as exc:
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", exc)
                return self._loop_rc_handle(mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST)

    def read_ahead(self) -> bool:
        """Let OpenSSL read all the TLS records the socket holds in one ``recv``; True if it does.

        OpenSSL reads a record as two ``recv`` calls (its 5-byte header, then the body) and
        mosquitto sends each packet as a record of its own: at 1,000 nodes x 1 Hz that is two
        system calls per message in this thread. Read-ahead is safe only on the fast path (call it
        once ``on_publish_many`` is set): its reads drain OpenSSL until it would block, so nothing
        waits in OpenSSL's buffer while ``select`` sees an idle socket."""
        if self.on_publish_many is None or self._protocol not in _PARSED:
            return False
        return _set_read_ahead(getattr(self, "_ssl_context", None))

    def ack_many(self, mids: list[int], wake: bool = True) -> None:
        """PUBACK (QoS 1) for each mid, in order, as one write; the short form is valid in v5.

        ``wake=False`` queues the write without the byte on paho's wake-up socket: the network
        thread writes whatever is queued before its next ``select`` (paho's want_write), so acks
        queued while messages keep arriving leave with the next read instead of costing a
        wake-up of their own; ``flush()`` wakes it for acks still waiting (ingest, after a
        moment without messages)."""
        if not mids:
            return
        blob = b"".join(bytes((PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in mids)
        out = getattr(self, "_out_packet", None)
        if wake or out is None:
            self._packet_queue(PUBACK, blob, 0, 0)
            return
        # the entry paho's _packet_queue makes; deque.append is atomic, as it is there
        out.append(
            {
                "command": PUBACK,
                "mid": 0,
                "qos": 0,
                "pos": 0,
                "to_process": len(blob),
                "packet": blob,
                "info": None,
            }
        )

    def writes_waiting(self) -> bool:
        """Something is queued for the broker that the network thread has not written yet."""
        return bool(getattr(self, "_out_packet", None))

    def flush(self) -> None:
        """Wake the network thread so that it writes what is queued (one byte on its socketpair,
        as paho's own publish does)."""
        w = getattr(self, "_sockpairW", None)
        if w is not None and self.writes_waiting():
            try:
                w.send(b"0")
            except (BlockingIOError, OSError):
                pass  # full (it is awake already) or closed (the connection is going away)


def _set_read_ahead(context) -> bool:
    """SSL_CTX_set_read_ahead(ctx, 1), which Python's ssl does not offer, through ctypes: the
    SSL_CTX pointer is the first field after the object header of CPython's SSLContext. The pointer
    is trusted only if the options read through it are the context's own; anything unexpected
    leaves the context as it was (same behaviour, two reads per record)."""
    import sys

    if not isinstance(context, ssl.SSLContext) or sys.implementation.name != "cpython":
        return False
    try:
        import ctypes

        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # its libssl's symbols, whichever OpenSSL it was built on
        get_options, ctrl = lib.SSL_CTX_get_options, lib.SSL_CTX_ctrl
        get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
        ctrl.restype = ctypes.c_long
        ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        ptr = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not ptr or get_options(ptr) != context.options:
            return False
        ctrl(ptr, 41, 1, None)  # SSL_CTRL_SET_READ_AHEAD
        return ctrl(ptr, 40, 0, None) == 1  # SSL_CTRL_GET_READ_AHEAD
    except (OSError, AttributeError, ValueError, ImportError):
        return False


_FAST = all(
    hasattr(mqtt.Client, name)
    for name in (
        "_sock_recv",
        "_packet_queue",
        "_loop_rc_handle",
        "_easy_log",
        "_call_socket_register_write",
    )
)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    root: str  # topic root, e.g. gridtwin/demo

    @classmethod
    def of(cls, pki, identity: str, host: str, port: int, root: str) -> "Endpoint":
        """``identity``'s endpoint from a PKI (certificate and key under ``pki.dir``)."""
        return cls(
            host=host,
            port=int(port),
            ca=Path(pki.ca_cert_path),
            cert=Path(pki.cert_path(identity)),
            key=Path(pki.key_path(identity)),
            root=root,
        )

    def client(
        self, client_id: str, *, persistent: bool = False, manual_ack: bool = False, v5: bool = True
    ) -> mqtt.Client:
        """A paho client with our TLS identity; v5=False gives MQTT 3.1.1 (a session kept by
        clean_session=False instead of an expiry). Ingest's session is v5: its Receive Maximum is
        the one way a client sets how many unacknowledged messages the broker may send it (a
        3.1.1 client gets the broker's max_inflight_messages)."""
        for what, p in (
            ("CA certificate", self.ca),
            ("certificate", self.cert),
            ("private key", self.key),
        ):
            if not Path(p).is_file():
                raise PKIError(
                    f"{what} {p} does not exist",
                    hint="run `gridtwin pki init` and `gridtwin pki issue`",
                )
        cls = BufferedClient if _FAST else mqtt.Client
        if v5:
            c = cls(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=manual_ack,
            )
        else:
            c = cls(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=not persistent,
                manual_ack=manual_ack,
            )
        try:
            c.tls_set(
                ca_certs=str(self.ca),
                certfile=str(self.cert),
                keyfile=str(self.key),
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError) as exc:
            raise PKIError(
                f"cannot load the TLS identity {self.cert}: {exc}",
                hint="check that the certificate and key belong together (`gridtwin pki list`)",
            ) from None
        c.reconnect_delay_set(0.2, 5)
        c._gt_persistent = persistent
        return c

    def connect_properties(
        self, persistent: bool, receive_maximum: int | None = None
    ) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            # the broker keeps the session (and our QoS 1 backlog)
            props.SessionExpiryInterval = 0xFFFFFFFF
        if receive_maximum:
            props.ReceiveMaximum = receive_maximum
        return props

    def connect(
        self,
        c: mqtt.Client,
        *,
        persistent: bool = False,
        receive_maximum: int | None = None,
        blocking: bool = True,
    ) -> None:
        kw = {}
        if c.protocol == mqtt.MQTTv5:
            kw = dict(
                clean_start=not persistent,
                properties=self.connect_properties(persistent, receive_maximum),
            )
        try:
            if blocking:
                c.connect(self.host, self.port, keepalive=30, **kw)
            else:
                c.connect_async(self.host, self.port, keepalive=30, **kw)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(
                f"cannot reach the broker at {self.host}:{self.port}: {exc}",
                hint="is it running? `gridtwin broker run`, or check [broker] in site.toml",
            ) from None


def endpoint_from_site(site, identity: str | None = None, *, instance: int = 1) -> Endpoint:
    """A host identity's endpoint for this site (certificates from the site PKI): ``identity`` if
    given, else daemon instance ``instance``'s (``gridtwin-host``, ``gridtwin-host-2``, ...)."""
    from gridtwin.pki import (
        PKI,
        host_identity,
    )  # issue #3's module; imported late so validation code needs no PKI

    identity = identity or host_identity(site, instance)
    pki = PKI(site.certs_dir)
    if not pki.has(identity) and pki.exists():
        raise PKIError(
            f"'{identity}' has no certificate in {pki.dir}",
            hint="run `gridtwin pki issue --all` (it issues every missing identity)",
        )
    host = "localhost" if "localhost" in site.broker.hosts else site.broker.hosts[0]
    return Endpoint(
        host=host,
        port=site.broker.port,
        ca=Path(pki.ca_cert_path),
        cert=Path(pki.cert_path(identity)),
        key=Path(pki.key_path(identity)),
        root=site.topic_root,
    )
