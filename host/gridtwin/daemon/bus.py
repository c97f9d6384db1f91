"""The daemon's one MQTT session, and the only thing in the daemon that touches paho.

The broker makes the client id the certificate's CN, so the host identity can hold exactly one
session: everything the daemon sends (commands, ``_host/`` state, alerts, the twin) and everything
it receives goes through this object.

- **In:** a persistent session (fixed client id, clean_session off), subscribed to ``<root>/#``
  (with ``shared_group``: ``$share/<group>/<root>/#`` plus status and acks directly), manual acks.
  Messages go to the one ``sink(messages)`` on paho's network thread, a list of ``(generation,
  mid, qos, topic, payload)`` at a time (all a read brought); the consumer acknowledges with
  ``ack(generation, mids)`` once the message is durable.
  The *generation* counts connections: an ack for a message of an earlier connection is dropped
  (the broker redelivers it anyway).
- **Out:** ``publish(topic, payload, qos, retain)``; ``publish_host(suffix, payload)`` for
  ``<root>/_host/...``, also handed to the ``published`` listeners in this process: the
  subscriptions ask No Local (MQTT 5), so the broker does not send the daemon its own messages.
- **Link state:** ``connected``, ``subscribed``, ``wait_subscribed()``, and ``on_link`` listeners
  called with ``"connected"``, ``"subscribed"`` or ``"disconnected"``.
- A retained ``_host/daemon/<client id>`` status says online, and the will says offline.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from paho.mqtt.subscribeoptions import SubscribeOptions

from gridtwin.errors import GridTwinError
from gridtwin.sitedefaults import RECEIVE_MAXIMUM

log = logging.getLogger("gridtwin.daemon.bus")


class NotConnected(GridTwinError):
    """The daemon is not connected to the broker: nothing can be published now."""


class Bus:
    def __init__(
        self,
        endpoint,
        *,
        client_id: str,
        shared_group: str = "",
        receive_maximum: int = RECEIVE_MAXIMUM,
    ):
        self.endpoint, self.root = endpoint, endpoint.root
        self.client_id, self.shared_group, self.receive_maximum = (
            client_id,
            shared_group,
            receive_maximum,
        )
        self.status_topic = f"{self.root}/_host/daemon/{client_id}"
        self.generation = 0
        self.connected = self.subscribed = False
        # fn([(generation, mid, qos, topic, payload), ...]), on paho's network thread
        self.sink = None
        self.on_link: list = []  # fn(event): "connected" | "subscribed" | "disconnected"
        # fn(topic, payload bytes): what publish_host sends, for readers in this process (the
        # broker does not send a client its own messages back: its subscriptions ask No Local)
        self.published: list = []
        self._subscribed = threading.Event()
        self._stopping = False
        self._last_fail_log = -1e9
        self.client = None
        self.read_ahead = False  # OpenSSL reads every waiting TLS record at once (connection.py)
        # fn() -> seconds the network thread lets messages gather in its socket before it reads
        # on (the fast client's BufferedClient.read_pause; ingest's to set, before start())
        self.read_pause = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        # MQTT 5: Receive Maximum (below) bounds what the broker sends before our acks; on 3.1.1
        # the broker's max_inflight_messages (100 by default) would, whatever the daemon says
        c = self.endpoint.client(self.client_id, persistent=True, manual_ack=True)
        c.on_connect, c.on_disconnect, c.on_message = (
            self._on_connect,
            self._on_disconnect,
            self._on_message,
        )
        c.on_subscribe, c.on_connect_fail = self._on_subscribe, self._on_connect_fail
        c.will_set(self.status_topic, json.dumps({"state": "offline"}), qos=1, retain=True)
        if hasattr(c, "on_publish_many"):
            c.on_publish_many = self._deliver
            # one recv for all the TLS records waiting, not two per message
            self.read_ahead = c.read_ahead()
            c.read_pause = self.read_pause
        self.client = c
        self.endpoint.connect(
            c, persistent=True, receive_maximum=self.receive_maximum, blocking=False
        )
        c.loop_start()

    def stop(self) -> None:
        """Say offline (a clean disconnect suppresses the will) and disconnect."""
        self._stopping = True
        if self.client:
            if self.connected:
                self.client.publish(
                    self.status_topic, json.dumps({"state": "offline"}), qos=1, retain=True
                )
            self.client.disconnect()
            self.client.loop_stop()

    def wait_subscribed(self, timeout: float = 10) -> bool:
        """True once connected *and* subscribed (the broker then queues everything for us)."""
        return self._subscribed.wait(timeout) and self.subscribed

    # -- out ----------------------------------------------------------------------------------
    def publish(self, topic: str, payload, qos: int = 1, retain: bool = False):
        """Publish (a dict goes as JSON); returns paho's MQTTMessageInfo. Raises NotConnected."""
        c = self.client
        if c is None or not self.connected:
            raise NotConnected(
                "the daemon is not connected to the broker",
                hint="see the daemon's log and `gridtwin doctor`",
            )
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return c.publish(topic, body, qos=qos, retain=retain)

    def publish_host(self, suffix: str, payload, retain: bool = True) -> bool:
        """``<root>/_host/<suffix>``, QoS 1, retained by default (``b""`` clears a retained topic).
        Host topics carry current state and are re-published on change, so while the daemon is
        not connected this is dropped (False), not queued."""
        topic = f"{self.root}/_host/{suffix}"
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        if self.published:  # readers in this process (the broker does not send it back)
            raw = body.encode() if isinstance(body, str) else body
            for fn in self.published:
                try:
                    fn(topic, raw)
                except Exception:  # a reader's bug never stops the publish
                    log.exception("a reader of the daemon's own publications failed")
        try:
            self.publish(topic, body, qos=1, retain=retain)
            return True
        except NotConnected:
            return False

    # -- in -----------------------------------------------------------------------------------
    def ack(self, generation: int, mids: list[int], wake: bool = True) -> None:
        """PUBACK the QoS 1 messages ``mids`` received on connection ``generation``. ``wake=False``:
        they leave with the network thread's next read or ``flush_acks()`` (the fast client only;
        paho's own ``ack`` always wakes it)."""
        c = self.client
        if generation != self.generation or c is None or not mids:
            return  # an earlier connection's messages come back from the broker anyway
        if hasattr(c, "ack_many"):
            c.ack_many(mids, wake)
        else:
            for mid in mids:
                c.ack(mid, 1)

    def acks_waiting(self) -> bool:
        """Acks queued with ``wake=False`` that the network thread has not written yet."""
        c = self.client
        return c is not None and hasattr(c, "writes_waiting") and c.writes_waiting()

    def flush_acks(self) -> None:
        """Wake the network thread for acks queued with ``wake=False`` (nothing if none wait)."""
        c = self.client
        if c is not None and hasattr(c, "flush"):
            c.flush()

    def _deliver(self, messages: list) -> None:
        self.sink(messages)  # the fast client tags each with deliver_tag, the generation

    def _on_message(self, client, userdata, msg) -> None:
        self.sink([(self.generation, msg.mid, msg.qos, msg.topic, msg.payload)])

    # -- paho callbacks (network thread) ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.connected = False
            log.error(
                "broker refused the connection: %s (is %s allowed by the ACL?)",
                reason_code,
                self.client_id,
            )
            return
        self.generation += 1
        client.deliver_tag = self.generation  # (the fast client's; a plain one ignores it)
        self.connected, self.subscribed = True, False
        self._subscribed.clear()
        log.info(
            "connected to %s:%s as %s (session present: %s)",
            self.endpoint.host,
            self.endpoint.port,
            self.client_id,
            flags.session_present,
        )
        client.publish(
            self.status_topic,
            json.dumps({"state": "online", "ts": int(time.time() * 1000)}),
            qos=1,
            retain=True,
        )
        everything = f"{self.root}/#"
        # No Local: the broker does not send the daemon what it published itself (commands,
        # _host/ states and alerts), which ingest would only receive, skip and ack: 1,000
        # nodes going stale at once was 2,000 such messages back. (MQTT 5 forbids it on a shared
        # subscription, where the other instances' publications come back all the same.)
        mine = SubscribeOptions(qos=1, noLocal=True)
        if self.shared_group:
            # retained birth/will messages are not delivered on shared subscriptions: every daemon
            # also subscribes to status directly (registry updates are idempotent upserts); acks
            # too: the daemon that sent a command must see its ack (duplicates are ignored)
            client.subscribe(
                [
                    (f"$share/{self.shared_group}/{everything}", SubscribeOptions(qos=1)),
                    (f"{self.root}/+/status", mine),
                    (f"{self.root}/+/ack", mine),
                ]
            )
        else:
            client.subscribe([(everything, mine)])
        self._emit("connected")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            log.error(
                "broker refused the subscription (%s): does the ACL let %s read %s/#?",
                bad[0],
                self.endpoint.cert.stem,
                self.root,
            )
            return
        self.subscribed = True
        self._subscribed.set()
        self._emit("subscribed")

    def _on_connect_fail(self, client, userdata):
        now = time.monotonic()
        if (
            now - self._last_fail_log >= 30
        ):  # paho retries every few seconds; say it, not every time
            self._last_fail_log = now
            log.warning(
                "cannot reach the broker at %s:%s (not running, wrong port or TLS refused); "
                "retrying. Messages wait in the broker's session meanwhile.",
                self.endpoint.host,
                self.endpoint.port,
            )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = self.subscribed = False
        self._subscribed.clear()
        if not self._stopping:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)
        self._emit("disconnected")

    def _emit(self, event: str) -> None:
        for fn in list(self.on_link):
            try:
                fn(event)
            except Exception:
                log.exception("a link listener failed")
