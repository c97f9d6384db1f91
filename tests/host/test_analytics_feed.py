"""The daemon's feed to its analytics process (gridtwin.analytics.process.Feed): frames wait while
ingest stores a backlog, flow again after it, never wait longer than HOLD_MAX_S at a stretch, and
are all written when the feed closes. A real pipe and the feed's real thread."""

from __future__ import annotations

import marshal
import os
import select
import time
from types import SimpleNamespace

import pytest

from gridtwin.analytics import process
from gridtwin.analytics.process import HEAD, AnalyticsProcess, Feed


def _frame(fd: int, timeout: float) -> bytes | None:
    """The next frame on the pipe, or None if none came within timeout."""
    if not select.select([fd], [], [], timeout)[0]:
        return None
    head = os.read(fd, HEAD.size)
    (n,) = HEAD.unpack(head)
    return os.read(fd, n)


@pytest.fixture
def pipe():
    r, w = os.pipe()
    feed = Feed(w)
    yield r, feed
    feed.close()
    feed.join(10)
    os.close(r)


def test_frames_wait_out_a_backlog_then_flow(pipe):
    r, feed = pipe
    assert feed.put(b"before")  # no hold: written at once
    assert _frame(r, 10) == b"before"
    held_at = time.monotonic()
    feed.hold()
    feed.put(b"during")
    assert feed.holding.wait(10)  # the feed thread has the frame and waits
    assert not select.select([r], [], [], 0)[0]  # nothing was written meanwhile
    assert _frame(r, 10 + process.YIELD_S) == b"during"
    assert time.monotonic() - held_at >= process.YIELD_S  # not before the hold was over
    assert not feed.holding.is_set()


def test_closing_writes_what_a_hold_kept(pipe, monkeypatch):
    r, feed = pipe
    monkeypatch.setattr(process, "YIELD_S", 600.0)  # a hold that would outlast the test
    feed.hold()
    feed.put(b"one", b"two")
    assert feed.holding.wait(10)
    feed.close()  # the daemon stops: the child must still get every frame, in order
    assert _frame(r, 30) == b"one"
    assert _frame(r, 30) == b"two"


def test_a_hold_lasts_hold_max_s_at_most_then_needs_a_quiet_second():
    r, w = os.pipe()
    feed = Feed(w)
    try:
        t = 1000.0
        feed.hold(now=t)
        assert feed._wait(t + 0.25) == pytest.approx(process.YIELD_S - 0.25)
        # ingest keeps committing backlog-sized batches, twice a second, for longer than the max
        while t < 1000.0 + process.HOLD_MAX_S + 5:
            t += 0.5
            feed.hold(now=t)
            expected = max(0.0, min(t + process.YIELD_S, 1000.0 + process.HOLD_MAX_S) - t)
            assert feed._wait(t) == pytest.approx(expected)
        assert feed._wait(t) == 0.0  # past the max: frames flow beside ingest
        # a quiet YIELD_S later, the next burst holds them again
        t += process.YIELD_S + 0.1
        feed.hold(now=t)
        assert feed._wait(t) == pytest.approx(process.YIELD_S)
    finally:
        feed.close()
        feed.join(10)
        os.close(r)


class _Recorder:
    """The AnalyticsProcess's view of its child: what feed() asks of it."""

    def __init__(self):
        self.holds, self.sent, self.frames = 0, 0, []

    def hold(self):
        self.holds += 1

    def backlog(self):
        return 0

    def put(self, *blobs):
        self.frames += blobs
        return True


def test_only_a_backlog_sized_commit_holds_the_feed():
    class _Tel:
        def __init__(self, i):
            self.node, self.ts, self.m = f"n{i}", i, {"p_w": 1.0}

    ap = AnalyticsProcess.__new__(AnalyticsProcess)  # its feed() alone: no daemon, no child
    ap.child, ap.queue_max, ap.dropped = _Recorder(), 10**9, 0
    ap.daemon = SimpleNamespace(ingest=SimpleNamespace(last_rows=None))
    ap._last_row, ap._per_msg = None, 1.0
    ap.feed([_Tel(i) for i in range(process.BACKLOG_BATCH - 1)])
    assert ap.child.holds == 0 and ap.child.sent == process.BACKLOG_BATCH - 1
    ap.feed([_Tel(i) for i in range(process.BACKLOG_BATCH)])
    assert ap.child.holds == 1 and ap.child.sent == 2 * process.BACKLOG_BATCH - 1


def test_the_daemon_side_of_analytics_leaves_the_engine_to_the_child():
    # the detectors and KPIs run in the analytics process; in the daemon they were 2.5 MB of RSS
    # imported for two helpers (the [analytics] defaults and the 'behind' warning)
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "import gridtwin.daemon.service\n"
        "from gridtwin.analytics import process\n"
        "assert process.config.setting(None, 'queue_max') == 200_000\n"
        "f = types.SimpleNamespace(_last_drop_log=-1e9, dropped=5, queue_max=10)\n"
        "process.config.say_behind(f)\n"
        "print(sorted(m for m in sys.modules if m.startswith('gridtwin.analytics.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "gridtwin.analytics.process" in out and "gridtwin.analytics.engine" not in out, out


class _Tel2:
    """A Telemetry as the feed reads it: 2 readings a message."""

    def __init__(self, i):
        self.node, self.ts, self.m = f"n{i}", i, {"p_w": 1.0, "v": 230.0}


def _daemon_side(feed, queue_max: int):
    """An AnalyticsProcess's daemon side alone, its child a real Feed on a real pipe (no process):
    (it, the child, the ingest whose last_rows it reads)."""
    child = process.Child.__new__(process.Child)
    child.feed, child.sent, child.taken = feed, 0, 0
    ingest = SimpleNamespace(last_rows=None)
    ap = AnalyticsProcess.__new__(AnalyticsProcess)
    ap.child, ap.queue_max, ap.dropped = child, queue_max, 0
    ap.daemon = SimpleNamespace(ingest=ingest)
    ap._replays, ap._replay_lock = process.collections.deque(), process.threading.Lock()
    ap._last_replay_log, ap._replaying, ap._last_drop_log = -1e9, 0, -1e9
    ap._last_row, ap._per_msg = None, 1.0
    return ap, child, ingest


def test_a_commit_without_room_goes_as_the_rowids_to_read_back(pipe, caplog):
    """Beyond queue_max a telemetry commit is handed over as its rows' rowids (the child reads
    them back from the store, in order, when it gets there), merged with the replay queued before
    it; so is every commit while a hold is on (nothing of a burst is built or kept in the daemon).
    Until the child has read them, compaction leaves those rows in place (replay_floor). OPC UA
    points are not in the readings table: dropped and counted, as before."""
    r, feed = pipe

    ap, child, ingest = _daemon_side(feed, queue_max=25)
    first = 1

    def commit():  # 5 messages (10 readings), stored as rowids first..first+4
        nonlocal first
        ingest.last_rows = (first, first + 4)
        ap.feed([_Tel2(i) for i in range(first, first + 5)])
        first += 5

    for _ in range(4):
        commit()
    assert ap.dropped == 0 and child.sent == 40
    # said once (a minute at most) for the two commits the full queue had no room for
    said = [r.message for r in caplog.records if "back from the store" in r.message]
    assert said == [
        "analytics is behind: it reads 10 reading(s) back from the store when it gets to them "
        "(its queue of 25 is full); ingest goes on"
    ]
    assert ap.replay_floor() == 11  # rows 11.. are to be read back
    frames = [marshal.loads(_frame(r, 10)) for _ in range(2)]
    assert [f[0] for f in frames] == [10, 10]  # two commits handed over whole
    assert [x[0] for x in frames[0][1]] == [f"n{i}" for i in range(1, 6)]
    replays = []
    while sum(f[3] for f in replays) < 20:  # one frame, or two if the first left before the second
        replays.append(marshal.loads(_frame(r, 10)))
    assert [f[0] for f in replays] == ["replay"] * len(replays)
    assert (replays[0][1], replays[-1][2]) == (11, 20)
    assert all(a[2] + 1 == b[1] for a, b in zip(replays, replays[1:]))
    assert abs(replays[0][4] / 1000 - time.time()) < 60
    ap._replayed(15)  # the child read up to rowid 15
    assert ap.replay_floor() == 16
    ap._replayed(20)
    assert ap.replay_floor() is None
    # a range the child never answers for is let go after 2 x REPLAY_MAX_AGE_S (the child drops
    # what it reaches after REPLAY_MAX_AGE_S): compaction is held back that long at most
    ingest.last_rows = (21, 25)
    ap._others(21, 25)
    assert marshal.loads(_frame(r, 10))[:4] == ("replay", 21, 25, 10)  # 2 readings a message
    assert ap.replay_floor() == 21
    ap._replays[0][2] -= 2 * process.REPLAY_MAX_AGE_S + 1  # handed over that long ago
    assert ap.replay_floor() is None
    ap._last_row = 25
    first = 26
    ap.feed_points([_Tel2(0)])  # an OPC UA point: nothing to read back
    assert ap.dropped == 2

    child.taken = child.sent  # the child took everything: the queue has room again
    feed.hold()  # ingest stores a backlog: commits go as rowids although they would fit
    commit()
    commit()
    assert ap.replay_floor() == 26
    assert len([r for r in caplog.records if "back from the store" in r.message]) == 1  # by design
    feed.close()  # written now: one replay of both commits
    assert marshal.loads(_frame(r, 10))[:4] == ("replay", 26, 35, 20)


def test_rows_another_daemon_instance_committed_are_read_back_in_their_place(pipe):
    """With [daemon] instances > 1 the instances share ingest and the database, and instance 1
    runs analytics: the rowids between two of its commits were taken by the other instances'
    commits in between, so they go to the child as a replay, before the commit after them."""
    r, feed = pipe

    ap, child, ingest = _daemon_side(feed, queue_max=1000)
    ingest.last_rows = (1, 3)
    ap.feed([_Tel2(i) for i in (1, 2, 3)])  # rows 1-3: ours
    ingest.last_rows = (8, 9)  # rows 4-7: another instance's, committed in between
    ap.feed([_Tel2(i) for i in (8, 9)])
    ingest.last_rows = (10, 10)  # right after ours: nothing in between
    ap.feed([_Tel2(10)])
    frames = [marshal.loads(_frame(r, 10)) for _ in range(4)]
    assert [f[1][0][0] for f in (frames[0], frames[2], frames[3])] == ["n1", "n8", "n10"]
    assert frames[1][:4] == ("replay", 4, 7, 8)  # 4 messages, 2 readings each like ours
    assert child.sent == 6 + 8 + 4 + 2 and ap.dropped == 0
    assert ap.replay_floor() == 4
