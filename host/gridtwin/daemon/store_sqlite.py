"""The daemon's embedded store: SQLite in the site's ``var/`` folder.

One row per telemetry message (the validated payload, metrics under ``$.m``) keeps ingest at one
B-tree insert per message, which is what lets one Python process store tens of thousands of messages
a second. The unique index on (node, boot, seq) *is* the de-duplication: QoS 1 redeliveries and
outbox replays hit ``INSERT OR IGNORE`` and are counted, never stored twice.

Readings older than a few minutes do not stay one row each: the daemon's maintenance thread moves
them (``compact``) into compressed blocks of one node's readings (gridtwin.daemon.blocks), about
10x smaller in all. Each block's unbroken seq runs, (node, boot, first seq, last seq), stay in a
small table that ingest checks, so a reading replayed a week late into a compacted span is still
known stored, without decompressing anything. Whatever reads readings reads both.

Durability trade-off (documented in docs/scaling.md): WAL with ``synchronous=NORMAL``. A
committed batch survives a crash or ``kill -9`` of the daemon (the WAL is in the OS page cache);
only a power cut can lose the last commits before the next checkpoint. ``synchronous="FULL"``
(site.toml ``storage.sync = "full"``) fsyncs every batch for the power-cut case, at a cost in rate.

Only the daemon's writer thread writes readings; the CLI opens its own connection to read
(``nodes``, ``query``) or to record command history. WAL lets both run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from operator import itemgetter
from pathlib import Path

from gridtwin.daemon import blocks
from gridtwin.errors import GridTwinError

SCHEMA = """
-- A rowid table: rows are appended in arrival order and one index holds only short keys.
-- (A WITHOUT ROWID table keyed by (node, boot, seq) put whole payloads in the key B-tree: a batch
-- from 1,000 nodes then dirtied a leaf page per node and ingest ran at less than half the rate.)
-- One index only: each index costs a page write per reading at fleet rates (a batch's readings
-- come from as many nodes, each node's keys on a page of its own). The table holds a few minutes
-- of each node (compact()), so reading a node by time walks its few hundred (node, ...) keys.
-- msg: the metrics object {name: number} as the validator checked it
CREATE TABLE IF NOT EXISTS readings (
    node TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL,
    ts INTEGER NOT NULL, hist INTEGER NOT NULL DEFAULT 0, msg TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_key ON readings (node, boot, seq);  -- the de-duplication
-- readings moved out of `readings` by compact(): one row per block of one node's readings, data
-- gridtwin.daemon.blocks.encode()'s (comments inside a statement are kept in the schema: the
-- spilled table's note says why it must stay small)
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY, node TEXT NOT NULL, ts_lo INTEGER NOT NULL, ts_hi INTEGER NOT NULL,
    n INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_node_ts ON blocks (node, ts_lo, ts_hi);
-- every (boot, seq) a block holds, as unbroken runs: the de-duplication of compacted readings
CREATE TABLE IF NOT EXISTS runs (
    node TEXT NOT NULL, boot TEXT NOT NULL, seq_hi INTEGER NOT NULL, seq_lo INTEGER NOT NULL,
    block INTEGER NOT NULL,
    PRIMARY KEY (node, boot, seq_hi)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1m (
    node TEXT NOT NULL, metric TEXT NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, vmin REAL, vmax REAL, vsum REAL,
    PRIMARY KEY (node, metric, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, state TEXT, fw TEXT, board TEXT, reset TEXT, boot TEXT,
    heap REAL, rssi REAL, uptime REAL, cfg TEXT, sensors TEXT, outbox REAL, drops REAL,
    interval REAL, last_seen INTEGER, status_at INTEGER
);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, node TEXT NOT NULL, cmd TEXT NOT NULL, args TEXT NOT NULL,
    created INTEGER NOT NULL, sent INTEGER, state TEXT NOT NULL, finished INTEGER,
    ok INTEGER, result TEXT, err TEXT
);
CREATE TABLE IF NOT EXISTS acks (
    id TEXT NOT NULL, node TEXT NOT NULL, ok INTEGER NOT NULL, result TEXT, err TEXT,
    ts INTEGER, received INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS acks_id ON acks (id, node);  -- redelivered acks are stored once
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, node TEXT, severity TEXT NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1, cleared INTEGER
);
-- A forward jump in seq is a *pending* gap: `missing` counts down as replayed readings fill it.
-- Once replay had its chance (Daemon: [daemon] gap_grace_s) it is confirmed if anything is still
-- missing, or deleted if nothing is.
CREATE TABLE IF NOT EXISTS gaps (
    node TEXT NOT NULL, boot TEXT NOT NULL, after_seq INTEGER NOT NULL, missing INTEGER NOT NULL,
    detected INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    node TEXT NOT NULL, ts INTEGER, lvl TEXT, msg TEXT, received INTEGER NOT NULL
);
-- node health over time (each status a node publishes: its birth, then one per health interval)
CREATE TABLE IF NOT EXISTS health (
    node TEXT NOT NULL, ts INTEGER NOT NULL, heap REAL, heap_min REAL, rssi REAL, uptime REAL,
    outbox REAL, drops REAL
);
CREATE INDEX IF NOT EXISTS health_node_ts ON health (node, ts);
-- line protocol waiting for InfluxDB, in arrival order (AUTOINCREMENT never reuses an id)
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL);
-- messages ingest made durable as received, to be validated and stored in order once it has
-- caught up (gridtwin.daemon.ingest: the spill); one row a batch (a new one's id is above every
-- row's left), deleted in the transaction that stores its messages. owner: the daemon instance's
-- client id (instances share the file, each works off its own). topics: the messages' topics
-- joined by NUL (which MQTT forbids in a topic); sizes: each payload's length in bytes, comma-
-- separated; payloads: one after the other. (Comments stay outside the statement: SQLite keeps
-- its text in the schema, which must fit the first page for a damaged file to be opened at all.)
CREATE TABLE IF NOT EXISTS spilled (id INTEGER PRIMARY KEY, owner TEXT NOT NULL,
    received INTEGER NOT NULL, n INTEGER NOT NULL, topics TEXT NOT NULL, sizes TEXT NOT NULL,
    payloads BLOB NOT NULL);
"""

# A batch's readings go in as multi-row VALUES statements of up to _CHUNK rows, the values bound
# as parameters: one sqlite3_step a statement, so the GIL is let go once per chunk, not once per
# row as executemany does (each re-acquire waited behind the MQTT thread, up to 5 ms: that convoy
# cost more than all the rest of ingest), and nothing is parsed again in SQL (a JSON array through
# json_each and six json_extract a row cost 10 us a reading against 3 now). A reading that a block
# already holds (the run with the first seq_hi >= its seq starts at or before it) is not inserted.
_INSERT_INTO = "INSERT OR IGNORE INTO readings (node, boot, seq, ts, hist, msg) "
_RUNS_FILTER = (
    # the VALUES rows as a subquery: their columns are column1..column6
    "SELECT * FROM (VALUES {rows}) "
    "WHERE coalesce((SELECT seq_lo FROM runs WHERE node = column1 AND boot = column2 AND "
    "seq_hi >= column3 ORDER BY seq_hi LIMIT 1) > column3, 1)"
)
# rows a statement: 6 parameters each, within the 999 that SQLite before 3.32 (buster) allows
_CHUNK = 128


def insert_sql(rows: int, fresh: bool) -> str:
    """The insert of ``rows`` readings; ``fresh``: all above their (node, boot)'s stored seqs
    (SqliteStore._gaps tells), so no block can hold them and the runs look-up is skipped (the
    unique key still stores a redelivery once)."""
    values = ",".join(("(?,?,?,?,?,?)",) * rows)
    return _INSERT_INTO + ("VALUES " + values if fresh else _RUNS_FILTER.format(rows=values))


# insert_sql of every size write_batch uses (_CHUNK, and the powers of two a batch's tail is cut
# into), built once: sqlite3 then finds each compiled in its statement cache
_INSERTS = {
    (n, fresh): insert_sql(n, fresh)
    for n in (_CHUNK, *(1 << k for k in range(_CHUNK.bit_length() - 1)))
    for fresh in (True, False)
}


def _metrics_encoder():
    """The text of one metrics object as compact JSON: CPython's C encoder made once, not once
    per call as JSONEncoder.encode does (a third of the cost of a row at 1,000 msg/s)."""
    from json.encoder import c_make_encoder, encode_basestring

    if c_make_encoder is None:  # a Python without the C accelerator
        return json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, check_circular=False
        ).encode

    def refuse(o):
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    enc = c_make_encoder(None, refuse, encode_basestring, None, ":", ",", False, False, True)
    join = "".join
    return lambda m: join(enc(m, 0))


_METRICS = _metrics_encoder()
# PRAGMA user_version; 0: readings.msg held the whole payload (metrics under $.m); 1: no blocks yet
# (the tables are made by SCHEMA, and the daemon compacts the rows a version-1 database holds as it
# runs); 2: readings had a second index, (node, ts)
SCHEMA_VERSION = 3

STATUS_COLUMNS = (
    "state",
    "fw",
    "board",
    "reset",
    "boot",
    "heap",
    "rssi",
    "uptime",
    "cfg",
    "sensors",
    "outbox",
    "drops",
    "interval",
    "heap_min",
)
HEALTH_COLUMNS = ("heap", "heap_min", "rssi", "uptime", "outbox", "drops")
# columns added to nodes after its first release (databases made then get them by ALTER TABLE)
NODE_EXTRA_COLUMNS = (
    ("heap_min", "REAL"),
    ("rejected", "INTEGER"),
    ("last_reject", "TEXT"),
    ("last_reject_at", "INTEGER"),
)


class StoreError(GridTwinError):
    """The database cannot be opened or written (disk full, permissions, corrupt file)."""


class BatchResult:
    """What a write_batch stored. A plain class: importing dataclasses (inspect, ast, dis, ...)
    was a tenth of `gridtwin query`'s start, which imports this module."""

    __slots__ = ("stored", "duplicates", "gaps", "rows")

    def __init__(self, stored: int, duplicates: int, gaps: list, rows: tuple | None = None):
        self.stored, self.duplicates = stored, duplicates
        self.gaps = gaps  # (node, boot, after_seq, missing)
        # (first, last) rowid of the readings stored, or None: a batch's new rows take consecutive
        # rowids, in the batch's order (one writer; a new row's rowid is the largest + 1). What
        # the analytics process reads back when it fell behind (gridtwin.analytics.process)
        self.rows = rows

    def __repr__(self) -> str:
        return f"BatchResult(stored={self.stored}, duplicates={self.duplicates}, gaps={self.gaps})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, BatchResult):
            return NotImplemented
        return (self.stored, self.duplicates, self.gaps) == (
            other.stored,
            other.duplicates,
            other.gaps,
        )


WRITE_HINT = "check free disk space and permissions of the site's var/ folder"


def _now_ms() -> int:
    return int(time.time() * 1000)


CORRUPT_HINT = (
    "move it aside (`mv {path} {path}.corrupt`) and start again: a new database is made, and "
    "the broker still holds every message the daemon had not acknowledged"
)


class CorruptDatabase(StoreError):
    """The file is not a usable SQLite database: a destroyed header or damaged pages."""

    def __init__(self, path: Path, detail: str):
        detail = " ".join(detail.split())[:200]  # quick_check's report spans lines: one line here
        super().__init__(
            f"the database {path} is corrupt ({detail})", hint=CORRUPT_HINT.format(path=path)
        )


_CORRUPT = ("file is not a database", "malformed", "corrupt")


def _is_corruption(exc: Exception) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    return any(word in str(exc) for word in _CORRUPT)


def error(path: Path, exc: Exception, doing: str, hint: str) -> StoreError:
    """The project's error for a failed SQLite call: corruption says so and names the fix."""
    if _is_corruption(exc):
        return CorruptDatabase(path, str(exc))
    return StoreError(f"{doing} {path}: {exc}", hint=hint)


def secure_dir(folder: Path) -> None:
    """The site's var/ is the daemon's alone (0700): readings and command history are private."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077 and folder.name == "var":
        os.chmod(folder, 0o700)


def _private(path: Path) -> None:
    """Database, WAL and shared-memory file mode 0600, whoever made them and with which umask."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass
        except PermissionError:
            # a reader that does not own the file (the CLI as another user): not ours to change
            pass


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """PRAGMA quick_check: damaged pages found now, with a clear message, not mid-query later."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        raise error(path, exc, "cannot check", "") from None
    if rows != [("ok",)]:
        raise CorruptDatabase(path, "; ".join(r[0] for r in rows)[:300])


def _migrate(conn: sqlite3.Connection) -> None:
    _analytics_tables(
        conn
    )  # gridtwin.analytics: its tables and the alerts' columns (idempotent, any version)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    cols = {r[1] for r in conn.execute("PRAGMA table_info(nodes)")}
    conn.execute("BEGIN")
    if version < 1:
        # readings.msg: the whole payload -> its metrics object (what queries read, validated)
        conn.execute(
            "UPDATE readings SET msg = json_extract(msg, '$.m') WHERE json_type(msg, '$.m') = "
            "'object'"
        )
        # spooled line protocol: millisecond times -> nanoseconds (the writer's precision now)
        conn.execute("UPDATE spool SET line = line || '000000'")
    for col, kind in NODE_EXTRA_COLUMNS:
        if col not in cols:
            conn.execute(f"ALTER TABLE nodes ADD COLUMN {col} {kind}")
    if "mod" not in {r[1] for r in conn.execute("PRAGMA table_info(logs)")}:
        conn.execute(
            "ALTER TABLE logs ADD COLUMN mod TEXT"
        )  # the firmware module that logged the line
    gap_cols = {r[1] for r in conn.execute("PRAGMA table_info(gaps)")}
    for col, kind in (("last_seq", "INTEGER"), ("confirmed", "INTEGER")):
        if col not in gap_cols:
            conn.execute(f"ALTER TABLE gaps ADD COLUMN {col} {kind}")
    # gaps of the first release were never retracted: their end is after_seq + missing
    conn.execute(
        "UPDATE gaps SET last_seq = after_seq + missing, confirmed = detected WHERE last_seq IS "
        "NULL"
    )
    conn.execute("DROP INDEX IF EXISTS readings_node_ts")  # version 2's second index (see SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.execute("COMMIT")


def connect(path: Path | str, sync: str = "normal", check: bool = False) -> sqlite3.Connection:
    """Open (or make) the database. ``check``: run PRAGMA quick_check first (the daemon at start
    and `doctor`; it reads every page, so the CLI's readers skip it and report corruption when a
    query meets it)."""
    path = Path(path)
    try:
        secure_dir(path.parent)
        old = os.umask(0o077)  # SQLite makes the -wal and -shm files with the process umask
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            conn.execute(
                "PRAGMA cache_size=-32768"
            )  # 32 MiB: the hot index pages of a fleet stay in memory
            if check:
                quick_check(conn, path)
            conn.executescript(SCHEMA)
            _migrate(conn)
        finally:
            os.umask(old)
        _private(path)
    except (sqlite3.Error, OSError) as exc:
        raise error(
            path,
            exc,
            "cannot open the database",
            "check that the site's var/ folder is writable and the disk is not full",
        ) from None
    return conn


def _reads(fn):
    """A reader's SQLite error (damaged pages met mid-query) as the project's error, named."""
    import functools

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise error(
                self.path, exc, "cannot read", "is the site's var/ folder readable?"
            ) from None

    return wrapper


# the largest rowid of the readings table (0: empty)
TOP_ROWID = "SELECT coalesce(max(rowid), 0) FROM readings"
# the highest seq stored of a (node, boot), in rows or blocks; -1: none
HIGH_WATER = (
    "SELECT max(coalesce((SELECT max(seq) FROM readings WHERE node=?1 AND boot=?2), -1), "
    "coalesce((SELECT max(seq_hi) FROM runs WHERE node=?1 AND boot=?2), -1))"
)

# compact(): a node's readings older than HOT_MS are moved into blocks once MIN_ROWS of them are
# waiting, or when the oldest has waited SETTLE_MS (a slow node, a late replay); blocks of at most
# MAX_ROWS (a query decodes whole blocks: 1h of a 1 Hz node is four of them)
HOT_MS = 5 * 60_000
SETTLE_MS = 60 * 60_000
MIN_ROWS = 256
MAX_ROWS = 1024
TXN_ROWS = 50_000  # rows moved per transaction: ingest waits for it (about 0.2 s), once a pass
# rows moved per pass (a few seconds): the daemon's stop waits for the pass to end
PASS_ROWS = 100_000


class SqliteStore:
    """Readings, registry, command history, alerts and the InfluxDB spool in one SQLite file."""

    def __init__(self, path: Path | str, sync: str = "normal", check: bool = False):
        self.path = Path(path)
        self.conn = connect(self.path, sync, check)
        self._lock = threading.Lock()  # one writer at a time on this connection
        self._last_seq: dict[tuple[str, str], int] = {}
        self.track_gaps = True  # off when daemons share the stream (service.Daemon sets it)

    def start_checkpointer(self, interval: float = 0.5) -> None:
        """Checkpoint the WAL from a thread of its own, off the commit path.

        SQLite's automatic checkpoint runs inside whichever commit crosses the threshold and
        copies the WAL into the database there and then: that commit (and every reading waiting
        for its ack) takes tens of milliseconds longer. A PASSIVE checkpoint on a second
        connection does the same work without blocking the writer; the automatic one stays as a
        fallback at a higher threshold."""
        self.conn.execute("PRAGMA wal_autocheckpoint=10000")
        self._ckpt_stop = threading.Event()

        def run():
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            try:
                while not self._ckpt_stop.wait(interval):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error:
                        pass  # busy or locked: the next round, or the fallback, will do it
            finally:
                conn.close()

        self._ckpt = threading.Thread(target=run, name="wal-checkpoint", daemon=True)
        self._ckpt.start()

    def close(self) -> None:
        if getattr(self, "_reader", None):
            self._reader.close()
        if getattr(self, "_ckpt", None):
            self._ckpt_stop.set()
            self._ckpt.join(timeout=10)
        with self._lock:
            self.conn.close()

    # -- ingest ---------------------------------------------------------------------------
    def _gaps(self, batch) -> tuple[list, list, bool]:
        """Forward jumps in seq within a boot (new pending gaps), the readings below the
        high-water mark (late: a replay or out-of-order delivery) that may fill one, and whether
        every reading is above its mark (then no block can hold it: compact() moves only stored
        readings). The mark survives restarts via the database."""
        gaps, late = [], []
        fresh = True
        last = self._last_seq
        for t in batch:
            node, boot, seq = t.node, str(t.boot), t.seq
            key = (node, boot)
            prev = last.get(key)
            if prev is None:
                prev = self.conn.execute(HIGH_WATER, key).fetchone()[0]
                if prev < 0:
                    # first sight of this boot: the host may have started mid-boot, not a gap
                    last[key] = seq
                    continue
            if seq > prev:
                if seq > prev + 1:
                    gaps.append((node, boot, prev, seq - prev - 1))
                last[key] = seq
            else:
                fresh = False
                if seq < prev:
                    late.append((node, boot, seq))
        return gaps, late, fresh

    def _fill_gaps(self, late: list, first_rowid: int) -> None:
        """Late readings stored by this batch (rowid past first_rowid: new, not a redelivery)
        fill the pending gap they fall in, one count each."""
        conn = self.conn
        for node, boot, seq in set(late):
            if conn.execute(
                "SELECT 1 FROM readings WHERE node=? AND boot=? AND seq=? AND rowid>?",
                (node, boot, seq, first_rowid),
            ).fetchone():
                conn.execute(
                    "UPDATE gaps SET missing = missing - 1 WHERE node=? AND boot=? AND after_seq < "
                    "? AND ? <= last_seq AND confirmed IS NULL AND missing > 0",
                    (node, boot, seq, seq),
                )

    def settle_gaps(self, older_than_ms: int) -> list[tuple[str, str, int, int]]:
        """Gaps detected before the cut-off have had their replay: confirm those still missing
        readings (returned as (node, boot, after_seq, missing)) and drop those that were filled."""
        now = _now_ms()
        with self._transaction("cannot update gaps in", "check the site's var/ folder") as conn:
            rows = conn.execute(
                "SELECT node, boot, after_seq, missing FROM gaps WHERE confirmed IS NULL "
                "AND detected < ? AND missing > 0",
                (older_than_ms,),
            ).fetchall()
            conn.execute(
                "UPDATE gaps SET confirmed=? WHERE confirmed IS NULL AND detected < ? AND "
                "missing > 0",
                (now, older_than_ms),
            )
            conn.execute("DELETE FROM gaps WHERE confirmed IS NULL AND missing <= 0")
        return rows

    @contextlib.contextmanager
    def _transaction(self, doing: str, hint: str):
        """One transaction on the writer's connection, under its lock: a SQLite error rolls it
        back and becomes the StoreError (CorruptDatabase for a damaged file) that names the file,
        what was being done and ``hint``."""
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise error(self.path, exc, doing, hint) from None

    def pending_gaps(self) -> int:
        return self.conn.execute(
            "SELECT coalesce(sum(missing), 0) FROM gaps WHERE confirmed IS NULL"
        ).fetchone()[0]

    # -- the spill: messages kept as received while ingest catches up ---------------------------
    def spill(self, owner: str, received_ms: int, rows: list) -> list[int]:
        """Keep messages as received for ``owner`` (the daemon instance's client id), a row for
        each (topics, payloads) of ``rows``, in one transaction; returns the rows' ids."""
        with self._transaction("cannot write to", WRITE_HINT) as conn:
            return [
                conn.execute(
                    "INSERT INTO spilled (owner, received, n, topics, sizes, payloads) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        owner,
                        received_ms,
                        len(payloads),
                        "\0".join(topics),
                        ",".join(map(str, map(len, payloads))),
                        b"".join(payloads),
                    ),
                ).lastrowid
                for topics, payloads in rows
            ]

    def spilled(self, ids: list[int]) -> list[tuple[str, bytes]]:
        """The messages of the spilled batches ``ids`` (oldest first), [(topic, payload)] in
        the order they arrived."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT topics, sizes, payloads FROM spilled WHERE id IN "
                f"({','.join('?' * len(ids))}) ORDER BY id",
                ids,
            ).fetchall()
        msgs = []
        for topics, sizes, data in rows:
            at = 0
            for topic, size in zip(topics.split("\0"), map(int, sizes.split(","))):
                msgs.append((topic, data[at : at + size]))
                at += size
        return msgs

    def adopt_spilled(self, owner: str, keep) -> tuple[int, int, list[str]]:
        """Give ``owner`` the spilled rows of every owner not in ``keep`` (daemon instances the
        site no longer has); returns (rows, messages, their former owners)."""
        marks = ",".join("?" * len(keep))
        with self._transaction("cannot write to", WRITE_HINT) as conn:
            rows, msgs, owners = conn.execute(
                "SELECT count(*), coalesce(sum(n), 0), group_concat(DISTINCT owner) FROM spilled "
                f"WHERE owner NOT IN ({marks})",
                list(keep),
            ).fetchone()
            if rows:
                conn.execute(
                    f"UPDATE spilled SET owner = ? WHERE owner NOT IN ({marks})", [owner, *keep]
                )
        return rows, msgs, sorted((owners or "").split(",")) if rows else []

    def spilled_index(self, owner: str) -> list[tuple[int, int, int]]:
        """``owner``'s spilled batches not yet stored, oldest first: (id, received ms, messages)."""
        with self._lock:
            return self.conn.execute(
                "SELECT id, received, n FROM spilled WHERE owner = ? ORDER BY id", (owner,)
            ).fetchall()

    def write_batch(
        self,
        readings,
        statuses=(),
        acks=(),
        logs=(),
        spool_lines=None,
        rejects=None,
        spilled_ids=(),
    ) -> BatchResult:
        """Store one batch in one transaction; returns what was new. Raises StoreError.

        ``rejects``: {node: (count, "reason: detail", at_ms)} of messages ingest refused since the
        last batch, so `gridtwin nodes` and `deploy --wait` can say why a node's readings are
        missing. ``spilled_ids``: the spilled batches these messages came from, deleted in the same
        transaction (so each is stored exactly once, whenever the daemon stops)."""
        now = _now_ms()
        enc = _METRICS
        # the metrics object's text: as the node wrote it where validation could take it so
        # (Telemetry.mtext; readings made elsewhere may lack it), else the parsed values written
        # out; never anything not checked
        flat = [
            x
            for t in readings
            for mtext in (getattr(t, "mtext", None),)
            for x in (
                t.node,
                str(t.boot),
                t.seq,
                t.ts,
                1 if t.hist else 0,
                mtext if mtext is not None else enc(t.m),
            )
        ]
        with self._lock:
            try:
                gaps, late, fresh = self._gaps(readings) if self.track_gaps else ([], [], False)
                conn = self.conn
                conn.execute("BEGIN")
                before = conn.total_changes
                first_rowid = conn.execute(TOP_ROWID).fetchone()[0] if late else 0
                i, end = 0, len(flat)
                while i < end:
                    n = min(_CHUNK, (end - i) // 6)
                    n = _CHUNK if n == _CHUNK else 1 << (n.bit_length() - 1)
                    conn.execute(_INSERTS[n, fresh], flat[i : i + 6 * n])
                    i += 6 * n
                stored = conn.total_changes - before
                if stored:
                    # the last statement may have inserted nothing (all redeliveries)
                    last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                    span = (last - stored + 1, last)
                else:
                    span = None
                if gaps:
                    conn.executemany(
                        "INSERT INTO gaps (node, boot, after_seq, missing, detected, last_seq) "
                        "VALUES (?,?,?,?,?,?)",
                        [g + (now, g[2] + g[3]) for g in gaps],
                    )
                if late and stored:
                    self._fill_gaps(late, first_rowid)
                if spool_lines:
                    conn.executemany(
                        "INSERT INTO spool (line) VALUES (?)", [(s,) for s in spool_lines]
                    )
                seen = {}
                for t in readings:
                    seen[t.node] = now
                for node, st in statuses:
                    self._status(node, st, now)
                    seen.pop(node, None)
                if seen:  # one statement for all nodes of the batch
                    conn.execute(
                        "INSERT INTO nodes (id, last_seen) SELECT value, ? FROM json_each(?) WHERE "
                        "true ON CONFLICT(id) DO UPDATE SET last_seen=excluded.last_seen",
                        (now, json.dumps(list(seen))),
                    )
                for node, a in acks:
                    self._ack(node, a, now)
                if logs:
                    conn.executemany(
                        "INSERT INTO logs (node, ts, lvl, msg, received, mod) VALUES (?,?,?,?,?,?)",
                        [
                            (n, lg.get("ts"), lg["lvl"], lg["msg"], now, lg.get("mod"))
                            for n, lg in logs
                        ],
                    )
                if spilled_ids:
                    conn.executemany(
                        "DELETE FROM spilled WHERE id = ?", [(i,) for i in spilled_ids]
                    )
                if rejects:
                    conn.executemany(
                        "INSERT INTO nodes (id, rejected, last_reject, last_reject_at) VALUES "
                        "(?,?,?,?) ON CONFLICT(id) DO UPDATE SET rejected=coalesce(nodes.rejected, "
                        "0)+excluded.rejected, last_reject=excluded.last_reject, "
                        "last_reject_at=excluded.last_reject_at",
                        [(node, n, text, at) for node, (n, text, at) in rejects.items()],
                    )
                conn.execute("COMMIT")
            except Exception as exc:
                # sqlite3.Error, or a value the bind cannot take (whatever slipped past validation):
                # nothing of this batch happened; ingest retries it or isolates the bad message
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._last_seq.clear()  # re-read high-water marks: this batch did not happen
                if isinstance(exc, sqlite3.Error):
                    raise error(
                        self.path,
                        exc,
                        "cannot write to",
                        WRITE_HINT,
                    ) from None
                raise
        return BatchResult(stored, len(readings) - stored, gaps, span)

    def _status(self, node: str, st: dict, now: int) -> None:
        values = [
            json.dumps(st[c]) if c == "sensors" and c in st else st.get(c) for c in STATUS_COLUMNS
        ]
        values[STATUS_COLUMNS.index("boot")] = None if st.get("boot") is None else str(st["boot"])
        present = [c for c in STATUS_COLUMNS if c in st]
        # a will ("offline") carries only the state: keep the last known firmware, heap, ...
        sets = ", ".join(f"{c}=excluded.{c}" for c in present)
        cols = ", ".join(("id",) + STATUS_COLUMNS + ("last_seen", "status_at"))
        marks = ", ".join("?" * (len(STATUS_COLUMNS) + 3))
        last_seen = now if st.get("state") == "online" else None
        if last_seen and any(st.get(c) is not None for c in HEALTH_COLUMNS):
            self.conn.execute(
                "INSERT INTO health VALUES (?,?,?,?,?,?,?,?)",
                [node, st.get("ts") or now] + [st.get(c) for c in HEALTH_COLUMNS],
            )
        self.conn.execute(
            f"INSERT INTO nodes ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {sets}, "
            "status_at=excluded.status_at, last_seen=coalesce(excluded.last_seen, nodes.last_seen)",
            [node] + values + [last_seen, now],
        )

    def _ack(self, node: str, a: dict, now: int) -> None:
        result = json.dumps(a["result"]) if "result" in a else None
        self.conn.execute(
            "INSERT OR IGNORE INTO acks VALUES (?,?,?,?,?,?,?)",
            (a["id"], node, int(a["ok"]), result, a.get("err"), a.get("ts"), now),
        )
        self.conn.execute(
            "UPDATE commands SET state=?, finished=?, ok=?, result=?, err=? "
            "WHERE id=? AND node=? AND state IN ('pending','sent')",
            ("ok" if a["ok"] else "error", now, int(a["ok"]), result, a.get("err"), a["id"], node),
        )

    # -- registry, commands, alerts ---------------------------------------------------------
    def ensure_nodes(self, ids) -> None:
        with self._lock:
            self.conn.executemany(
                "INSERT OR IGNORE INTO nodes (id) VALUES (?)", [(i,) for i in ids]
            )

    @_reads
    def nodes(self) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM nodes ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def command_created(self, cid: str, node: str, cmd: str, args: dict) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT INTO commands (id, node, cmd, args, created, state) VALUES (?,?,?,?,?,?)",
                (cid, node, cmd, json.dumps(args), _now_ms(), "pending"),
            )

    def command_update(self, cid: str, state: str, **fields) -> None:
        cols = {"state": state, **fields}
        if state not in ("pending", "sent"):
            cols.setdefault("finished", _now_ms())
        if "result" in cols:
            cols["result"] = json.dumps(cols["result"])
        if "ok" in cols:
            cols["ok"] = int(cols["ok"])
        sets = ", ".join(f"{k}=?" for k in cols)
        with self._lock:
            # an ack stored by the daemon first must not be overwritten by a later timeout
            self.conn.execute(
                f"UPDATE commands SET {sets} WHERE id=? AND state IN ('pending','sent')",
                list(cols.values()) + [cid],
            )

    @_reads
    def node_row(self, node: str) -> dict | None:
        cur = self.conn.execute("SELECT * FROM nodes WHERE id=?", (node,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    @_reads
    def commands(self, node: str | None = None, limit: int = 50) -> list[dict]:
        sql = (
            "SELECT * FROM commands"
            + (" WHERE node=?" if node else "")
            + " ORDER BY created DESC LIMIT ?"
        )
        cur = self.conn.execute(sql, ((node,) if node else ()) + (limit,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def raise_alert(self, severity: str, kind: str, message: str, node: str | None = None) -> int:
        with self._lock:
            cur = self.conn.execute(
                "INSERT INTO alerts (ts, node, severity, kind, message) VALUES (?,?,?,?,?)",
                (_now_ms(), node, severity, kind, message),
            )
            return cur.lastrowid

    def clear_alert(self, alert_id: int) -> None:
        with self._lock:
            self.conn.execute(
                "UPDATE alerts SET active=0, cleared=? WHERE id=?", (_now_ms(), alert_id)
            )

    # -- queries ----------------------------------------------------------------------------
    @_reads
    def query(
        self, node: str, metric: str, since_ms: int, until_ms: int | None = None
    ) -> list[tuple[int, float]]:
        """(ts, value) of one metric, oldest first: 1-minute averages where raw data was
        downsampled."""
        until_ms = _now_ms() + 86400_000 if until_ms is None else until_ms
        path = f'$."{metric}"'
        rolled = self.conn.execute(
            "SELECT bucket, vsum / n FROM rollup_1m WHERE node=? AND metric=? AND bucket>=? AND "
            "bucket<? ORDER BY bucket",
            (node, metric, since_ms, until_ms),
        ).fetchall()
        packed = self.conn.execute(
            "SELECT data FROM blocks WHERE node=? AND ts_lo<? AND ts_hi>=? ORDER BY ts_lo",
            (node, until_ms, since_ms),
        ).fetchall()
        if packed:
            raw = self._with_blocks(packed, path, node, metric, since_ms, until_ms)
        else:
            raw = self.conn.execute(
                "SELECT ts, json_extract(msg, ?) AS v FROM readings WHERE node=? AND ts>=? AND "
                "ts<? AND v IS NOT NULL ORDER BY ts, seq",
                (path, node, since_ms, until_ms),
            ).fetchall()
        return (
            rolled + raw
            if not rolled or not raw or rolled[-1][0] <= raw[0][0]
            else sorted(rolled + raw)
        )

    def _with_blocks(
        self, packed, path, node, metric, since_ms, until_ms
    ) -> list[tuple[int, float]]:
        """The (ts, value) of the blocks and of the rows, in (ts, seq) order as the rows alone
        come."""
        out = []
        for (data,) in packed:
            ts, seq, vals = blocks.Block(data).metric(metric)
            out += [(t, s, v) for t, s, v in zip(ts, seq, vals) if since_ms <= t < until_ms]
        out += self.conn.execute(
            "SELECT ts, seq, json_extract(msg, ?) AS v FROM readings WHERE node=? AND ts>=? AND "
            "ts<? AND v IS NOT NULL ORDER BY ts, seq",
            (path, node, since_ms, until_ms),
        ).fetchall()
        out.sort(
            key=itemgetter(0, 1)
        )  # in order already but for late replays (blocks that overlap): O(n)
        return [(t, v) for t, _s, v in out]

    @_reads
    def last_rowid(self) -> int:
        """The largest rowid of the readings table (0: empty): where the next reading goes."""
        with self._lock:
            return self.conn.execute(TOP_ROWID).fetchone()[0]

    @_reads
    def count_readings(self, node: str | None = None) -> int:
        where, args = (" WHERE node=?", (node,)) if node else ("", ())
        return self.conn.execute(
            f"SELECT (SELECT count(*) FROM readings{where}) + "
            f"(SELECT coalesce(sum(n), 0) FROM blocks{where})",
            args * 2,
        ).fetchone()[0]

    @_reads
    def latest(self, node: str) -> tuple[int, dict] | None:
        row = self.conn.execute(
            "SELECT ts, msg FROM readings WHERE node=? ORDER BY ts DESC LIMIT 1", (node,)
        ).fetchone()
        packed = self.conn.execute(
            "SELECT data FROM blocks WHERE node=? AND ts_hi>? ORDER BY ts_hi DESC LIMIT 1",
            (node, row[0] if row else -1),
        ).fetchone()
        if packed:  # a node silent since its readings were compacted (or a clock that went back)
            last = max(blocks.Block(packed[0]).rows(), key=lambda r: r[2])
            return last[2], last[4]
        return (row[0], json.loads(row[1])) if row else None

    # -- retention --------------------------------------------------------------------------
    def downsample(self, older_than_ms: int) -> int:
        """Fold raw readings older than the cut-off into 1-minute rollups, then delete them.

        Node by node, so each statement walks the node's keys instead of the whole table."""
        with self._lock:
            conn = self.conn
            nodes = [
                r[0] for r in conn.execute("SELECT id FROM nodes")
            ]  # every node that sent has a row
            deleted = 0
            conn.execute("BEGIN")
            try:
                for node in nodes:
                    conn.execute(
                        "INSERT INTO rollup_1m SELECT r.node, j.key, (r.ts / 60000) * 60000 AS b, "
                        "count(*), min(j.value), max(j.value), sum(j.value) FROM readings r, "
                        "json_each(r.msg) j WHERE r.node = ? AND r.ts < ? GROUP BY j.key, b ORDER "
                        "BY 1, 2, 3 ON CONFLICT(node, metric, bucket) DO UPDATE SET "
                        "n=n+excluded.n, vmin=min(vmin, excluded.vmin), vmax=max(vmax, "
                        "excluded.vmax), vsum=vsum+excluded.vsum",
                        (node, older_than_ms),
                    )
                    deleted += conn.execute(
                        "DELETE FROM readings WHERE node = ? AND ts < ?", (node, older_than_ms)
                    ).rowcount
                    deleted += self._downsample_blocks(node, older_than_ms)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"downsampling {self.path} failed: {exc}") from None
            self._last_seq.clear()
            return deleted

    def _downsample_blocks(self, node: str, older_than_ms: int) -> int:
        """downsample() for the node's blocks that start before the cut-off: their older readings
        go into the rollups, a block's newer ones into a block of their own."""
        conn = self.conn
        acc: dict = {}
        folded = 0
        for bid, data in conn.execute(
            "SELECT id, data FROM blocks WHERE node=? AND ts_lo<?", (node, older_than_ms)
        ).fetchall():
            rows = blocks.Block(data).rows()
            self._drop_block(bid, node, rows)
            keep = [r for r in rows if r[2] >= older_than_ms]
            if keep:
                self._put_block(node, keep)
            for r in rows:
                if r[2] < older_than_ms:
                    b = r[2] // 60000 * 60000
                    for k, v in r[4].items():
                        a = acc.get((k, b))
                        if a is None:
                            acc[(k, b)] = [1, v, v, v]
                        else:
                            a[0] += 1
                            a[1] = min(a[1], v)
                            a[2] = max(a[2], v)
                            a[3] += v
            folded += len(rows) - len(keep)
        conn.executemany(
            "INSERT INTO rollup_1m VALUES (?,?,?,?,?,?,?) ON CONFLICT(node, metric, bucket) "
            "DO UPDATE SET n=n+excluded.n, vmin=min(vmin, excluded.vmin), vmax=max(vmax, "
            "excluded.vmax), vsum=vsum+excluded.vsum",
            [(node, k, b, *a) for (k, b), a in sorted(acc.items())],
        )
        return folded

    def _put_block(self, node: str, rows: list, data: bytes | None = None) -> None:
        """Rows [(boot, seq, ts, hist, metrics)] sorted by (ts, seq) as one block, in the caller's
        transaction."""
        bid = self.conn.execute(
            "INSERT INTO blocks (node, ts_lo, ts_hi, n, data) VALUES (?,?,?,?,?)",
            (node, rows[0][2], rows[-1][2], len(rows), data or blocks.encode(rows)),
        ).lastrowid
        self.conn.executemany(
            "INSERT INTO runs (node, boot, seq_hi, seq_lo, block) VALUES (?,?,?,?,?)",
            [(node, boot, hi, lo, bid) for boot, lo, hi in blocks.runs(rows)],
        )

    def _drop_block(self, bid: int, node: str, rows: list) -> None:
        self.conn.execute("DELETE FROM blocks WHERE id=?", (bid,))
        self.conn.executemany(
            "DELETE FROM runs WHERE node=? AND boot=? AND seq_hi=?",
            [(node, boot, hi) for boot, _lo, hi in blocks.runs(rows)],
        )

    def compact(
        self,
        now_ms: int | None = None,
        hot_ms: int = HOT_MS,
        settle_ms: int = SETTLE_MS,
        min_rows: int = MIN_ROWS,
        max_rows: int = MAX_ROWS,
        txn_rows: int = TXN_ROWS,
        pass_rows: int = PASS_ROWS,
        keep_from: int | None = None,
    ) -> int:
        """Move readings older than ``hot_ms`` from rows into blocks; returns how many.

        ``keep_from``: rows from this rowid on stay rows (the analytics process has yet to read
        them back by rowid: AnalyticsProcess.replay_floor).

        The daemon's maintenance thread calls it every minute. Rows are read on a connection of
        their own and encoded without the lock. Blocks are then written, and their rows deleted,
        up to ``txn_rows`` rows of many nodes per transaction: rows arrive interleaved (a table page
        holds the readings of dozens of nodes), and deleting one node's rows per transaction wrote
        each page to the WAL once per node (measured: 17 ms a commit, 30 us a reading; the SD card
        of a Pi pays for every page). At most ``pass_rows`` a pass: the rest waits for the next one
        (a large version-1 database is compacted over several minutes). A reading is in a row or in
        a block, never both and never neither, at every commit."""
        now = _now_ms() if now_ms is None else now_ms
        cutoff = now - hot_ms
        below = (1 << 63) - 1 if keep_from is None else keep_from
        reader = getattr(self, "_reader", None)
        if reader is None:
            reader = self._reader = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
        moved, pending, rowids = 0, [], []
        try:
            for (node,) in reader.execute("SELECT id FROM nodes").fetchall():
                count, oldest = reader.execute(
                    "SELECT count(*), min(ts) FROM readings WHERE node=? AND ts<? AND rowid<?",
                    (node, cutoff, below),
                ).fetchone()
                if not count or (count < min_rows and oldest >= now - settle_ms):
                    continue
                count = min(
                    count, txn_rows
                )  # the rest next time (a large version-1 database: a few passes)
                size = -(-count // -(-count // max_rows))  # even blocks: 2,700 rows -> 3 x 900
                got = reader.execute(
                    "SELECT rowid, boot, seq, ts, hist, msg FROM readings WHERE node=? AND ts<? "
                    "AND rowid<? ORDER BY ts, seq LIMIT ?",
                    (node, cutoff, below, count),
                ).fetchall()
                for i in range(0, len(got), size):
                    rows = [
                        (boot, seq, ts, hist, json.loads(msg))
                        for _r, boot, seq, ts, hist, msg in got[i : i + size]
                    ]
                    pending.append(
                        (
                            node,
                            rows[0][2],
                            rows[-1][2],
                            len(rows),
                            blocks.encode(rows),
                            blocks.runs(rows),
                        )
                    )
                rowids += [r[0] for r in got]
                if len(rowids) >= txn_rows:
                    moved += self._move(pending, rowids)
                    pending, rowids = [], []
                if moved + len(rowids) >= pass_rows:
                    break
            if pending:
                moved += self._move(pending, rowids)
        except sqlite3.Error as exc:
            raise error(
                self.path, exc, "cannot compact readings in", "check the site's var/ folder"
            ) from None
        return moved

    def _move(self, pending: list, rowids: list) -> int:
        """Blocks in, their rows out, in one transaction; 0 (nothing done) if the rows changed since
        they were read (only retention deletes rows, and it runs on the same thread: never, in
        practice)."""
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN")
            try:
                for node, ts_lo, ts_hi, n, data, runs in pending:
                    bid = conn.execute(
                        "INSERT INTO blocks (node, ts_lo, ts_hi, n, data) VALUES (?,?,?,?,?)",
                        (node, ts_lo, ts_hi, n, data),
                    ).lastrowid
                    conn.executemany(
                        "INSERT INTO runs (node, boot, seq_hi, seq_lo, block) VALUES (?,?,?,?,?)",
                        [(node, boot, hi, lo, bid) for boot, lo, hi in runs],
                    )
                gone = conn.execute(
                    "DELETE FROM readings WHERE rowid IN (SELECT value FROM json_each(?))",
                    (json.dumps(rowids),),
                ).rowcount
                if gone != len(rowids):
                    conn.execute("ROLLBACK")
                    return 0
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return gone

    def drop_rollups(self, older_than_ms: int) -> int:
        with self._lock:
            return self.conn.execute(
                "DELETE FROM rollup_1m WHERE bucket < ?", (older_than_ms,)
            ).rowcount

    # -- spool (InfluxDB) -------------------------------------------------------------------
    def spool_peek(self, limit: int) -> list[tuple[int, str]]:
        with self._lock:
            return self.conn.execute(
                "SELECT id, line FROM spool ORDER BY id LIMIT ?", (limit,)
            ).fetchall()

    def spool_delete_upto(self, last_id: int) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM spool WHERE id <= ?", (last_id,))

    def spool_depth(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT count(*) FROM spool").fetchone()[0]

    # -- read-only views for the CLI (`query`, `nodes NODE`, `logs`) ------------------------------
    @_reads
    def metric_names(self, node: str) -> list[str]:
        """Every metric name this store holds for the node: its rollups' and its latest
        reading's."""
        names = {
            r[0]
            for r in self.conn.execute(
                "SELECT DISTINCT metric FROM rollup_1m WHERE node=?", (node,)
            )
        }
        last = self.latest(node)
        return sorted(names | set(last[1] if last else ()))

    @_reads
    def rollups(self, node: str, metric: str, since_ms: int, until_ms: int) -> list[tuple]:
        """(bucket, n, vmin, vmax, vsum) of the 1-minute rollups of one metric, oldest first."""
        return self.conn.execute(
            "SELECT bucket, n, vmin, vmax, vsum FROM rollup_1m WHERE node=? AND metric=? AND "
            "bucket>=? AND bucket<? ORDER BY bucket",
            (node, metric, since_ms, until_ms),
        ).fetchall()

    @_reads
    def node_logs(self, node: str, after: int = 0, limit: int | None = None) -> list[dict]:
        """The node's log lines in arrival order, each with its ``row`` (pass the last one as
        ``after`` to get only newer lines); with ``limit``, the newest ``limit`` of them."""
        sql = "SELECT rowid AS row, * FROM logs WHERE node=? AND rowid>? ORDER BY rowid DESC"
        cur = self.conn.execute(
            sql + (" LIMIT ?" if limit else ""), (node, after) + ((limit,) if limit else ())
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in reversed(cur.fetchall())]

    # -- analytics (gridtwin.analytics): alerts with their reading, saved state, reading quality,
    # KPIs ----
    def record_alert(
        self,
        key: str,
        severity: str,
        kind: str,
        message: str,
        node: str | None = None,
        metric: str | None = None,
        value: float | None = None,
        detail: dict | None = None,
        ts: int | None = None,
    ) -> int:
        """An alert raised (``key``: its topic under _host/alerts/, so a restart finds it active
        again)."""
        with self._lock:
            return self.conn.execute(
                "INSERT INTO alerts (ts, node, severity, kind, message, key, metric, value, "
                "detail) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    _now_ms() if ts is None else ts,
                    node,
                    severity,
                    kind,
                    message,
                    key,
                    metric,
                    value,
                    json.dumps(detail) if detail else None,
                ),
            ).lastrowid

    @_reads
    def active_alert_keys(self) -> dict[str, int]:
        """{key: alert id} of the alerts still active (the newest per key)."""
        return {
            k: i
            for k, i in self.conn.execute(
                "SELECT key, max(id) FROM alerts WHERE active=1 AND key IS NOT NULL GROUP BY key"
            )
        }

    @_reads
    def alerts(
        self,
        active: bool = False,
        since_ms: int | None = None,
        after_id: int = 0,
        changed_after_ms: int | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Alerts oldest first: all, only the active ones, raised since ``since_ms``, or
        (``--follow``) raised after ``after_id`` or cleared after ``changed_after_ms``."""
        where, args = [], []
        if active:
            where.append("active=1")
        if since_ms is not None:
            where.append("(ts>=? OR active=1)")
            args.append(since_ms)
        if changed_after_ms is not None:
            where.append("(id>? OR cleared>?)")
            args += [after_id, changed_after_ms]
        elif after_id:
            where.append("id>?")
            args.append(after_id)
        sql = (
            "SELECT * FROM alerts"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id DESC"
        )
        cur = self.conn.execute(
            sql + (" LIMIT ?" if limit else ""), args + ([limit] if limit else [])
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in reversed(cur.fetchall())]

    def save_state(self, name: str, data: dict) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT INTO analytics_state (name, data, saved) VALUES (?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET data=excluded.data, saved=excluded.saved",
                (name, json.dumps(data, separators=(",", ":")), _now_ms()),
            )

    @_reads
    def load_state(self, name: str) -> dict | None:
        row = self.conn.execute("SELECT data FROM analytics_state WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def write_quality(self, rows) -> None:
        """(node, metric, ts, value, quality) of the readings that are not GOOD (GOOD is the
        default)."""
        with self._lock:
            self.conn.executemany("INSERT OR REPLACE INTO reading_quality VALUES (?,?,?,?,?)", rows)

    @_reads
    def quality(self, node: str, metric: str | None = None, since_ms: int = 0) -> list[tuple]:
        """(metric, ts, value, quality) of a node's readings judged UNCERTAIN or BAD, oldest
        first."""
        sql = "SELECT metric, ts, value, quality FROM reading_quality WHERE node=? AND ts>=?"
        args = [node, since_ms]
        if metric:
            sql += " AND metric=?"
            args.append(metric)
        return self.conn.execute(sql + " ORDER BY ts", args).fetchall()

    def write_kpis(self, rows, spool_lines=None) -> None:
        """(bucket ms, node or "" for the site, kpi, value) rows, and their InfluxDB lines when
        spooled."""
        with self._lock:
            self.conn.execute("BEGIN")
            try:
                self.conn.executemany("INSERT OR REPLACE INTO kpi VALUES (?,?,?,?)", rows)
                if spool_lines:
                    self.conn.executemany(
                        "INSERT INTO spool (line) VALUES (?)", [(s,) for s in spool_lines]
                    )
                self.conn.execute("COMMIT")
            except Exception:
                self.conn.execute("ROLLBACK")
                raise

    @_reads
    def kpis(self, since_ms: int = 0, node: str | None = None) -> list[tuple]:
        """(bucket, node, kpi, value) oldest first."""
        sql = "SELECT bucket, node, kpi, value FROM kpi WHERE bucket>=?" + (
            " AND node=?" if node is not None else ""
        )
        return self.conn.execute(
            sql + " ORDER BY bucket, node, kpi", (since_ms,) + ((node,) if node is not None else ())
        ).fetchall()

    # -- OPC UA points (issue #16, gridtwin/opcua/collector.py) ----------------------------------
    # One row per (ISA-95 path, tag, source time): a point a collector receives again after a
    # reconnect (the subscription's first value) is not stored twice.
    def _opcua_ready(self) -> None:
        if not self.__dict__.get("_opcua_schema"):
            self.conn.executescript(
                "CREATE TABLE IF NOT EXISTS opcua_points (enterprise TEXT NOT NULL, site TEXT NOT "
                "NULL, area TEXT NOT NULL, line TEXT NOT NULL, machine TEXT NOT NULL, tag TEXT NOT "
                "NULL, ts_ns INTEGER NOT NULL, value REAL, text TEXT, unit TEXT, quality TEXT NOT "
                "NULL, source TEXT, value_bool INTEGER, "
                "PRIMARY KEY (enterprise, site, area, line, machine, tag, ts_ns)) WITHOUT ROWID;"
                # `query MACHINE TAG` and `tail` name a point by machine and tag (docs/opcua.md)
                "CREATE INDEX IF NOT EXISTS opcua_by_machine ON opcua_points (machine, tag, ts_ns);"
            )
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(opcua_points)")}
            if "value_bool" not in cols:  # a database from before Boolean variables had a column
                self.conn.execute("ALTER TABLE opcua_points ADD COLUMN value_bool INTEGER")
            self._opcua_schema = True

    def write_opcua(self, rows, spool_lines=None) -> int:
        """(enterprise, site, area, line, machine, tag, ts_ns, value, text, unit, quality, source,
        value_bool) rows and their InfluxDB lines (spooled) in one transaction; returns the rows
        that were new."""
        with self._lock:
            self._opcua_ready()
            self.conn.execute("BEGIN")
            try:
                before = self.conn.total_changes
                self.conn.executemany(
                    "INSERT OR IGNORE INTO opcua_points (enterprise, site, area, line, machine, "
                    "tag, ts_ns, value, text, unit, quality, source, value_bool) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                new = self.conn.total_changes - before
                if spool_lines:
                    self.conn.executemany(
                        "INSERT INTO spool (line) VALUES (?)", [(s,) for s in spool_lines]
                    )
                self.conn.execute("COMMIT")
            except Exception:
                self.conn.execute("ROLLBACK")
                raise
            return new

    @_reads
    def opcua_points(
        self, machine: str | None = None, tag: str | None = None, since_ns: int = 0
    ) -> list[tuple]:
        """(enterprise, site, area, line, machine, tag, ts_ns, value, text, unit, quality) oldest
        first; a Boolean variable's value is True or False."""
        with self._lock:
            self._opcua_ready()
            sql = (
                "SELECT enterprise, site, area, line, machine, tag, ts_ns, value, text, unit, "
                "quality, value_bool FROM opcua_points WHERE ts_ns>=?"
            )
            args: list = [since_ns]
            for col, v in (("machine", machine), ("tag", tag)):
                if v is not None:
                    sql += f" AND {col}=?"
                    args.append(v)
            rows = self.conn.execute(sql + " ORDER BY ts_ns, machine, tag", args).fetchall()
        return [r[:7] + (bool(r[11]),) + r[8:11] if r[11] is not None else r[:11] for r in rows]

    @_reads
    def opcua_tags(self, machine: str) -> list[str]:
        """The tags stored for an OPC UA machine (how `query` and `tail` name a point), one index
        seek per tag however many points each has."""
        out: list[str] = []
        with self._lock:
            self._opcua_ready()
            while True:
                row = self.conn.execute(
                    "SELECT tag FROM opcua_points WHERE machine=? AND tag>? ORDER BY tag LIMIT 1",
                    (machine, out[-1] if out else ""),
                ).fetchone()
                if row is None:
                    return out
                out.append(row[0])


ANALYTICS_SCHEMA = """
CREATE TABLE IF NOT EXISTS analytics_state (
    name TEXT PRIMARY KEY, data TEXT NOT NULL, saved INTEGER
);
-- the quality of readings analytics judged UNCERTAIN or BAD (every other reading is GOOD)
CREATE TABLE IF NOT EXISTS reading_quality (
    node TEXT NOT NULL, metric TEXT NOT NULL, ts INTEGER NOT NULL, value REAL,
    quality TEXT NOT NULL,
    PRIMARY KEY (node, metric, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kpi (
    bucket INTEGER NOT NULL, node TEXT NOT NULL, kpi TEXT NOT NULL, value REAL,
    PRIMARY KEY (bucket, node, kpi)
) WITHOUT ROWID;
"""
ALERT_COLUMNS = (("key", "TEXT"), ("metric", "TEXT"), ("value", "REAL"), ("detail", "TEXT"))


def _analytics_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(ANALYTICS_SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(alerts)")}
    for col, kind in ALERT_COLUMNS:
        if col not in have:
            conn.execute(f"ALTER TABLE alerts ADD COLUMN {col} {kind}")
    if "key" not in have:
        # alerts raised before they had a key can never be cleared by it: close them now, once
        conn.execute("UPDATE alerts SET active=0, cleared=? WHERE active=1", (_now_ms(),))
