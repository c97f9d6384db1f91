"""MQTT side of the daemon: subscribe, validate, store, *then* acknowledge.

Threads: paho's network loop only appends ``(generation, mid, qos, topic, payload)`` to a deque
(cheap, so the socket is drained at full speed); one writer thread takes everything queued as a
batch, validates it, commits it in one transaction and only then sends the PUBACKs, in receive
order. Batches therefore grow with the load: one message at a time when quiet (low latency),
thousands under a burst (high throughput).

Why nothing is lost: the session is persistent (fixed client id, clean_start=False, session
expiry) and acks are manual. A message is acked only after its transaction committed, so a
``kill -9`` at any instant leaves every unacked message with the broker, which redelivers it on
reconnect; readings committed but not yet acked come back as duplicates and the (node, boot, seq)
primary key stores them once. Acks of messages received on an earlier connection are dropped
(the broker redelivers those anyway), hence the connection *generation*.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time

import paho.mqtt.client as mqtt

from gridtwin.daemon import validate
from gridtwin.daemon.lineprotocol import LineProtocolError, telemetry_line
from gridtwin.daemon.metrics import Metrics
from gridtwin.daemon.store_sqlite import BatchResult, CorruptDatabase, StoreError

log = logging.getLogger("gridtwin.daemon.ingest")

# reasons logged at most once per node and reason in this many seconds (a flood must not fill the disk)
LOG_EVERY_S = 10.0


class Ingest:
    def __init__(self, endpoint, store, *, client_id: str = "gridtwin-daemon", known_nodes=None,
                 shared_group: str = "", limits: validate.Limits = validate.DEFAULT_LIMITS,
                 metrics: Metrics | None = None, batch_max: int = 20000, receive_maximum: int = 2000,
                 influx_measurement: str | None = None, on_spool=None):
        self.endpoint, self.store = endpoint, store
        self.root = endpoint.root
        self.client_id = client_id
        self.known = frozenset(known_nodes) if known_nodes is not None else None
        self.shared_group = shared_group
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.batch_max = batch_max
        self.receive_maximum = receive_maximum
        self.influx_measurement = influx_measurement   # set: also spool line protocol for InfluxDB
        self.on_spool = on_spool
        # after each commit: fn(list[Telemetry]) (twin engine, tail; may include redeliveries,
        # (node, boot, seq) tells them apart) and fn(statuses, acks) (dispatcher)
        self.listeners: list = []
        self.batch_hooks: list = []
        self._inbox: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._drained = threading.Event()
        self.max_queued = 2 * batch_max
        self._stop = threading.Event()
        self._gen = 0
        self._logged: dict = {}
        self._last_fail_log = -1e9
        self._suppressed: dict = {}
        self._node_rejects: dict = {}   # node -> (count, last reason, at ms), stored with the next batch
        self.on_fatal = None            # fn(thread name): the writer died (service.Daemon exits)
        self.client: mqtt.Client | None = None
        self._writer: threading.Thread | None = None
        self.host_prefix = f"{self.root}/_host/"
        self.status_topic = f"{self.root}/_host/daemon/{client_id}"

    # -- MQTT callbacks (network thread) ----------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.metrics.connected = False
            log.error("broker refused the connection: %s (is %s allowed by the ACL?)", reason_code, self.client_id)
            return
        self._gen += 1
        self.metrics.connected = True
        self.metrics.subscribed = False
        log.info("connected to %s:%s as %s (session present: %s)", self.endpoint.host, self.endpoint.port,
                 self.client_id, flags.session_present)
        # host status for dashboards, retained; the will below turns it offline if we vanish
        client.publish(self.status_topic, json.dumps({"state": "online", "ts": int(time.time() * 1000)}),
                       qos=1, retain=True)
        everything = f"{self.root}/#"
        if self.shared_group:
            # retained birth/will messages are not delivered on shared subscriptions: every daemon also
            # subscribes to status directly (registry updates are idempotent upserts)
            # acks too: the daemon that sent a command must see its ack (duplicates are ignored)
            client.subscribe([(f"$share/{self.shared_group}/{everything}", 1), (f"{self.root}/+/status", 1),
                              (f"{self.root}/+/ack", 1)])
        else:
            client.subscribe(everything, 1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("broker refused the subscription (%s): does the ACL let %s read %s/#?", bad[0],
                      self.endpoint.cert.stem, self.root)
            return
        self.metrics.subscribed = True

    def _on_connect_fail(self, client, userdata):
        now = time.monotonic()
        if now - self._last_fail_log >= 30:  # paho retries every few seconds; say it, not every time
            self._last_fail_log = now
            log.warning("cannot reach the broker at %s:%s (not running, wrong port or TLS refused); retrying. "
                        "Messages wait in the broker's session meanwhile.", self.endpoint.host, self.endpoint.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.metrics.connected = self.metrics.subscribed = False
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg):
        self._on_raw(msg.topic, msg.mid, msg.qos, msg.payload)

    def _on_raw(self, topic, mid, qos, payload):
        # network thread: as little as possible, the writer thread does the rest
        inbox = self._inbox
        inbox.append((self._gen, mid, qos, topic, payload))
        if not self._wake.is_set():
            self._wake.set()
        if len(inbox) > self.max_queued:
            # backpressure: stop reading until the writer catches up, so a backlog waits in the
            # broker (which persists it) instead of in our memory; TCP flow control does the rest
            self._drained.clear()
            while len(inbox) > self.batch_max and not self._stop.is_set():
                self._drained.wait(0.5)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        c = self.endpoint.client(self.client_id, persistent=True, manual_ack=True, v5=False)
        c.on_connect, c.on_disconnect, c.on_message = self._on_connect, self._on_disconnect, self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_connect_fail = self._on_connect_fail
        c.will_set(self.status_topic, json.dumps({"state": "offline"}), qos=1, retain=True)
        if hasattr(c, "on_publish_raw"):
            c.on_publish_raw = self._on_raw
        self.client = c
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()
        self.endpoint.connect(c, persistent=True, receive_maximum=self.receive_maximum, blocking=False)
        c.loop_start()

    def stop(self) -> None:
        """Stop taking messages, store what was received, and disconnect (unacked ones come back)."""
        self._stop.set()
        self._wake.set()
        if self._writer:
            self._writer.join(timeout=30)
        if self.client:
            if self.metrics.connected:  # a clean stop says so (a disconnect suppresses the will)
                self.client.publish(self.status_topic, json.dumps({"state": "offline"}), qos=1, retain=True)
            self.client.disconnect()
            self.client.loop_stop()

    def wait_connected(self, timeout: float = 10) -> bool:
        """True once connected *and* subscribed (the broker then queues everything for us)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metrics.subscribed:
                return True
            time.sleep(0.01)
        return False

    # -- writer thread ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        inbox = self._inbox
        try:
            while True:
                self._wake.clear()
                while inbox:
                    n = min(len(inbox), self.batch_max)
                    self._process([inbox.popleft() for _ in range(n)])
                    self._drained.set()
                if self._stop.is_set():
                    return
                self._wake.wait(1.0)
        except CorruptDatabase as exc:
            log.critical("%s; %s", exc.message, exc.hint)
            if self.on_fatal:
                self.on_fatal("ingest-writer")
        except BaseException:
            # Should never happen (every message is stored or rejected); if it does, say so loudly
            # and let /healthz turn 503 and the daemon exit non-zero, so its supervisor restarts it
            # (the unacknowledged batch comes back from the broker).
            log.critical("the ingest writer stopped: nothing more is stored until the daemon restarts",
                         exc_info=True)
            if self.on_fatal:
                self.on_fatal("ingest-writer")

    def _reject(self, topic: str, node: str | None, r: validate.Rejected) -> None:
        self.metrics.rejected[r.reason] += 1
        now_ms = int(time.time() * 1000)
        if node is not None and r.reason != "unknown_node" and len(self._node_rejects) < 10000:
            n, _text, _at = self._node_rejects.get(node, (0, "", 0))
            self._node_rejects[node] = (n + 1, f"{r.reason}: {r.detail}"[:300], now_ms)
        # one line per (node, reason) every LOG_EVERY_S at most: a flood must not fill the disk
        key = (node, r.reason)
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            if len(self._logged) > 10000:
                self._logged.clear()
            self._logged[key] = now
            more = self._suppressed.pop(key, 0)
            more = f" (+{more} more like it in the last {LOG_EVERY_S:.0f} s)" if more else ""
            log.warning("rejected node=%s topic=%r reason=%s: %s%s", node or "?", topic[:120], r.reason,
                        r.detail[:300], more)
        elif len(self._suppressed) < 10000:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1

    def _store(self, tel, statuses, acks, logs, spool):
        """One transaction for the batch. Should the store refuse a value for a reason other than
        the database itself (a bind error: something validation let through), the batch is
        written message by message and only the message that fails is rejected ("internal")."""
        rejects, self._node_rejects = self._node_rejects, {}
        try:
            return self.store.write_batch(tel, statuses, acks, logs, spool, rejects=rejects)
        except StoreError:
            self._node_rejects.update(rejects)
            raise
        except Exception:
            pass
        root = self.root
        singles = [("telemetry", t.node, ([t], (), (), (), [spool[i]] if spool else None))
                   for i, t in enumerate(tel)]
        singles += [("status", n, ((), [(n, st)], (), (), None)) for n, st in statuses]
        singles += [("ack", n, ((), (), [(n, a)], (), None)) for n, a in acks]
        singles += [("log", n, ((), (), (), [(n, lg)], None)) for n, lg in logs]
        total = BatchResult(0, 0, [])
        for kind, node, parts in singles:
            try:
                res = self.store.write_batch(*parts)
            except StoreError:
                self._node_rejects.update(rejects)
                raise
            except Exception as exc:
                self._reject(f"{root}/{node}/{kind}", node,
                             validate.Rejected("internal", f"the store refused it: {exc!r}"[:200]))
                continue
            total.stored += res.stored
            total.duplicates += res.duplicates
            total.gaps += res.gaps
        if rejects or self._node_rejects:
            merged = dict(rejects)
            merged.update(self._node_rejects)
            self._node_rejects = {}
            try:
                self.store.write_batch((), rejects=merged)
            except Exception:  # bookkeeping only: never worth the batch
                pass
        return total

    def _process(self, batch: list) -> None:
        m = self.metrics
        root, known, limits = self.root, self.known, self.limits
        tel, statuses, acks, logs = [], [], [], []
        now_ms = int(time.time() * 1000)
        m.received += len(batch)
        for _gen, _mid, _qos, topic, payload in batch:
            if topic.startswith(self.host_prefix) or topic.endswith("/cmd"):
                m.received -= 1  # the host's own output and commands: not node messages
                continue
            node = None
            try:
                node, kind = validate.split_topic(topic, root, known)
                if kind == "telemetry":
                    tel.append(validate.telemetry(node, payload, limits, now_ms))
                elif kind == "status":
                    statuses.append((node, validate.status(node, payload, limits)))
                elif kind == "ack":
                    acks.append((node, validate.ack(node, payload, limits)))
                else:
                    logs.append((node, validate.log(node, payload, limits)))
            except validate.Rejected as r:
                self._reject(topic, node, r)
            except Exception as exc:  # a validator bug must cost one message, never the daemon
                self._reject(topic, node, validate.Rejected("internal", f"validating failed: {exc!r}"[:200]))
        spool = None
        if self.influx_measurement and tel:
            # validation leaves nothing line protocol cannot carry; should that ever change, the
            # message is rejected as a whole (stored nowhere), not stored in SQLite only
            spool, kept = [], []
            for t in tel:
                try:
                    spool.append(telemetry_line(t, self.influx_measurement))
                    kept.append(t)
                except LineProtocolError as exc:
                    self._reject(f"{root}/{t.node}/telemetry", t.node, validate.Rejected("metric", str(exc)))
            tel = kept
        backoff = 0.1
        while True:
            try:
                res = self._store(tel, statuses, acks, logs, spool)
                break
            except CorruptDatabase:
                # retrying cannot help: stop (the batch stays unacknowledged at the broker) and let
                # the daemon exit non-zero; its next start says the same at quick_check
                raise
            except StoreError as exc:
                m.store_error()
                log.error("%s; retrying in %.1f s (messages stay unacknowledged meanwhile)", exc, backoff)
                if self._stop.wait(backoff):
                    return  # not acked: the broker redelivers after restart
                backoff = min(backoff * 2, 10)
        m.batches += 1
        m.stored += res.stored
        m.duplicates += res.duplicates
        if res.gaps:  # pending until replay had its chance (Daemon.settle_gaps confirms or drops them)
            log.debug("pending gaps: %s", res.gaps[:5])
        live = [t.ts for t in tel if not t.hist]
        if live:
            m.last_lag_ms = max(0, int(time.time() * 1000) - max(live))
        if spool and self.on_spool:
            self.on_spool()
        gen, client = self._gen, self.client
        mids = [mid for g, mid, qos, _t, _p in batch if qos == 1 and g == gen]
        if hasattr(client, "ack_many"):
            client.ack_many(mids)
        else:
            for mid in mids:
                client.ack(mid, 1)
        for fn in self.listeners:
            try:
                fn(tel)
            except Exception:
                log.exception("a telemetry listener failed")
        for fn in self.batch_hooks:
            try:
                fn(statuses, acks)
            except Exception:
                log.exception("a status/ack hook failed")
