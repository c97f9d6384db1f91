"""Analytics in a process of its own, owned by the daemon.

Why: in the daemon's interpreter the analytics worker takes the GIL from ingest during a burst
(durable ingest with analytics on ran at 29-68 % of off), and its state (detectors, forests) grew
the daemon's memory. Here the engine (gridtwin.analytics.engine.Analytics, unchanged) runs in a
child started with multiprocessing's 'spawn' context, so it shares nothing with the daemon but
two queues:

- *readings in*: ingest's writer, after a commit, hands the batch as one ``marshal`` blob of
  compact rows ``(node, ts, {metric: value})`` to an unbounded queue whose depth is bounded here,
  in readings (``queue_max``): the daemon counts what it sent, the child what it took (a shared
  counter only the child writes). What does not fit is dropped and counted; ingest never waits.
- *actions out*: what the engine would have done to the daemon's store and alerts (raise, clear,
  reading quality, KPI rows, its saved state) comes back as messages; a thread of the daemon
  (``analytics-link``) applies them with the daemon's own Alerts and store, so the daemon stays
  the one writer of SQLite, the retained ``_host/alerts`` messages and the notifier are as before.
  The child reads the store through a read-only connection (training windows, its saved state).

The child runs at a lower priority (NICE): on a small machine ingest gets the CPU first, and
analytics drops (and counts) what it cannot keep up with. The child ignores SIGINT and SIGHUP (a
terminal sends them to the whole group: the daemon stops it in order), saves and exits on SIGTERM,
on the daemon's stop, or when the daemon is gone. A child that dies is logged, counted and started
again (at most RESTARTS_MAX in RESTART_WINDOW_S; then the link thread ends and /healthz reports it
dead, like any worker thread); /healthz shows its pid, whether it is alive and how often it was
restarted. Tests that drive the engine in-process use Analytics directly.
"""

from __future__ import annotations

import collections
import logging
import marshal
import multiprocessing
import os
import queue
import signal
import sqlite3
import threading
import time
from pathlib import Path

from gridtwin.analytics import config
from gridtwin.analytics.notify import Notifier

log = logging.getLogger("gridtwin.analytics")
STATS_EVERY_S = 1.0
CHUNK = 200  # messages analysed at a time (a batch of 1,000 nodes' messages in five)
NICE = 10  # the analytics process's niceness, added to the daemon's
RESTARTS_MAX, RESTART_WINDOW_S = 5, 600.0
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

Tel = collections.namedtuple("Tel", "node ts m")  # what Analytics.readings reads of a Telemetry


def _cfg(section, key: str):
    from gridtwin.analytics.engine import _cfg as cfg  # one home for the defaults

    return cfg(section, key)


class AnalyticsProcess:
    """The daemon's side: feed (ingest's listener), the link thread, the child's life."""

    def __init__(self, daemon, section):
        self.daemon, self.section = daemon, section
        self.alerts, self.store = daemon.alerts, daemon.store
        self.queue_max = _cfg(section, "queue_max")
        self.influx = "analytics" if daemon.forwarder else None
        self.notifier = Notifier(  # here, not in the child: alerts are raised here
            _cfg(section, "notify_command"),
            _cfg(section, "notify_url"),
            _cfg(section, "notify_timeout_s"),
            _cfg(section, "notify_severity"),
        )
        if self.notifier.enabled:
            self.alerts.listeners.append(self.notifier)
        self._mp = multiprocessing.get_context("spawn")
        self.proc = None
        self._feed_q = self._out_q = self._taken = None
        self._sent = 0  # readings put on the current child's queue
        self.dropped = 0  # readings the daemon never handed over (queue full, child down)
        self.restarts = 0
        self._deaths: collections.deque = collections.deque()
        self.stats = {"analysed": 0, "dropped": 0, "queued": 0, "counts": []}
        self._stopping = False
        self._link: threading.Thread | None = None
        self._last_drop_log = 0.0
        m = daemon.metrics
        m.gauges["analytics_dropped_total"] = lambda: self.dropped + self.stats["dropped"]
        m.gauges["analytics_readings_total"] = lambda: self.stats["analysed"]
        m.gauges["analytics_queue"] = lambda: self.backlog() + self.stats["queued"]
        m.gauges["alerts_raised_total"] = lambda: self.alerts.counters("raised")
        m.gauges["alerts_cleared_total"] = lambda: self.alerts.counters("cleared")
        m.gauges["alerts_active"] = lambda: len(self.alerts.active)
        m.gauges["analytics_notify_failed_total"] = lambda: self.notifier.failed
        m.gauges["analytics_findings_total"] = lambda: {
            f'{{kind="{k}",severity="{s}"}}': n for k, s, n in self.stats["counts"]
        }
        m.gauges["analytics_restarts_total"] = lambda: self.restarts
        m.health_parts["analytics"] = self.health

    @classmethod
    def from_daemon(cls, daemon) -> "AnalyticsProcess | None":
        """The analytics of a daemon's site ([analytics] enabled), or None."""
        section = config.section(daemon.site)
        if section is not None and not section.enabled:
            return None
        return cls(daemon, section)

    # -- ingest's side: cheap, never blocks -----------------------------------------------------
    def backlog(self) -> int:
        taken = self._taken
        return 0 if taken is None else self._sent - taken.value

    def feed(self, tels) -> None:
        """Ingest's listener (the writer thread, after a commit): hand the batch over or drop it."""
        n = 0
        rows = []
        for t in tels:
            n += len(t.m)
            rows.append((t.node, t.ts, t.m))
        q = self._feed_q
        if q is not None and self._sent - self._taken.value + n <= self.queue_max:
            try:
                q.put_nowait(marshal.dumps((n, rows)))
                self._sent += n
                return
            except (ValueError, OSError):  # a value marshal cannot carry; a queue being closed
                pass
        self.dropped += n
        from gridtwin.analytics.engine import say_behind

        say_behind(self)

    # -- the child's life ------------------------------------------------------------------------
    def start(self) -> "AnalyticsProcess":
        self.notifier.start()
        self._spawn()
        self._link = threading.Thread(target=self._run_link, name="analytics-link", daemon=True)
        self._link.start()
        self.daemon.metrics.watch(self._link)
        return self

    def _spawn(self) -> None:
        mp = self._mp
        self._out_q = mp.Queue()
        self._taken = mp.Value("q", 0, lock=False)  # written by the child only
        self._sent = 0
        feed_q = mp.Queue()
        root = logging.getLogger("gridtwin")
        fmt = next((type(h.formatter).__name__ for h in root.handlers if h.formatter), None)
        self.proc = mp.Process(
            target=child_main,
            name="gridtwin-analytics",
            args=(
                str(self.daemon.site.path),
                str(self.store.path),
                list(self.alerts.active),
                feed_q,
                self._out_q,
                self._taken,
                self.influx,
                (fmt, root.level),
            ),
            daemon=True,  # never outlives the daemon, even one that is killed
        )
        # the child inherits a blocked mask through its exec: a signal meant for the daemon's
        # group (a terminal's Ctrl-C) waits until child_main has chosen what to do with it, instead
        # of ending the child mid-import with a traceback
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._feed_q = feed_q
        log.info("analytics runs in process %d", self.proc.pid)

    def _run_link(self) -> None:
        """Apply the child's actions; start it again when it dies (not when we stop it)."""
        while True:
            proc, out_q = self.proc, self._out_q
            try:
                msg = out_q.get(timeout=0.5)
            except queue.Empty:
                msg = None
            except (EOFError, OSError):
                msg = None
            if msg is not None:
                if msg[0] == "bye":
                    return
                try:
                    self._apply(msg)
                except Exception:  # one bad action never ends the link
                    log.exception("analytics: cannot apply %s", msg[0])
                continue
            if proc.is_alive():
                continue
            if self._stopping:
                return
            code = proc.exitcode
            now = time.monotonic()
            while self._deaths and now - self._deaths[0] > RESTART_WINDOW_S:
                self._deaths.popleft()
            self._deaths.append(now)
            self._abandon()
            if len(self._deaths) > RESTARTS_MAX:
                log.error(
                    "analytics process %d died (exit %s) %d times in %.0f s: not restarted; "
                    "ingest goes on without analytics",
                    proc.pid,
                    code,
                    len(self._deaths),
                    RESTART_WINDOW_S,
                )
                return  # a dead link thread: /healthz says so (dead_threads)
            self.restarts += 1
            log.error("analytics process %d died (exit %s); starting it again", proc.pid, code)
            self._spawn()

    def _abandon(self) -> None:
        """Forget a dead child's queues (what it did not take is lost, and counted)."""
        q, self._feed_q = self._feed_q, None
        self.dropped += self.backlog()
        self._taken = None
        if q is not None:
            q.cancel_join_thread()  # nobody reads it any more: exiting must not wait on it
            q.close()

    def _apply(self, msg) -> None:
        what = msg[0]
        if what == "stats":
            self.stats = msg[1]
        elif what == "raise":
            key, severity, kind, message, node, metric, value, detail, ts, extra = msg[1:]
            self.alerts.raise_(
                key, severity, kind, message, node, metric, value, detail, ts, **extra
            )
        elif what == "clear":
            self.alerts.clear(msg[1], msg[2])
        elif what == "quality":
            self.store.write_quality(msg[1])
        elif what == "kpis":
            self.store.write_kpis(msg[1], spool_lines=msg[2])
            if msg[2] and self.daemon.forwarder:
                self.daemon.forwarder.wake.set()
        elif what == "state":
            self.store.save_state(msg[1], msg[2])

    def health(self) -> dict:
        proc = self.proc
        return {
            "pid": proc.pid if proc else None,
            "alive": bool(proc and proc.is_alive()),
            "restarts": self.restarts,
        }

    def stop(self, timeout: float = 30.0) -> None:
        """Tell the child to analyse what it has, save its state and exit; apply what it sends
        until then."""
        self._stopping = True
        q = self._feed_q
        if q is not None:
            try:
                q.put_nowait(None)
            except (ValueError, OSError):
                pass
        if self._link is not None:
            self._link.join(timeout)
        proc = self.proc
        if proc is not None:
            proc.join(5)
            if proc.is_alive():
                log.error("analytics process %d did not stop: killed", proc.pid)
                proc.kill()
                proc.join(5)
        self._abandon()
        self.notifier.stop()


# --- the child ----------------------------------------------------------------------------------
class _Alerts:
    """The daemon's Alerts as the engine sees them: which keys are active, raise and clear."""

    def __init__(self, send, active):
        self.send = send
        self.active = dict.fromkeys(active, 0)
        self.listeners: list = []

    def raise_(
        self,
        key,
        severity,
        kind,
        message,
        node=None,
        metric=None,
        value=None,
        detail=None,
        ts=None,
        **extra,
    ) -> int:
        if key not in self.active:
            self.active[key] = 0
            self.send(
                ("raise", key, severity, kind, message, node, metric, value, detail, ts, extra)
            )
        return 0

    def clear(self, key: str, ts: int | None = None) -> bool:
        if self.active.pop(key, None) is None:
            return False
        self.send(("clear", key, ts))
        return True


class _Store:
    """Reads from a read-only connection; writes go to the daemon as messages."""

    def __init__(self, path: str, send):
        from gridtwin.daemon.store_sqlite import SqliteStore

        # a SqliteStore without its opening (which creates and migrates tables: a write)
        reader = SqliteStore.__new__(SqliteStore)
        reader.path = Path(path)
        reader.conn = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            timeout=30,
            isolation_level=None,
            check_same_thread=False,  # the forest trains on a thread of its own
        )
        reader._lock = threading.Lock()
        self.reader, self.send = reader, send

    def __getattr__(self, name):  # query, load_state, ...: the reads
        return getattr(self.reader, name)

    def save_state(self, name: str, data: dict) -> None:
        self.send(("state", name, data))

    def write_quality(self, rows) -> None:
        self.send(("quality", list(rows)))

    def write_kpis(self, rows, spool_lines=None) -> None:
        self.send(("kpis", list(rows), list(spool_lines) if spool_lines else None))

    def close(self) -> None:
        self.reader.conn.close()


def _logging(fmt, level) -> None:
    if fmt is None:
        return
    from gridtwin.daemon.logsetup import JsonLogFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if fmt == "JsonLogFormatter"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("gridtwin")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _malloc_trim():
    """glibc's malloc_trim, or a no-op: the scoring's numpy temporaries (rows x trees arrays, each
    node's batch) are malloc'ed and freed every batch; glibc keeps the freed heap pages resident
    unless asked to give them back."""
    try:
        import ctypes

        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: fn(0)


def child_main(site_path, db_path, active, feed_q, out_q, taken, influx, logcfg) -> None:
    """The analytics process: the engine, fed from the daemon's queue on this one thread."""
    os.nice(NICE)  # ingest first (its start too): analytics takes what CPU is left
    from gridtwin.analytics.engine import Analytics
    from gridtwin.site import load_site

    _logging(*logcfg)
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon stops us, in order
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the daemon's _spawn
    lock = threading.Lock()  # the worker, the forest's trainer and this thread all send

    def send(msg) -> None:
        with lock:
            out_q.put(msg)

    store = _Store(db_path, send)
    site = load_site(site_path)
    an = Analytics(
        store,
        _Alerts(send, active),
        site=site,
        section=config.section(site),
        influx_measurement=influx,
        notify=False,
    )
    for det in an.detectors:
        if hasattr(det, "train_process"):
            # the IsolationForest fits in a process of its own for each round: scikit-learn (~150 MB
            # of RSS, never given back) stays out of this long-lived one
            det.train_process = True

    def stats() -> None:
        counts = [(k, s, n) for (k, s), n in sorted(an.counts.items())]
        send(
            (
                "stats",
                {
                    "analysed": an.analysed,
                    "dropped": an.dropped,
                    "queued": an._queued,
                    "counts": counts,
                },
            )
        )

    parent = multiprocessing.parent_process()
    trim = _malloc_trim()  # once a second, with the stats
    next_stats = 0.0
    try:
        # one thread: a batch is taken when it can be analysed, so what waits stays the daemon's
        # compact blobs (bounded there), not objects queued twice
        while not stop.is_set():
            try:
                blob = feed_q.get(timeout=max(0.0, min(an.next_tick - time.monotonic(), 0.5)))
            except queue.Empty:
                blob = b""
            if blob is None:
                break
            try:
                if blob:
                    n, rows = marshal.loads(blob)
                    taken.value += n
                    # CHUNK messages at a time: a burst's commit (thousands of messages) analysed
                    # at once made its readings, findings and rows all live together, a peak the
                    # interpreter keeps as RSS; the detectors are streaming, a message stays whole
                    for i in range(0, len(rows), CHUNK):
                        an.process([Tel(*r) for r in rows[i : i + CHUNK]])
                    del rows
                an.housekeeping()
            except Exception:  # a detector's bug must not end analytics: log it and go on
                log.exception("analytics failed on a batch")
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_EVERY_S
                stats()
                trim()
                if parent is not None and not parent.is_alive():
                    break  # the daemon is gone (killed): save and go
    finally:
        an.stop()  # saves its state (as messages)
        stats()
        send(("bye",))
        store.close()
        out_q.close()
        out_q.join_thread()  # everything sent is in the pipe before we exit
