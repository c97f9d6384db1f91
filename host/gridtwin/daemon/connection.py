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


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    root: str  # topic root, e.g. gridtwin/demo

    def client(self, client_id: str, *, persistent: bool = False, manual_ack: bool = False) -> mqtt.Client:
        for what, p in (("CA certificate", self.ca), ("certificate", self.cert), ("private key", self.key)):
            if not Path(p).is_file():
                raise PKIError(f"{what} {p} does not exist", hint="run `gridtwin pki init` and `gridtwin pki issue`")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        manual_ack=manual_ack)
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
        props = self.connect_properties(persistent, receive_maximum)
        try:
            if blocking:
                c.connect(self.host, self.port, keepalive=30, clean_start=not persistent, properties=props)
            else:
                c.connect_async(self.host, self.port, keepalive=30, clean_start=not persistent, properties=props)
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
