"""Ingest: validate, store, *then* acknowledge what the daemon's bus (``bus.py``) receives.

Threads: the bus hands each message over on paho's network loop, which only appends
``(generation, mid, qos, topic, payload)`` to a deque
(cheap, so the socket is drained at full speed); one writer thread takes everything queued as a
batch, validates it, commits it in one transaction and only then sends the PUBACKs, in receive
order. Batches therefore grow with the load: one message at a time when quiet (low latency),
thousands under a burst (high throughput).

When the writer falls SPILL_AT messages behind (a backlog, a burst), it *spills* instead: what
waits is committed as received (``SqliteStore.spill``) and acked, and worked off later, each
spilled batch stored in the transaction that deletes it; nothing newer is stored before it.

Why nothing is lost: the session is persistent (fixed client id, clean_start=False, session
expiry) and acks are manual. A message is acked only after its transaction committed, so a
``kill -9`` at any instant leaves every unacked message with the broker, which redelivers it on
reconnect; readings committed but not yet acked come back as duplicates and the (node, boot, seq)
primary key stores them once. Acks of messages received on an earlier connection are dropped
(the broker redelivers those anyway), hence the connection *generation*.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from gridtwin.daemon import validate
from gridtwin.daemon.lineprotocol import LineProtocolError, telemetry_line
from gridtwin.daemon.metrics import Metrics
from gridtwin.daemon.store_sqlite import BatchResult, CorruptDatabase, StoreError

log = logging.getLogger("gridtwin.daemon.ingest")

# reasons logged at most once per node and reason in this many seconds (a flood must not fill the
# disk)
LOG_EVERY_S = 10.0
# messages waiting that end the linger at once: about the batch size past which a bigger batch costs
# no less per message, so at 10,000 msg/s a batch is committed as soon as it is worth it
LINGER_UNTIL = 100
# Below this rate (msg/s) the writer lingers QUIET_LINGER_S at most, not linger_s: a commit a
# message costs a few % of a core there at most, and a longer wait would only delay readings and
# the acks `gridtwin cmd` waits for. From it up (1,000 nodes at 1 Hz), linger_s (100 ms) makes a
# transaction of ~100 messages instead of ~20: the writer's CPU a message went from 29-35 to 22-25
# us (a commit costs ~225 us of a thread that slept); at 10,000 msg/s LINGER_UNTIL ends it sooner.
LINGER_RATE = 200
QUIET_LINGER_S = 0.02
LINGER_S = 0.1  # the default of [daemon] linger_ms (daemon/config.py says the same, tested)
# how long before the writer's linger ends (or the batch is full) paho's thread reads what gathered
# in its socket during a read pause (_read_pause)
READ_EARLY_S = 0.005

# Messages waiting that make the writer spill instead of store: it has fallen this far behind (a
# backlog after a restart or an outage, a burst), so it keeps what waits as received, in one
# transaction, and acks it; the broker's queue then drains at the network's pace, not at
# validation's. The spilled rows are worked off, in order and before anything newer, once the
# stream slows. Below the broker's window (receive_maximum).
SPILL_AT = 1000
# A spill is kept in rows of this many messages at most (one transaction for all of them), and
# while spills go on (one in the last SPILLING_S) a transaction works off WORK_OFF_BUSY messages at
# most: between two, the writer spills whatever waits again, so the acks the broker's window waits
# for are never held longer than that (a whole spill worked off at once, 20,000 messages, held
# them a quarter of a second, the broker idle meanwhile).
SPILL_ROW = 2000
WORK_OFF_BUSY = 5000
SPILLING_S = 0.1
# after a spill, how long the writer waits for SPILL_AT more before it works off spilled rows
# instead: while a backlog lasts, the broker refills the window it just acked within a few ms;
# a live stream that is merely fast (10,000 msg/s) does not, and the spilled rows get their turn
SPILL_WAIT_S = 0.02

_NOT_NODE_DATA = ("/cmd", "/ota", "/ota/ack")
# Acks of a batch are queued without waking paho's network thread: while messages arrive it is
# awake anyway and writes them before its next select (at 1,000 msg/s a third of its wake-ups were
# for acks alone). Once no message has come for this long, the writer wakes it for them.
ACK_HOLD_S = 0.02


class Ingest:
    """Validate, store, then acknowledge everything the bus receives (see the module docstring)."""

    def __init__(
        self,
        bus,
        store,
        *,
        known_nodes=None,
        limits: validate.Limits = validate.DEFAULT_LIMITS,
        metrics: Metrics | None = None,
        batch_max: int = 20000,
        influx_measurement: str | None = None,
        on_spool=None,
        linger_s: float = LINGER_S,
    ):
        self.bus, self.store = bus, store
        self.root = bus.root
        self.known = frozenset(known_nodes) if known_nodes is not None else None
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.batch_max = batch_max
        # A moment for more messages before a small batch is committed, from LINGER_RATE msg/s up
        # (_linger): at 1,000 nodes x 1 Hz one transaction (and one wake-up of this thread) then
        # carries ~100 messages instead of 1, which is most of the per-message cost at moderate
        # rates; bursts fill LINGER_UNTIL at once.
        self.linger_s = linger_s
        self._rate, self._counted, self._count_since = 0.0, 0, time.monotonic()  # see _linger()
        self.influx_measurement = influx_measurement  # set: also spool line protocol for InfluxDB
        self.on_spool = on_spool
        # after each commit: fn(list[Telemetry]) (twin engine, tail; may include redeliveries,
        # (node, boot, seq) tells them apart) and fn(statuses, acks) (dispatcher)
        self.listeners: list = []
        self.batch_hooks: list = []
        self.idle_hooks: list = []  # fn(), on this thread, after a second without messages
        self.last_rows: tuple | None = None  # rowids of the batch the listeners hear of
        self._inbox: collections.deque = collections.deque()
        # ms: when the oldest message not yet taken by the writer arrived, and the oldest of the
        # batch it is storing (None: nothing waiting). heard_until() says up to when the store
        # holds everything the broker sent, which is what a node's silence is judged against.
        self._pending_since: int | None = None
        self._taken_since: int | None = None
        self._wake = threading.Event()
        self._full = threading.Event()  # LINGER_UNTIL messages are waiting: stop lingering
        self._spill_ready = threading.Event()  # SPILL_AT messages are waiting
        # spilled batches not yet stored, oldest first: (id, when its oldest message arrived, ms,
        # messages); and how many messages they hold
        self._spilled = collections.deque(
            store.spilled_index(bus.client_id) if store is not None else ()
        )
        self.spill_waiting = sum(n for _id, _at, n in self._spilled)
        self._spilling_until = 0.0  # monotonic: spills went on until then (WORK_OFF_BUSY)
        self._drained = threading.Event()
        self.max_queued = 2 * batch_max
        self._stop = threading.Event()
        self._logged: dict = {}
        self._suppressed: dict = {}
        # node -> (count, last reason, at ms), stored with the next batch
        self._node_rejects: dict = {}
        self.on_fatal = None  # fn(thread name): the writer died (service.Daemon exits)
        self._writer: threading.Thread | None = None
        self.host_prefix = f"{self.root}/_host/"
        bus.sink = self._on_raw
        bus.read_pause = self._read_pause

    # the session's facts, for tests and logs (the bus owns them)
    client_id = property(lambda self: self.bus.client_id)
    shared_group = property(lambda self: self.bus.shared_group)
    _gen = property(lambda self: self.bus.generation)

    def _on_raw(self, messages: list) -> None:
        # paho's network thread, [(gen, mid, qos, topic, payload)]: as little as possible, the
        # writer thread does the rest
        inbox = self._inbox
        inbox.extend(messages)
        if self._pending_since is None:
            self._pending_since = int(time.time() * 1000)
        if not self._wake.is_set():
            self._wake.set()
        n = len(inbox)
        if n >= LINGER_UNTIL and not self._full.is_set():
            self._full.set()
        if n >= SPILL_AT and not self._spill_ready.is_set():
            self._spill_ready.set()
        if n > self.max_queued:
            # backpressure: stop reading until the writer catches up, so a backlog waits in the
            # broker (which persists it) instead of in our memory; TCP flow control does the rest
            self._drained.clear()
            while len(inbox) > self.batch_max and not self._stop.is_set():
                self._drained.wait(0.5)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer; the bus delivers once it is started (Daemon starts it after this)."""
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()

    def stop(self) -> None:
        """Stop taking messages and store what was received (unacked ones come back)."""
        self._stop.set()
        self._wake.set()
        self._full.set()
        self._spill_ready.set()
        if self._writer:
            self._writer.join(timeout=30)

    def heard_until(self, now_ms: int) -> int:
        """Up to when (ms) the store holds every message the daemon received: ``now_ms`` when
        nothing waits, else when the oldest message not yet stored arrived (a database that is
        locked, a backlog being worked off, spilled messages). The node watch judges silence up
        to here only: a node whose readings wait in the daemon is not silent."""
        spilled = self._spilled
        waits = [t for t in (self._taken_since, self._pending_since) if t is not None]
        if spilled:
            try:
                waits.append(spilled[0][1])
            except IndexError:  # worked off meanwhile (the writer's thread)
                pass
        return min(now_ms, *waits) if waits else now_ms

    def wait_connected(self, timeout: float = 10) -> bool:
        """True once connected *and* subscribed (the broker then queues everything for us)."""
        return self.bus.wait_subscribed(timeout)

    # -- writer thread ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        inbox = self._inbox
        try:
            while True:
                self._wake.clear()
                self._full.clear()  # set again by the next message if LINGER_UNTIL are waiting
                if (
                    inbox
                    and len(inbox) < LINGER_UNTIL
                    and self.linger_s
                    and not self._spilled
                    and not self._stop.is_set()
                ):
                    # up to linger_s for more, less once a batch worth committing is waiting
                    self._full.wait(self._linger())
                while inbox or (self._spilled and not self._stop.is_set()):
                    if self._spilled or len(inbox) >= SPILL_AT:
                        self._catch_up()
                        continue
                    batch, since = self._take()
                    self._taken_since = since
                    self._process(batch)
                    self._counted += len(batch)
                    self._taken_since = None
                    self._drained.set()
                if self._stop.is_set():
                    self.bus.flush_acks()
                    return
                held = self.bus.acks_waiting()
                if not self._wake.wait(ACK_HOLD_S if held else 1.0):
                    if held:
                        self.bus.flush_acks()
                    else:
                        self._idle()
        except CorruptDatabase as exc:
            log.critical("%s; %s", exc.message, exc.hint)
            if self.on_fatal:
                self.on_fatal("ingest-writer")
        except BaseException:
            # Should never happen (every message is stored or rejected); if it does, say so loudly
            # and let /healthz turn 503 and the daemon exit non-zero, so its supervisor restarts it
            # (the unacknowledged batch comes back from the broker).
            log.critical(
                "the ingest writer stopped: nothing more is stored until the daemon restarts",
                exc_info=True,
            )
            if self.on_fatal:
                self.on_fatal("ingest-writer")

    def _take(self) -> tuple[list, int]:
        """Up to batch_max messages off the inbox, and when the oldest of them arrived (ms)."""
        inbox = self._inbox
        # the stamp goes with the batch; a message appended meanwhile stamps anew
        since, self._pending_since = self._pending_since, None
        n = min(len(inbox), self.batch_max)
        batch = [inbox.popleft() for _ in range(n)]
        if inbox and since is not None:  # what stays is as old as what was taken
            waiting = self._pending_since
            self._pending_since = since if waiting is None else min(since, waiting)
        if since is None:
            since = int(time.time() * 1000)
        return batch, since

    def _catch_up(self) -> None:
        """Behind (SPILL_AT waiting) or with spilled batches to work off: spill what waits while
        the broker keeps sending fast (and when stopping: what waits goes after what is spilled),
        else store the oldest spilled batch."""
        inbox, stop = self._inbox, self._stop.is_set()
        if len(inbox) >= SPILL_AT or (inbox and stop):
            self._spill_inbox()
            # the broker refills the window just acked within a few ms while a backlog lasts:
            # wait for that rather than start on the spilled rows; if it does not come, the
            # stream paused (the backlog's end), and what came meanwhile is spilled too (it
            # would wait unacked behind the spilled rows, the broker holding it, for as long as
            # they take to store)
            if len(inbox) < SPILL_AT and not stop and not self._spill_ready.wait(SPILL_WAIT_S):
                if inbox:
                    self._spill_inbox()
            return
        # the oldest spilled rows, one at least, in one transaction (bigger ones share index pages
        # better, smaller ones hold the next spill's acks back less)
        cap = WORK_OFF_BUSY if time.monotonic() < self._spilling_until else self.batch_max
        spilled, ids, n = self._spilled, [], 0
        for rid, _at, k in spilled:
            if ids and n + k > cap:
                break
            ids.append(rid)
            n += k
        msgs = self.store.spilled(ids)
        batch = [(0, 0, 0, topic, payload) for topic, payload in msgs]
        if msgs and not self._process(batch, (ids, spilled[0][1])):
            return  # stopped while the store failed: the next start works them off
        for _ in ids:
            spilled.popleft()
        self.spill_waiting -= n

    def _spill_inbox(self) -> None:
        """Spill what waits (up to batch_max), retried while the store fails."""
        self._spill_ready.clear()
        batch, since = self._take()
        self._taken_since = since
        self._retrying(lambda: self._spill(batch, since))
        self._taken_since = None
        self._counted += len(batch)
        self._drained.set()
        self._spilling_until = time.monotonic() + SPILLING_S

    def _spill(self, batch: list, since: int) -> None:
        """Commit ``batch`` as received, in rows of SPILL_ROW (SqliteStore.spill), then ack it."""
        rows = [
            ([b[3] for b in part], [b[4] for b in part])
            for part in (batch[i : i + SPILL_ROW] for i in range(0, len(batch), SPILL_ROW))
        ]
        ids = self.store.spill(self.bus.client_id, since, rows)
        self._spilled.extend((rid, since, len(t)) for rid, (t, _p) in zip(ids, rows))
        self.spill_waiting += len(batch)
        self.metrics.spilled += len(batch)
        self.metrics.durable += len(batch)
        gen = self.bus.generation
        # at once (waking the network thread): a spill is what the broker's window held, so the
        # broker sends nothing more until these acks, and the thread may sleep in select meanwhile
        self.bus.ack(gen, [mid for g, mid, qos, _t, _p in batch if qos == 1 and g == gen])

    def _retrying(self, fn):
        """fn(), retried with a growing pause while the store fails (locked, disk full): the
        messages stay unacknowledged meanwhile. Returns fn's answer, or None if stopped."""
        backoff = 0.1
        while True:
            try:
                return fn()
            except CorruptDatabase:
                # retrying cannot help: stop (the batch stays unacknowledged at the broker) and let
                # the daemon exit non-zero; its next start says the same at quick_check
                raise
            except StoreError as exc:
                self.metrics.store_error()
                log.error(
                    "%s; retrying in %.1f s (messages stay unacknowledged meanwhile)", exc, backoff
                )
                if self._stop.wait(backoff):
                    return None  # not acked: the broker redelivers after restart
                backoff = min(backoff * 2, 10)

    def _linger(self) -> float:
        """How long to wait for more before committing a small batch: linger_s from LINGER_RATE
        msg/s up (the rate of the last second or more), else QUIET_LINGER_S at most."""
        now = time.monotonic()
        if now - self._count_since >= 1.0:
            self._rate = self._counted / (now - self._count_since)
            self._counted, self._count_since = 0, now
        return self.linger_s if self._rate >= LINGER_RATE else min(self.linger_s, QUIET_LINGER_S)

    def _read_pause(self) -> float:
        """paho's thread, its socket drained (BufferedClient.read_pause): while the writer lingers
        for more, let the next messages gather in the socket and read them in one go, until about
        when LINGER_UNTIL of them will wait (at the last second's rate) or the linger ends,
        READ_EARLY_S before either so that the read and the parse are done by then. At 1,000
        nodes x 1 Hz this thread woke for every few messages, and a thread that slept runs cold:
        each wake-up cost more than the messages it read (its CPU a message went from 20-26 to
        11-15 us); at 10,000 msg/s the pause is a few ms."""
        since, rate = self._pending_since, self._rate
        if since is None or rate < LINGER_RATE:
            return 0.0
        missing = LINGER_UNTIL - len(self._inbox)
        if missing <= 0:
            return 0.0
        left = since / 1000 + self.linger_s - time.time()  # the writer lingers from `since` on
        return min(left, missing / rate) - READ_EARLY_S

    def _idle(self) -> None:
        for fn in self.idle_hooks:
            try:
                fn()
            except Exception:
                log.exception("an idle hook failed")

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
            log.warning(
                "rejected node=%s topic=%r reason=%s: %s%s",
                node or "?",
                topic[:120],
                r.reason,
                r.detail[:300],
                more,
            )
        elif len(self._suppressed) < 10000:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1

    def _keep_rejects(self, rejects: dict) -> None:
        """Put back rejections a failed write did not store, adding to what came in meanwhile."""
        for node, (n, text, at) in rejects.items():
            m, text2, at2 = self._node_rejects.get(node, (0, text, at))
            self._node_rejects[node] = (n + m, text2 if at2 >= at else text, max(at, at2))

    def _store(self, tel, statuses, acks, logs, spool, spilled_ids=()):
        """One transaction for the batch. Should the store refuse a value for a reason other than
        the database itself (a bind error: something validation let through), the batch is
        written message by message and only the message that fails is rejected ("internal") and
        taken out of the lists, so no listener hears of a reading that was not stored."""
        rejects, self._node_rejects = self._node_rejects, {}
        try:
            return self.store.write_batch(
                tel, statuses, acks, logs, spool, rejects=rejects, spilled_ids=spilled_ids
            )
        except StoreError:
            self._keep_rejects(rejects)
            raise
        except Exception:
            pass
        singles = [
            ("telemetry", tel, t, t.node, ([t], (), (), (), [spool[i]] if spool else None))
            for i, t in enumerate(tel)
        ]
        singles += [("status", statuses, x, x[0], ((), [x], (), (), None)) for x in statuses]
        singles += [("ack", acks, x, x[0], ((), (), [x], (), None)) for x in acks]
        singles += [("log", logs, x, x[0], ((), (), (), [x], None)) for x in logs]
        total, failed = BatchResult(0, 0, []), []
        for kind, items, item, node, parts in singles:
            try:
                res = self.store.write_batch(*parts)
            except StoreError:
                self._keep_rejects(rejects)
                raise
            except Exception as exc:
                self._reject(
                    f"{self.root}/{node}/{kind}",
                    node,
                    validate.Rejected("internal", f"the store refused it: {exc!r}"[:200]),
                )
                failed.append((items, item))
                continue
            total.stored += res.stored
            total.duplicates += res.duplicates
            if res.rows:  # one writer: the singles' rows follow each other
                total.rows = res.rows if total.rows is None else (total.rows[0], res.rows[1])
            total.gaps += res.gaps
        for items, item in failed:
            items.remove(item)
        self._keep_rejects(rejects)
        rejects, self._node_rejects = self._node_rejects, {}
        try:
            self.store.write_batch((), rejects=rejects, spilled_ids=spilled_ids)
        except Exception:  # bookkeeping only: never worth the batch
            self._keep_rejects(rejects)
        return total

    def _process(self, batch: list, spilled: tuple | None = None) -> bool:
        """Validate and store ``batch`` in one transaction, then ack it and tell the listeners;
        False if stopped before it could be stored. ``spilled``: (ids, received ms) of the spilled
        batches it is (acked already, judged as of when the first arrived, deleted in the same
        transaction)."""
        m = self.metrics
        root, known, limits = self.root, self.known, self.limits
        tel, statuses, acks, logs = [], [], [], []
        now_ms = int(time.time() * 1000) if spilled is None else spilled[1]
        m.received += len(batch)
        for _gen, _mid, _qos, topic, payload in batch:
            if topic.startswith(self.host_prefix) or topic.endswith(_NOT_NODE_DATA):
                # the host's own output, commands, OTA chunks and answers (docs/ota.md): no data
                m.received -= 1
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
                self._reject(
                    topic, node, validate.Rejected("internal", f"validating failed: {exc!r}"[:200])
                )
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
                    self._reject(
                        f"{root}/{t.node}/telemetry", t.node, validate.Rejected("metric", str(exc))
                    )
            tel = kept
        spilled_ids = spilled[0] if spilled else ()
        res = self._retrying(lambda: self._store(tel, statuses, acks, logs, spool, spilled_ids))
        if res is None:
            return False  # stopped: not acked, the broker redelivers after restart (or spilled)
        if spilled is None:
            m.durable += len(batch)
        m.batches += 1
        self.last_rows = res.rows  # the listeners' batch's rowids (BatchResult.rows)
        m.stored += res.stored
        m.duplicates += res.duplicates
        if (
            res.gaps
        ):  # pending until replay had its chance (Daemon.settle_gaps confirms or drops them)
            log.debug("pending gaps: %s", res.gaps[:5])
        live = [t.ts for t in tel if not t.hist]
        if live:
            m.last_lag_ms = max(0, int(time.time() * 1000) - max(live))
        if spool and self.on_spool:
            self.on_spool()
        gen = self.bus.generation
        self.bus.ack(
            gen, [mid for g, mid, qos, _t, _p in batch if qos == 1 and g == gen], wake=False
        )
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
        return True
