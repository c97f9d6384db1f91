"""Where the broker is and who we are to it: one place that builds paho clients with mutual TLS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gridtwin.errors import BrokerError, PKIError

HOST_IDENTITY = "gridtwin-host"
PUBACK = 0x40


class BufferedClient(mqtt.Client):
    """paho's client with two changes that take ingest from ~6k to tens of thousands msg/s.

    paho reads a packet as three ``recv`` calls (1 byte command, 1 byte per length digit, the body)
    and handles one packet per ``select``: over TLS that is several SSL reads per message. Here each
    read takes up to 64 KiB into a buffer that later calls are served from, and ``loop_read`` goes
    on while the buffer holds data (select cannot see it). ``ack_many`` queues all PUBACKs of a
    batch as one write instead of one TLS record per 4-byte ack.

    Both rely on paho internals (``_sock_recv``, ``_packet_queue``) of paho-mqtt 2.x, checked at
    import time; without them ``make_client`` falls back to the plain client (slower, same result).
    """

    _READ = 65536

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._gt_buf = memoryview(b"")
        self._gt_sock = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._gt_sock is not self._sock:  # a new connection: nothing buffered belongs to it
            self._gt_sock, self._gt_buf = self._sock, memoryview(b"")
        if not self._gt_buf:
            # mosquitto sends each packet as its own TLS record and one SSL read returns one record:
            # gather records until the socket has no more (or 64 KiB) before parsing
            chunks, size = [], 0
            while size < self._READ:
                try:
                    data = super()._sock_recv(self._READ)
                except BlockingIOError:
                    if chunks:
                        break
                    raise
                if not data:
                    if chunks:
                        break
                    return b""
                chunks.append(data)
                size += len(data)
            self._gt_buf = memoryview(b"".join(chunks))
        out = bytes(self._gt_buf[:bufsize])
        self._gt_buf = self._gt_buf[bufsize:]
        return out

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._gt_buf and self._gt_sock is self._sock:
            rc = super().loop_read(max_packets)
        return rc

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK (QoS 1) for each mid, in order, as one write; the short form is valid in v5."""
        if mids:
            blob = b"".join(bytes((PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in mids)
            self._packet_queue(PUBACK, blob, 0, 0)


_FAST = all(hasattr(mqtt.Client, name) for name in ("_sock_recv", "_packet_queue", "loop_read"))


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    root: str  # topic root, e.g. gridtwin/demo

    def client(self, client_id: str, *, persistent: bool = False, manual_ack: bool = False,
               v5: bool = True) -> mqtt.Client:
        """A paho client with our TLS identity. v5=False gives MQTT 3.1.1, whose PUBLISH carries no
        properties: paho's v5 property decoding costs about a third of the per-message time, which
        matters to ingest only (its session is kept by clean_session=False instead of an expiry)."""
        for what, p in (("CA certificate", self.ca), ("certificate", self.cert), ("private key", self.key)):
            if not Path(p).is_file():
                raise PKIError(f"{what} {p} does not exist", hint="run `gridtwin pki init` and `gridtwin pki issue`")
        cls = BufferedClient if _FAST else mqtt.Client
        if v5:
            c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
        else:
            c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                    clean_session=not persistent, manual_ack=manual_ack)
        try:
            c.tls_set(ca_certs=str(self.ca), certfile=str(self.cert), keyfile=str(self.key),
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError) as exc:
            raise PKIError(f"cannot load the TLS identity {self.cert}: {exc}",
                           hint="check that the certificate and key belong together (`gridtwin pki list`)") from None
        c.reconnect_delay_set(0.2, 5)
        c._gt_persistent = persistent
        return c

    def connect_properties(self, persistent: bool, receive_maximum: int | None = None) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 0xFFFFFFFF  # the broker keeps the session (and our QoS 1 backlog)
        if receive_maximum:
            props.ReceiveMaximum = receive_maximum
        return props

    def connect(self, c: mqtt.Client, *, persistent: bool = False, receive_maximum: int | None = None,
                blocking: bool = True) -> None:
        kw = {}
        if c.protocol == mqtt.MQTTv5:
            kw = dict(clean_start=not persistent, properties=self.connect_properties(persistent, receive_maximum))
        try:
            if blocking:
                c.connect(self.host, self.port, keepalive=30, **kw)
            else:
                c.connect_async(self.host, self.port, keepalive=30, **kw)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(f"cannot reach the broker at {self.host}:{self.port}: {exc}",
                              hint="is it running? `gridtwin broker run`, or check [broker] in site.toml") from None


def endpoint_from_site(site, identity: str = HOST_IDENTITY) -> Endpoint:
    """The host identity's endpoint for this site (certificates from the site PKI)."""
    from gridtwin.pki import PKI  # issue #3's module; imported late so validation code needs no PKI

    pki = PKI(site.certs_dir)
    host = "localhost" if "localhost" in site.broker.hosts else site.broker.hosts[0]
    return Endpoint(host=host, port=site.broker.port, ca=Path(pki.ca_cert_path),
                    cert=Path(pki.cert_path(identity)), key=Path(pki.key_path(identity)), root=site.topic_root)
