"""Analytics in a process of its own, owned by the daemon.

Why: in the daemon's interpreter the analytics worker takes the GIL from ingest during a burst
(durable ingest with analytics on ran at 29-68 % of off), and its state (detectors, forests) grew
the daemon's memory. Here the engine (gridtwin.analytics.engine.Analytics, unchanged) runs in a
child, ``python -m gridtwin.analytics.process``, started by gridtwin.procs.spawn (its own session,
a parent-death signal), so it shares nothing with the daemon but two pipes of length-prefixed
frames. Not multiprocessing: its 'spawn' context also starts a resource tracker process (12 MB of
RSS, for semaphores analytics never makes) and its queues pickle through a feeder thread each.

- *readings in*: ingest's writer, after a commit, hands the batch as one ``marshal`` blob of
  compact rows ``(node, ts, {metric: value})`` to a thread of the daemon that writes it to the
  child's pipe (``analytics-feed``; ingest never waits on the pipe; during a burst frames wait
  here: ``Feed``). The depth is bounded here, in readings (``queue_max``): the daemon counts what
  it sent, the child says what it took. A batch that does not fit goes as a *replay* frame, the
  rowids its readings were stored under (``BatchResult.rows``; consecutive replays merge into
  one): the child reads them back from the store, in the order they were committed, when it gets
  there, so a burst or an outbox replayed after an outage is analysed whole and in order, late.
  Until it has, compaction leaves those rows be (``replay_floor``); a replay older than
  REPLAY_MAX_AGE_S when the child reaches it (analytics that cannot keep up at all) and OPC UA
  points (not in the readings table) are dropped and counted; the first replay a stopping daemon
  leaves, and all after it, are read back first by its next start (RESUME_STATE).
  Ingest never waits. The first frame says what to run (the site, the database, the active
  alerts); closing the pipe asks the child to save and exit. This side reads ``[analytics]``
  through ``config`` alone: the engine (detectors, KPIs: 2.5 MB of RSS) is imported only in the
  child.
- *actions out*: what the engine would have done to the daemon's store and alerts (raise, clear,
  reading quality, KPI rows, its saved state) comes back as pickled messages; a thread of the
  daemon (``analytics-link``) applies them with the daemon's own Alerts and store, so the daemon
  stays the one writer of SQLite, the retained ``_host/alerts`` messages and the notifier are as
  before. The child reads the store through a read-only connection (training windows, its state).

The child runs at a lower priority (NICE, its session's too: ``below_ingest``): on a small machine
ingest gets the CPU first, and analytics drops (and counts) what it cannot keep up with. It is in
a session of its own (a terminal's Ctrl-C reaches the daemon, which stops it in order); it saves and
exits on SIGTERM, when its pipe closes (the daemon's stop), or when the daemon is gone (the kernel's
parent-death signal, the pipe's end). A child that dies is logged, counted and started again (at
most RESTARTS_MAX in RESTART_WINDOW_S; then the link thread ends and /healthz reports it dead, like
any worker thread); /healthz shows its pid, whether it is alive and how often it was restarted.
Tests that drive the engine in-process use Analytics directly.
"""

from __future__ import annotations

import collections
import json
import logging
import marshal
import os
import pickle
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from gridtwin import procs
from gridtwin.analytics import config
from gridtwin.analytics.notify import Notifier

log = logging.getLogger("gridtwin.analytics")
STATS_EVERY_S = 1.0
CHUNK = 200  # messages in a frame to the child, analysed at once (1,000 nodes' messages in five)
NICE = 10  # the analytics process's niceness (and its session's), added to the daemon's
# Feed.hold: a commit of this many messages or more is ingest storing a backlog (a burst, a replay
# after an outage); live fleets commit ~30 (1,000 msg/s) to ~110 (10,000 msg/s) at a time
BACKLOG_BATCH = 1000
YIELD_S = 3.0  # frames flow again this long after the last backlog-sized commit
HOLD_MAX_S = 30.0  # the longest analytics waits for ingest at a stretch
RESTARTS_MAX, RESTART_WINDOW_S = 5, 600.0
# a replay the child reaches later than this after its commit is dropped (counted) rather than
# read back: analytics that far behind cannot keep up; compaction keeps the rows twice as long
REPLAY_MAX_AGE_S = 600.0
# the saved state (analytics_state) where a stopping child leaves the rowid its next start reads
# back from: the first replay the stop left unread, and every reading after it
RESUME_STATE = "analytics_resume"
HEAD = struct.Struct("<I")  # a frame's length, before its bytes
EOF = object()  # Frames.get: the other end closed its pipe

Tel = collections.namedtuple("Tel", "node ts m")  # what Analytics.readings reads of a Telemetry


def below_ingest() -> None:
    """Run below ingest: ``gridtwin.procs.spawn``'s ``setup`` (in the child, before exec) for the
    analytics process and its training rounds.

    os.nice alone is not enough on Linux: spawn starts a new session, and with autogroups (on by
    default: /proc/sys/kernel/sched_autogroup_enabled) the scheduler shares a core between sessions
    first, each with the weight of its session's nice, and a process's nice counts only inside its
    session. At nice +10 in a session of its own the analytics process took 92 % of a core during a
    burst, as much as the daemon, and durable ingest ran at 68 % of off. The session's nice
    (/proc/self/autogroup) is the one that counts there: it gets the process's (raising it needs no
    privilege)."""
    # the daemon's "stop reading back" (Child.close): ignored until the child's handler is in
    # (an ignored signal stays ignored across exec; the default would end the process)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    nice = os.nice(NICE)
    for _ in range(5):
        try:
            fd = os.open("/proc/self/autogroup", os.O_WRONLY)
        except OSError:  # no autogroups (another kernel, not Linux): the process's nice is it
            return
        try:
            os.write(fd, str(nice).encode())
            return
        except BlockingIOError:  # unprivileged: one session's nice a tenth of a second
            time.sleep(0.1)
        except OSError:
            return
        finally:
            os.close(fd)


class Frames:
    """Length-prefixed frames read from a pipe: ``get(timeout)`` is a frame's bytes, None when
    none came in time, or EOF."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()

    def _frame(self):
        if len(self.buf) >= HEAD.size:
            (n,) = HEAD.unpack_from(self.buf)
            if len(self.buf) >= HEAD.size + n:
                out = bytes(self.buf[HEAD.size : HEAD.size + n])
                del self.buf[: HEAD.size + n]
                return out
        return None

    def get(self, timeout: float | None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is not None:
                return frame
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], left)[0]:
                return None
            data = os.read(self.fd, 1 << 16)  # a pipe holds 64 kB
            if not data:
                return EOF
            self.buf += data


def write_frame(fd: int, payload: bytes) -> None:
    """One frame, whole (a blocking pipe: waits while the reader is behind)."""
    view = memoryview(HEAD.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


class Feed:
    """The child's frames, written to its pipe by a thread of their own (``analytics-feed``):
    ``put`` queues and never blocks; ``hold`` keeps frames here while ingest stores a backlog.

    Why hold: the child shares this machine's caches as well as its cores. While it ran beside a
    burst, durable ingest ran at 75-99 % of its rate without analytics although the child was
    below it in priority (idle CPU is what it took): the daemon's threads came back to colder
    caches. A burst is short, so analytics waits it out (what ingest commits meanwhile goes as
    rowids to read back: ``put_replay``) and catches up after. A hold ends YIELD_S after the
    last backlog-sized commit, and lasts HOLD_MAX_S at most: under a longer load the child runs
    beside ingest again, at its lower priority, until ingest has been quiet for YIELD_S."""

    def __init__(self, fd: int):
        self.fd = fd
        self._pending: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._busy_at = self._held_since = -1e9  # monotonic times: last hold(), hold's start
        self.holding = threading.Event()  # set while frames wait out a hold (tests await it)
        self._thread = threading.Thread(target=self._write, name="analytics-feed", daemon=True)
        self._thread.start()

    def put(self, *blobs: bytes) -> bool:
        with self._cv:
            if self._closed:
                return False
            self._pending.extend(blobs)
            self._cv.notify()
        return True

    def put_replay(self, first: int, last: int, n: int, at_ms: int | None = None) -> bool:
        """Rows first..last (n readings, committed at ``at_ms``: now by default) for the child
        to read back; merged into the replay queued last when they follow it (a burst's commits:
        one frame while the child is busy)."""
        with self._cv:
            if self._closed:
                return False
            tail = self._pending[-1] if self._pending else None
            if isinstance(tail, list) and tail[2] + 1 == first:
                tail[2] = last
                tail[3] += n
            else:
                at = int(time.time() * 1000) if at_ms is None else at_ms
                self._pending.append(["replay", first, last, n, at])
                self._cv.notify()
        return True

    def hold(self, now: float | None = None) -> None:
        """Ingest committed a backlog-sized batch: keep frames here a while (see the class)."""
        now = time.monotonic() if now is None else now
        with self._cv:
            if now - self._busy_at >= YIELD_S:  # ingest had been quiet: a new hold starts
                self._held_since = now
            self._busy_at = now

    def held(self) -> bool:
        """A hold is on: what ingest commits now is better read back later than queued here."""
        return self._wait(time.monotonic()) > 0

    def _wait(self, now: float) -> float:
        """Seconds the next frame waits: 0 once the hold is over (or never was, or we close)."""
        if self._closed:
            return 0.0
        end = min(self._busy_at + YIELD_S, self._held_since + HOLD_MAX_S)
        return max(0.0, end - now)

    def _write(self) -> None:
        try:
            while True:
                with self._cv:
                    while True:
                        if not self._pending:
                            if self._closed:
                                return  # closed, and all written
                            self._cv.wait()
                            continue
                        wait = self._wait(time.monotonic())
                        if wait <= 0:
                            break
                        self.holding.set()
                        self._cv.wait(wait)
                    self.holding.clear()
                    blob = self._pending.popleft()
                    if isinstance(blob, list):  # a replay: final once it leaves the queue
                        blob = marshal.dumps(tuple(blob))
                write_frame(self.fd, blob)
        except OSError:  # the child is gone: what was not written is lost (counted as backlog)
            with self._cv:
                self._closed = True
                self._pending.clear()
        finally:
            os.close(self.fd)

    def close(self) -> None:
        """No more frames: what is queued is written now (a hold ends), then the pipe closes."""
        with self._cv:
            self._closed = True
            self._cv.notify()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Child:
    """One analytics process and the daemon's ends of its pipes: ``put`` a frame (its ``Feed``
    writes it; never blocks), ``hold`` them during a burst, ``get`` a message, ``close``."""

    def __init__(self, run: dict):
        feed_r, feed_w = os.pipe()
        self.out_r, out_w = os.pipe()
        cmd, env = procs.python_module("gridtwin.analytics.process", str(feed_r), str(out_w))
        try:
            self.proc = procs.spawn(
                cmd,
                kind="analytics process",
                setup=below_ingest,  # ingest first (its start too)
                stdin=subprocess.DEVNULL,
                pass_fds=(feed_r, out_w),
                env=env,
            )
        except BaseException:
            os.close(feed_w)
            os.close(self.out_r)
            raise
        finally:
            os.close(feed_r)
            os.close(out_w)
        self.frames = Frames(self.out_r)
        self.sent = 0  # readings put, counted by the caller
        self.taken = 0  # readings the child says it took
        self._ended = False
        self._told = False  # close() told the child to read nothing back
        self.feed = Feed(feed_w)
        self.put(marshal.dumps(run))

    def put(self, *blobs: bytes) -> bool:
        return self.feed.put(*blobs)

    def hold(self) -> None:
        self.feed.hold()

    def close(self) -> None:
        """No more frames: the child analyses what was written (reading nothing back: SIGUSR1),
        saves and exits."""
        if not self._told:
            self._told = True
            self.proc.send_signal(signal.SIGUSR1)  # (a no-op once it was reaped)
        self.feed.close()

    def get(self, timeout: float):
        """The child's next message, None (none in time) or EOF (it closed its end: exiting)."""
        frame = self.frames.get(timeout)
        return frame if frame is None or frame is EOF else pickle.loads(frame)

    def backlog(self) -> int:
        return self.sent - self.taken

    def alive(self) -> bool:
        return self.proc.poll() is None

    def end(self, timeout: float = 5.0) -> None:
        """Wait for the child (kill it if it does not end), then forget its pipes (once)."""
        self.close()
        if self._ended:
            return
        self._ended = True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("analytics process %d did not stop: killed", self.proc.pid)
            self.proc.kill()
            self.proc.wait()
        procs.reaped(self.proc)
        self.feed.join(timeout)
        os.close(self.out_r)


class AnalyticsProcess:
    """The daemon's side: feed (ingest's listener), the link thread, the child's life."""

    def __init__(self, daemon, section):
        self.daemon, self.section = daemon, section
        self.alerts, self.store = daemon.alerts, daemon.store
        self.queue_max = config.setting(section, "queue_max")
        self.influx = "analytics" if daemon.forwarder else None
        self.notifier = Notifier(  # here, not in the child: alerts are raised here
            config.setting(section, "notify_command"),
            config.setting(section, "notify_url"),
            config.setting(section, "notify_timeout_s"),
            config.setting(section, "notify_severity"),
        )
        if self.notifier.enabled:
            self.alerts.listeners.append(self.notifier)
        self.child: Child | None = None
        self.proc = None  # the child's Popen
        self.dropped = 0  # readings the daemon never handed over (queue full, child down)
        # rowid ranges handed to the child to read back, oldest first: [first, last, handed at
        # (monotonic)]; the child says how far it read ("replayed")
        self._replays: collections.deque = collections.deque()
        self._replay_lock = threading.Lock()
        self._last_row: int | None = None  # the last rowid of this daemon's last commit
        self._per_msg = 1.0
        self.restarts = 0
        self._deaths: collections.deque = collections.deque()
        self.stats = {
            "analysed": 0,
            "dropped": 0,
            "queued": 0,
            "replayed": 0,
            "deferred": 0,
            "counts": [],
        }
        self._stopping = False
        self._link: threading.Thread | None = None
        self._started = threading.Event()
        self._last_drop_log = 0.0
        self._last_replay_log = -1e9
        self._replaying = 0  # readings handed over as replays since the last warning
        m = daemon.metrics
        m.gauges["analytics_dropped_total"] = lambda: self.dropped + self.stats["dropped"]
        m.gauges["analytics_readings_total"] = lambda: self.stats["analysed"]
        m.gauges["analytics_replayed_total"] = lambda: self.stats["replayed"]
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
        child = self.child
        return 0 if child is None else child.backlog()

    def feed(self, tels) -> None:
        """Ingest's listener (the writer thread, after a commit): hand the batch over, or the
        rowids it was stored under when the queue is full (``ingest.last_rows``: this batch's).

        Rowids between this daemon's last commit and this one were taken by another writer of the
        readings table: the other daemon instances (``[daemon] instances``), whose ingest shares
        the stream and the database but not analytics. They were committed before this batch
        (one writer at a time), so the child reads them back first, in order."""
        counts = [len(t.m) for t in tels]
        rows = self.daemon.ingest.last_rows
        if rows is not None:
            if counts:  # readings a message, to count theirs by (the queue's bound is in readings)
                self._per_msg = sum(counts) / len(counts)
            last, self._last_row = self._last_row, rows[1]
            if last is not None and rows[0] > last + 1:
                self._others(last + 1, rows[0] - 1)
        self._feed(tels, counts, rows)

    def feed_points(self, tels) -> None:
        """OPC UA points after their commit: not in the readings table, so dropped when full."""
        self._feed(tels, [len(t.m) for t in tels], None)

    def idle(self) -> None:
        """Ingest's idle hook (its writer, after a second without messages): rows another
        instance committed since this daemon's last commit, read back now rather than at this
        daemon's next commit (its share of the stream may be quiet)."""
        last = self._last_row
        if last is None:
            return
        top = self.daemon.store.last_rowid()
        if top > last:
            self._last_row = top
            self._others(last + 1, top)

    def _others(self, first: int, last: int) -> None:
        """Rows other instances stored: read back as a rule (never handed over as readings)."""
        n = int((last - first + 1) * self._per_msg + 0.5)
        if not self._replay(first, last, n):
            self.dropped += n  # the child is down (or stopping)

    def _replay(self, first: int, last: int, n: int, at_ms: int | None = None) -> bool:
        """Hand the child rows first..last (n readings) to read back; compaction leaves them until
        it says it has (replay_floor). False: no child to take them."""
        child = self.child
        if child is None or not child.feed.put_replay(first, last, n, at_ms):
            return False
        with self._replay_lock:
            if self._replays and self._replays[-1][1] + 1 == first:
                self._replays[-1][1] = last
            else:
                self._replays.append([first, last, time.monotonic()])
        child.sent += n
        return True

    def _feed(self, tels, counts: list, rows) -> None:
        n = sum(counts)
        child = self.child
        if child is not None and len(tels) >= BACKLOG_BATCH:
            child.hold()  # the child waits the burst out (Feed)
        if child is not None and rows is not None:
            # ingest is storing a backlog (the child waits it out: Feed), or no room: the child
            # reads these rows back when it gets to them, in order; nothing of a burst is built or
            # kept here meanwhile
            full = child.backlog() + n > self.queue_max
            if (full or child.feed.held()) and self._replay(rows[0], rows[1], n):
                if full:
                    self._say_replaying(n)
                return
        if child is not None and child.backlog() + n <= self.queue_max:
            # the rows only for a batch that is handed over: once the queue is full in a burst,
            # each commit of thousands is dropped without building them
            rows = [(t.node, t.ts, t.m) for t in tels]
            try:
                # a frame of CHUNK messages at most: the child unpacks a frame at once, and a
                # burst's commit of thousands made a peak of objects its interpreter keeps as RSS
                blobs = [
                    marshal.dumps((sum(counts[i : i + CHUNK]), rows[i : i + CHUNK]))
                    for i in range(0, len(rows), CHUNK)
                ]
                if child.put(*blobs):
                    child.sent += n
                    return
            except ValueError:  # a value marshal cannot carry
                pass
        self.dropped += n
        config.say_behind(self)

    def _say_replaying(self, n: int) -> None:
        self._replaying += n
        now = time.monotonic()
        if now - self._last_replay_log >= 60:
            self._last_replay_log = now
            log.warning(
                "analytics is behind: it reads %d reading(s) back from the store when it gets to "
                "them (its queue of %d is full); ingest goes on",
                self._replaying,
                self.queue_max,
            )
            self._replaying = 0

    def replay_floor(self) -> int | None:
        """The lowest rowid the child has yet to read back (compaction leaves it and the rows
        after it in place), or None. Ranges handed over 2 x REPLAY_MAX_AGE_S ago are let go: the
        child drops them (as it does those it reaches after REPLAY_MAX_AGE_S)."""
        old = time.monotonic() - 2 * REPLAY_MAX_AGE_S
        with self._replay_lock:
            while self._replays and self._replays[0][2] < old:
                self._replays.popleft()
            return self._replays[0][0] if self._replays else None

    def _replayed(self, upto: int) -> None:
        """The child read the rows back up to rowid ``upto``."""
        with self._replay_lock:
            while self._replays and self._replays[0][1] <= upto:
                self._replays.popleft()
            if self._replays and self._replays[0][0] <= upto:
                self._replays[0][0] = upto + 1

    # -- the child's life ------------------------------------------------------------------------
    def start(self) -> "AnalyticsProcess":
        # rows stored before this start are not analytics' (it analyses from here on); the
        # ingest writer starts after this
        self._last_row = self.store.last_rowid()
        self.notifier.start()
        # the link thread starts every child: the kernel's parent-death signal follows the thread
        # that started a child (gridtwin.procs), and this one outlives each of its children
        self._link = threading.Thread(target=self._run_link, name="analytics-link", daemon=True)
        self._link.start()
        self._started.wait(30)
        self.daemon.metrics.watch(self._link)
        self._resume()
        return self

    def _resume(self) -> None:
        """What the last stop left unread (RESUME_STATE: a replay and the readings after it) is
        read back first, before anything this start stores."""
        saved = self.store.load_state(RESUME_STATE) or {}
        first, at_ms, top = saved.get("rowid"), saved.get("at_ms"), self._last_row
        if not isinstance(first, int) or not isinstance(at_ms, int):
            return  # none (or not ours to read: left as it is)
        self.store.save_state(RESUME_STATE, {})  # once
        if top >= first and self._replay(first, top, top - first + 1, at_ms):
            log.info("analytics reads back what the last stop left unread (rows %d-%d)", first, top)

    def _spawn(self) -> None:
        root = logging.getLogger("gridtwin")
        fmt = next((type(h.formatter).__name__ for h in root.handlers if h.formatter), None)
        self.child = Child(
            {
                "site": str(self.daemon.site.path),
                "db": str(self.store.path),
                "active": list(self.alerts.active),
                "influx": self.influx,
                "log": (fmt, root.level),
            }
        )
        self.proc = self.child.proc
        log.info("analytics runs in process %d", self.proc.pid)

    def _run_link(self) -> None:
        """Apply the child's actions; start it again when it dies (not when we stop it)."""
        try:
            self._spawn()
        finally:
            self._started.set()
        while True:
            child = self.child
            if self._stopping:
                child.close()  # (again: a child started as stop() began was not told)
            msg = child.get(0.5)
            if msg is not None and msg is not EOF:
                if msg[0] == "bye":
                    # this thread ends after its child: the parent-death signal follows it
                    child.end(30)
                    return
                try:
                    self._apply(msg)
                except Exception:  # one bad action never ends the link
                    log.exception("analytics: cannot apply %s", msg[0])
                continue
            if msg is None and child.alive():
                continue
            child.end()  # its pipe closed: it exited (or is about to)
            if self._stopping:
                return
            code = child.proc.returncode
            now = time.monotonic()
            while self._deaths and now - self._deaths[0] > RESTART_WINDOW_S:
                self._deaths.popleft()
            self._deaths.append(now)
            self._abandon()
            if len(self._deaths) > RESTARTS_MAX:
                log.error(
                    "analytics process %d died (exit %s) %d times in %.0f s: not restarted; "
                    "ingest goes on without analytics",
                    child.proc.pid,
                    code,
                    len(self._deaths),
                    RESTART_WINDOW_S,
                )
                return  # a dead link thread: /healthz says so (dead_threads)
            log.error(
                "analytics process %d died (exit %s); starting it again", child.proc.pid, code
            )
            self._spawn()
            self.restarts += 1  # after: whoever sees the count sees the new child

    def _abandon(self) -> None:
        """Forget a dead child (what it did not take is lost, and counted)."""
        child, self.child = self.child, None
        if child is not None:
            self.dropped += child.backlog()
        with self._replay_lock:
            self._replays.clear()  # a new child reads nothing back

    def _apply(self, msg) -> None:
        what = msg[0]
        if what == "taken":
            self.child.taken = msg[1]
        elif what == "replayed":
            self._replayed(msg[1])
        elif what == "stats":
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
            "alive": bool(proc and proc.poll() is None),
            "restarts": self.restarts,
        }

    def stop(self, timeout: float = 30.0) -> None:
        """Tell the child to analyse what it has, save its state and exit (its pipe closes); apply
        what it sends until then."""
        self._stopping = True
        child = self.child
        if child is not None:
            child.close()
        if self._link is not None:
            self._link.join(timeout)
        child = self.child  # (one the link thread was starting as we stopped, too)
        if child is not None:
            child.end()
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

    def replay(self, first: int, last: int, closing, analyse) -> int:
        """Read rows first..last back (rowid order: as committed), CHUNK messages at a time, and
        ``analyse`` each chunk; stop early once ``closing`` is set. Returns the messages read."""
        conn, upto, read = self.reader.conn, first - 1, 0
        loads = json.loads
        while upto < last and not closing.is_set():
            rows = conn.execute(
                "SELECT rowid, node, ts, msg FROM readings WHERE rowid > ? AND rowid <= ? "
                "ORDER BY rowid LIMIT ?",
                (upto, last, CHUNK),
            ).fetchall()
            if not rows:
                break  # the rest is gone (retention)
            upto = rows[-1][0]
            read += len(rows)
            analyse([Tel(node, ts, loads(msg)) for _r, node, ts, msg in rows])
        return read


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


def child_main(feed_fd: int, out_fd: int) -> None:
    """The analytics process: the engine, fed from the daemon's pipe on this one thread."""
    stop = threading.Event()
    closing = threading.Event()  # the daemon is stopping: read nothing more back
    signal.signal(signal.SIGUSR1, lambda *_: closing.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon stops us, in order
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # also the daemon's death (procs): a read-back under way stops too
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), closing.set()))
    feed = Frames(feed_fd)
    first = feed.get(None)
    if first is None or first is EOF:
        return  # the daemon went before it said what to run
    run = marshal.loads(first)
    from gridtwin.analytics.engine import Analytics
    from gridtwin.site import load_site

    _logging(*run["log"])
    lock = threading.Lock()  # the worker, the forest's trainer and this thread all send
    broken = []

    def send(msg) -> None:
        with lock:
            if broken:
                return
            try:
                write_frame(out_fd, pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:  # the daemon is gone: nobody to tell
                broken.append(True)
                stop.set()

    store = _Store(run["db"], send)
    site = load_site(run["site"])
    an = Analytics(
        store,
        _Alerts(send, run["active"]),
        site=site,
        section=config.section(site),
        influx_measurement=run["influx"],
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
                    "dropped": an.dropped + dropped[0],
                    "replayed": replayed[0],
                    "deferred": deferred[0],
                    "queued": an._queued,
                    "counts": counts,
                },
            )
        )

    # readings of replays not read back; readings read back; readings left for the next start
    dropped, replayed, deferred = [0], [0], [0]

    def analyse(tels) -> None:
        an.process(tels)
        now = time.monotonic()
        if now >= an.next_tick:  # a long replay: the alert timers and stats go on meanwhile
            an.housekeeping()
            stats()

    resume: list = []  # [rowid, at_ms]: the first replay a stop left, read back at the next start

    def read_back(first: int, last: int, n: int, at_ms: int) -> None:
        late = time.time() - at_ms / 1000
        if closing.is_set() and late <= REPLAY_MAX_AGE_S:
            # the daemon is stopping: this and everything after it wait for its next start, which
            # reads them back first (RESUME_STATE), in order
            if not resume:
                resume[:] = [first, at_ms]
            deferred[0] += n
            send(("replayed", last))  # the next start holds compaction back again
            return
        if late > REPLAY_MAX_AGE_S:
            dropped[0] += n
            log.warning(
                "analytics: %d reading(s) stored while it was behind are not analysed (reached "
                "%.0f s after their commit, more than %.0f)",
                n,
                late,
                REPLAY_MAX_AGE_S,
            )
            send(("replayed", last))  # done with the range: compaction may have it
            return
        before, read = an.analysed, 0
        try:
            read = store.replay(first, last, closing, analyse)
        finally:
            replayed[0] += an.analysed - before
            rows = last - first + 1
            if read < rows and closing.is_set() and not resume:
                # stopped part way: the rest (and what follows) waits for the next start
                resume[:] = [first + read, at_ms]
                deferred[0] += n * (rows - read) // rows
            elif read < rows:  # retention took some, or a failure
                dropped[0] += n * (rows - read) // rows
            send(("replayed", last))  # done with the range: compaction may have it

    trim = _malloc_trim()  # once a second, with the stats
    next_stats = 0.0
    taken = 0
    try:
        # one thread: a batch is taken when it can be analysed, so what waits stays the daemon's
        # compact blobs (bounded there), not objects queued twice
        while not stop.is_set():
            blob = feed.get(max(0.0, min(an.next_tick - time.monotonic(), 0.5)))
            if blob is EOF:
                break  # the daemon's stop (or its death)
            try:
                frame = marshal.loads(blob) if blob else None
                if frame and frame[0] == "replay":
                    _what, first, last, n, at_ms = frame
                    taken += n  # first: the daemon's queue has room again while this is read
                    send(("taken", taken))
                    read_back(first, last, n, at_ms)
                elif frame and resume:  # after a replay a stop left: read back at the next start
                    taken += frame[0]
                    deferred[0] += frame[0]
                    send(("taken", taken))
                elif frame:
                    n, rows = frame
                    taken += n
                    send(("taken", taken))
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
    finally:
        if resume:
            send(("state", RESUME_STATE, {"rowid": resume[0], "at_ms": resume[1]}))
            log.warning(
                "analytics: %d reading(s) stored while it was behind are left for the daemon's "
                "next start (it reads them back first)",
                deferred[0],
            )
        an.stop()  # saves its state (as messages)
        stats()
        send(("bye",))
        store.close()
        os.close(out_fd)


if __name__ == "__main__":  # python -m gridtwin.analytics.process FEED_FD OUT_FD (Child)
    child_main(int(sys.argv[1]), int(sys.argv[2]))
