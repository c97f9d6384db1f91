"""The daemon's embedded store: SQLite in the site's ``var/`` folder.

One row per telemetry message (the validated payload, metrics under ``$.m``) keeps ingest at one B-tree insert per
message, which is what lets one Python process store tens of thousands of messages a second.
The unique index on (node, boot, seq) *is* the de-duplication: QoS 1 redeliveries and outbox replays
hit ``INSERT OR IGNORE`` and are counted, never stored twice.

Durability trade-off (documented in docs/scaling.md): WAL with ``synchronous=NORMAL``. A
committed batch survives a crash or ``kill -9`` of the daemon (the WAL is in the OS page cache);
only a power cut can lose the last commits before the next checkpoint. ``synchronous="FULL"``
(site.toml ``storage.sync = "full"``) fsyncs every batch for the power-cut case, at a cost in rate.

Only the daemon's writer thread writes readings; the CLI opens its own connection to read
(``nodes``, ``query``) or to record command history. WAL lets both run at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gridtwin.errors import GridTwinError

SCHEMA = """
-- A rowid table: rows are appended in arrival order and the two indexes hold only short keys.
-- (A WITHOUT ROWID table keyed by (node, boot, seq) put whole payloads in the key B-tree: a batch
-- from 1,000 nodes then dirtied a leaf page per node and ingest ran at less than half the rate.)
CREATE TABLE IF NOT EXISTS readings (
    node TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL,
    ts INTEGER NOT NULL, hist INTEGER NOT NULL DEFAULT 0,
    msg TEXT NOT NULL  -- the validated payload as the node sent it; metrics under $.m
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_key ON readings (node, boot, seq);  -- the de-duplication
CREATE INDEX IF NOT EXISTS readings_node_ts ON readings (node, ts);
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
CREATE TABLE IF NOT EXISTS gaps (
    node TEXT NOT NULL, boot TEXT NOT NULL, after_seq INTEGER NOT NULL, missing INTEGER NOT NULL,
    detected INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    node TEXT NOT NULL, ts INTEGER, lvl TEXT, msg TEXT, received INTEGER NOT NULL
);
-- line protocol waiting for InfluxDB, in arrival order (AUTOINCREMENT never reuses an id)
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL);
"""

INSERT_BATCH = (
    "INSERT OR IGNORE INTO readings (node, boot, seq, ts, hist, msg) "
    "SELECT json_extract(value, '$.node'), CAST(json_extract(value, '$.boot') AS TEXT), "
    "json_extract(value, '$.seq'), json_extract(value, '$.ts'), coalesce(json_extract(value, '$.hist'), 0), value "
    "FROM json_each(?)"  # json_extract, not ->>: SQLite before 3.38 (Debian bullseye) lacks ->>
)

STATUS_COLUMNS = ("state", "fw", "board", "reset", "boot", "heap", "rssi", "uptime", "cfg",
                  "sensors", "outbox", "drops", "interval")


class StoreError(GridTwinError):
    """The database cannot be opened or written (disk full, permissions, corrupt file)."""


@dataclass(slots=True)
class BatchResult:
    stored: int
    duplicates: int
    gaps: list  # (node, boot, after_seq, missing)


def _now_ms() -> int:
    return int(time.time() * 1000)


def connect(path: Path | str, sync: str = "normal") -> sqlite3.Connection:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: the hot index pages of a fleet stay in memory
        conn.executescript(SCHEMA)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open the database {path}: {exc}",
                         hint="check that the site's var/ folder is writable and the disk is not full") from None
    return conn


class SqliteStore:
    """Readings, registry, command history, alerts and the InfluxDB spool in one SQLite file."""

    def __init__(self, path: Path | str, sync: str = "normal"):
        self.path = Path(path)
        self.conn = connect(self.path, sync)
        self._lock = threading.Lock()   # one writer at a time on this connection
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
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
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
        if getattr(self, "_ckpt", None):
            self._ckpt_stop.set()
            self._ckpt.join(timeout=10)
        with self._lock:
            self.conn.close()

    # -- ingest ---------------------------------------------------------------------------
    def _gaps(self, batch) -> list:
        """Forward jumps in seq within a boot; the high-water mark survives restarts via the DB."""
        gaps = []
        last = self._last_seq
        for t in batch:
            key = (t.node, str(t.boot))
            prev = last.get(key)
            if prev is None:
                prev = self.conn.execute("SELECT max(seq) FROM readings WHERE node=? AND boot=?", key).fetchone()[0]
                if prev is None:
                    # first sight of this boot: the host may have started mid-boot, not a gap
                    last[key] = t.seq
                    continue
            if t.seq > prev + 1:
                gaps.append((t.node, str(t.boot), prev, t.seq - prev - 1))
            last[key] = max(prev, t.seq)
        return gaps

    def write_batch(self, readings, statuses=(), acks=(), logs=(), spool_lines=None) -> BatchResult:
        """Store one batch in one transaction; returns what was new. Raises StoreError."""
        now = _now_ms()
        # The whole batch goes to SQLite as one JSON array and is inserted by one statement: one
        # sqlite3_step for thousands of rows. executemany steps once per row and releases the GIL
        # each time, and every re-acquire waits behind the MQTT thread (up to 5 ms): that convoy
        # cost more than all the rest of ingest. The payloads passed validation, so SQLite's
        # parser sees only well-formed objects with the keys below.
        batch_json = "[" + ",".join(t.raw for t in readings) + "]" if readings else None
        with self._lock:
            try:
                gaps = self._gaps(readings) if self.track_gaps else []
                conn = self.conn
                conn.execute("BEGIN")
                before = conn.total_changes
                if batch_json:
                    conn.execute(INSERT_BATCH, (batch_json,))
                stored = conn.total_changes - before
                if gaps:
                    conn.executemany("INSERT INTO gaps VALUES (?,?,?,?,?)", [g + (now,) for g in gaps])
                if spool_lines:
                    conn.executemany("INSERT INTO spool (line) VALUES (?)", [(s,) for s in spool_lines])
                seen = {}
                for t in readings:
                    seen[t.node] = now
                for node, st in statuses:
                    self._status(node, st, now)
                    seen.pop(node, None)
                if seen:  # one statement for all nodes of the batch (see INSERT_BATCH)
                    conn.execute("INSERT INTO nodes (id, last_seen) SELECT value, ? FROM json_each(?) WHERE true "
                                 "ON CONFLICT(id) DO UPDATE SET last_seen=excluded.last_seen",
                                 (now, json.dumps(list(seen))))
                for node, a in acks:
                    self._ack(node, a, now)
                if logs:
                    conn.executemany("INSERT INTO logs VALUES (?,?,?,?,?)",
                                     [(n, lg.get("ts"), lg["lvl"], lg["msg"], now) for n, lg in logs])
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._last_seq.clear()  # re-read high-water marks: this batch did not happen
                raise StoreError(f"cannot write to {self.path}: {exc}",
                                 hint="check free disk space and permissions of the site's var/ folder") from None
        return BatchResult(stored, len(readings) - stored, gaps)

    def _status(self, node: str, st: dict, now: int) -> None:
        values = [json.dumps(st[c]) if c == "sensors" and c in st else st.get(c) for c in STATUS_COLUMNS]
        values[STATUS_COLUMNS.index("boot")] = None if st.get("boot") is None else str(st["boot"])
        present = [c for c in STATUS_COLUMNS if c in st]
        # a will ("offline") carries only the state: keep the last known firmware, heap, ...
        sets = ", ".join(f"{c}=excluded.{c}" for c in present)
        cols = ", ".join(("id",) + STATUS_COLUMNS + ("last_seen", "status_at"))
        marks = ", ".join("?" * (len(STATUS_COLUMNS) + 3))
        last_seen = now if st.get("state") == "online" else None
        self.conn.execute(
            f"INSERT INTO nodes ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {sets}, "
            "status_at=excluded.status_at, last_seen=coalesce(excluded.last_seen, nodes.last_seen)",
            [node] + values + [last_seen, now])

    def _ack(self, node: str, a: dict, now: int) -> None:
        result = json.dumps(a["result"]) if "result" in a else None
        self.conn.execute("INSERT OR IGNORE INTO acks VALUES (?,?,?,?,?,?,?)",
                          (a["id"], node, int(a["ok"]), result, a.get("err"), a.get("ts"), now))
        self.conn.execute("UPDATE commands SET state=?, finished=?, ok=?, result=?, err=? "
                          "WHERE id=? AND node=? AND state IN ('pending','sent')",
                          ("ok" if a["ok"] else "error", now, int(a["ok"]), result, a.get("err"), a["id"], node))

    # -- registry, commands, alerts ---------------------------------------------------------
    def ensure_nodes(self, ids) -> None:
        with self._lock:
            self.conn.executemany("INSERT OR IGNORE INTO nodes (id) VALUES (?)", [(i,) for i in ids])

    def nodes(self) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM nodes ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def command_created(self, cid: str, node: str, cmd: str, args: dict) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO commands (id, node, cmd, args, created, state) VALUES (?,?,?,?,?,?)",
                              (cid, node, cmd, json.dumps(args), _now_ms(), "pending"))

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
            self.conn.execute(f"UPDATE commands SET {sets} WHERE id=? AND state IN ('pending','sent')",
                              list(cols.values()) + [cid])

    def commands(self, node: str | None = None, limit: int = 50) -> list[dict]:
        sql = "SELECT * FROM commands" + (" WHERE node=?" if node else "") + " ORDER BY created DESC LIMIT ?"
        cur = self.conn.execute(sql, ((node,) if node else ()) + (limit,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def raise_alert(self, severity: str, kind: str, message: str, node: str | None = None) -> int:
        with self._lock:
            cur = self.conn.execute("INSERT INTO alerts (ts, node, severity, kind, message) VALUES (?,?,?,?,?)",
                                    (_now_ms(), node, severity, kind, message))
            return cur.lastrowid

    def clear_alert(self, alert_id: int) -> None:
        with self._lock:
            self.conn.execute("UPDATE alerts SET active=0, cleared=? WHERE id=?", (_now_ms(), alert_id))

    # -- queries ----------------------------------------------------------------------------
    def query(self, node: str, metric: str, since_ms: int, until_ms: int | None = None) -> list[tuple[int, float]]:
        """(ts, value) of one metric, oldest first: 1-minute averages where raw data was downsampled."""
        until_ms = _now_ms() + 86400_000 if until_ms is None else until_ms
        path = f'$.m."{metric}"'
        rolled = self.conn.execute(
            "SELECT bucket, vsum / n FROM rollup_1m WHERE node=? AND metric=? AND bucket>=? AND bucket<? ORDER BY bucket",
            (node, metric, since_ms, until_ms)).fetchall()
        raw = self.conn.execute(
            "SELECT ts, json_extract(msg, ?) AS v FROM readings WHERE node=? AND ts>=? AND ts<? AND v IS NOT NULL ORDER BY ts, seq",
            (path, node, since_ms, until_ms)).fetchall()
        return rolled + raw if not rolled or not raw or rolled[-1][0] <= raw[0][0] else sorted(rolled + raw)

    def count_readings(self, node: str | None = None) -> int:
        if node:
            return self.conn.execute("SELECT count(*) FROM readings WHERE node=?", (node,)).fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM readings").fetchone()[0]

    def latest(self, node: str) -> tuple[int, dict] | None:
        row = self.conn.execute("SELECT ts, msg FROM readings WHERE node=? ORDER BY ts DESC LIMIT 1", (node,)).fetchone()
        return (row[0], json.loads(row[1])["m"]) if row else None

    # -- retention --------------------------------------------------------------------------
    def downsample(self, older_than_ms: int) -> int:
        """Fold raw readings older than the cut-off into 1-minute rollups, then delete them.

        Node by node, so each statement walks the (node, ts) index instead of the whole table."""
        with self._lock:
            conn = self.conn
            nodes = [r[0] for r in conn.execute("SELECT id FROM nodes")]  # every node that sent has a row
            deleted = 0
            conn.execute("BEGIN")
            try:
                for node in nodes:
                    conn.execute(
                        "INSERT INTO rollup_1m SELECT r.node, j.key, (r.ts / 60000) * 60000 AS b, count(*), "
                        "min(j.value), max(j.value), sum(j.value) FROM readings r, json_each(r.msg, '$.m') j "
                        "WHERE r.node = ? AND r.ts < ? GROUP BY j.key, b ORDER BY 1, 2, 3 "
                        "ON CONFLICT(node, metric, bucket) DO UPDATE SET n=n+excluded.n, "
                        "vmin=min(vmin, excluded.vmin), vmax=max(vmax, excluded.vmax), vsum=vsum+excluded.vsum",
                        (node, older_than_ms))
                    deleted += conn.execute("DELETE FROM readings WHERE node = ? AND ts < ?",
                                            (node, older_than_ms)).rowcount
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"downsampling {self.path} failed: {exc}") from None
            self._last_seq.clear()
            return deleted

    def drop_rollups(self, older_than_ms: int) -> int:
        with self._lock:
            return self.conn.execute("DELETE FROM rollup_1m WHERE bucket < ?", (older_than_ms,)).rowcount

    # -- spool (InfluxDB) -------------------------------------------------------------------
    def spool_peek(self, limit: int) -> list[tuple[int, str]]:
        with self._lock:
            return self.conn.execute("SELECT id, line FROM spool ORDER BY id LIMIT ?", (limit,)).fetchall()

    def spool_delete_upto(self, last_id: int) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM spool WHERE id <= ?", (last_id,))

    def spool_depth(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT count(*) FROM spool").fetchone()[0]
