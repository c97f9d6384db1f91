"""The SQLite store: de-duplication, gaps, queries, retention, command history, spool order."""

import json
import sqlite3
import time

import pytest

from fixtures.dbfiles import destroy_header, destroy_pages

from gridtwin.daemon import validate
from gridtwin.daemon.store_sqlite import SCHEMA_VERSION, SqliteStore, StoreError

NOW = int(time.time() * 1000)


def tel(node="n1", boot=1, seq=0, ts=None, hist=False, **m):
    payload = json.dumps(
        {
            "v": 1,
            "node": node,
            "boot": boot,
            "seq": seq,
            "ts": ts or NOW - 60_000 + seq,
            "m": m or {"t": float(seq)},
            "hist": hist,
        }
    ).encode()
    return validate.telemetry(node, payload)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "var" / "gridtwin.db")
    yield s
    s.close()


def test_redelivery_and_replays_are_stored_once(store, insert_path):
    first = store.write_batch([tel(seq=i) for i in range(10)])
    assert (first.stored, first.duplicates) == (10, 0)
    again = store.write_batch([tel(seq=i) for i in range(5, 15)] + [tel(seq=14)])
    assert (again.stored, again.duplicates) == (5, 6)
    assert store.count_readings("n1") == 15
    # the same seq in another boot is another message
    assert store.write_batch([tel(boot=2, seq=0)]).stored == 1


def test_gaps_within_a_boot_are_reported_and_survive_a_reopen(tmp_path):
    s = SqliteStore(tmp_path / "db")
    assert s.write_batch([tel(seq=0), tel(seq=1), tel(seq=5)]).gaps == [("n1", "1", 1, 3)]
    # a replay filling the gap is not a new gap; a reboot (new boot) starts afresh
    assert s.write_batch([tel(seq=2, hist=True), tel(boot=9, seq=40)]).gaps == []
    s.close()
    s = SqliteStore(tmp_path / "db")  # the high-water mark comes back from the database
    assert s.write_batch([tel(seq=8)]).gaps == [("n1", "1", 5, 2)]
    assert s.conn.execute("SELECT count(*) FROM gaps").fetchone()[0] == 2
    s.close()


def test_a_gap_that_replay_fills_is_retracted_and_only_what_stays_missing_counts(tmp_path):
    """Issue #11: after an outage the live readings arrive before the replayed backlog; the jump
    is a *pending* gap that the replay fills, never a loss. Only what is still missing once the
    grace period passed is confirmed."""
    s = SqliteStore(tmp_path / "db")
    s.write_batch([tel(seq=0), tel(seq=1), tel(seq=6)])  # 2..5 pending
    s.write_batch([tel(seq=7), tel(boot=2, seq=0), tel(boot=2, seq=3)])  # boot 2: 1..2 pending
    assert s.pending_gaps() == 4 + 2
    s.write_batch([tel(seq=2, hist=True), tel(seq=3, hist=True), tel(seq=3, hist=True)])
    s.write_batch([tel(seq=3, hist=True)])  # a redelivery fills nothing
    s.write_batch([tel(boot=2, seq=1, hist=True), tel(boot=2, seq=2, hist=True)])  # boot 2 complete
    assert s.pending_gaps() == 2
    assert s.settle_gaps(older_than_ms=0) == []  # still in its grace period
    confirmed = s.settle_gaps(older_than_ms=int(time.time() * 1000) + 1)
    assert confirmed == [("n1", "1", 1, 2)]  # 4 and 5 never came
    assert s.pending_gaps() == 0
    assert s.conn.execute("SELECT count(*) FROM gaps").fetchone()[0] == 1  # the filled one is gone
    s.write_batch([tel(seq=4, hist=True)])  # too late to matter: stored, once
    assert s.count_readings("n1") == 7 + 4
    s.close()


def test_query_returns_one_metric_in_time_order(store):
    store.write_batch(
        [tel(seq=i, ts=NOW - 10_000 + i * 1000, t=float(i), p=2.0 * i) for i in (3, 1, 2)]
        + [tel(node="n2", seq=0, t=99.0)]
    )
    rows = store.query("n1", "t", since_ms=NOW - 3_600_000)
    assert rows == [(NOW - 9000, 1.0), (NOW - 8000, 2.0), (NOW - 7000, 3.0)]
    assert store.query("n1", "t", since_ms=NOW - 7500) == [(NOW - 7000, 3.0)]
    assert store.query("n1", "nope", since_ms=0) == []
    assert store.latest("n1") == (NOW - 7000, {"t": 3.0, "p": 6.0})


def test_downsampling_folds_old_raw_readings_into_minute_rollups(store):
    base = (NOW // 60_000 - 100) * 60_000  # 100 minutes ago, on a minute boundary
    store.write_batch(
        [tel(seq=i, ts=base + i * 10_000, t=float(i)) for i in range(12)]
    )  # 2 minutes of data
    store.write_batch([tel(seq=100, ts=NOW, t=50.0)])
    assert store.downsample(NOW - 3_600_000) == 12
    assert store.count_readings() == 1
    rows = store.query("n1", "t", since_ms=0)
    assert rows == [(base, 2.5), (base + 60_000, 8.5), (NOW, 50.0)]  # minute averages, then raw
    mn, mx, n = store.conn.execute(
        "SELECT vmin, vmax, n FROM rollup_1m WHERE bucket=?", (base,)
    ).fetchone()
    assert (mn, mx, n) == (0.0, 5.0, 6)


def test_status_ack_and_command_history(store):
    store.write_batch(
        [],
        statuses=[
            (
                "n1",
                {
                    "state": "online",
                    "fw": "1.2",
                    "heap": 90000,
                    "rssi": -61,
                    "sensors": [{"name": "t", "unit": "C"}],
                },
            )
        ],
    )
    store.write_batch([], statuses=[("n1", {"state": "offline"})])
    (node,) = store.nodes()
    assert (node["state"], node["fw"], node["heap"]) == (
        "offline",
        "1.2",
        90000,
    )  # a will keeps what it knew
    store.command_created("c1", "n1", "set_fault", {"state": True})
    store.write_batch([], acks=[("n1", {"id": "c1", "ok": False, "err": "no such fault"})])
    store.command_update("c1", "timeout")  # too late: the ack already decided it
    (cmd,) = store.commands("n1")
    assert (cmd["state"], cmd["ok"], cmd["err"], json.loads(cmd["args"])) == (
        "error",
        0,
        "no such fault",
        {"state": True},
    )


def test_spool_keeps_arrival_order(store):
    store.write_batch([], spool_lines=["a 1", "b 2"])
    store.write_batch([], spool_lines=["c 3"])
    rows = store.spool_peek(10)
    assert [line for _i, line in rows] == ["a 1", "b 2", "c 3"]
    store.spool_delete_upto(rows[1][0])
    assert [line for _i, line in store.spool_peek(10)] == ["c 3"] and store.spool_depth() == 1


def test_a_failed_batch_raises_store_error_and_keeps_nothing(tmp_path):
    s = SqliteStore(tmp_path / "db")
    s.write_batch([tel(seq=0)])
    locker = sqlite3.connect(tmp_path / "db", timeout=0)
    locker.execute("BEGIN EXCLUSIVE")
    s.conn.execute("PRAGMA busy_timeout=50")
    with pytest.raises(StoreError, match="cannot write") as exc:
        s.write_batch([tel(seq=1)])
    assert "disk" in exc.value.hint
    locker.rollback()
    locker.close()
    assert s.write_batch([tel(seq=1)]).stored == 1  # retried later: stored once
    s.close()


def test_an_unwritable_database_is_a_clear_error(tmp_path):
    (tmp_path / "ro").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the database"):
        SqliteStore(tmp_path / "ro" / "db")


def test_the_database_and_its_side_files_are_private(tmp_path):
    """Readings and command history are the daemon's: var/ 0700, database, WAL and SHM 0600,
    whatever the umask (issue #19: `nobody` could read every reading)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        s = SqliteStore(tmp_path / "var" / "gridtwin.db")
        s.write_batch([tel(seq=0)])
        files = [
            tmp_path / "var" / f for f in ("gridtwin.db", "gridtwin.db-wal", "gridtwin.db-shm")
        ]
        assert all(f.exists() for f in files)
        assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
            f.name: 0o600 for f in files
        }
        s.close()
        # an older install made them 0644: the next open tightens them
        for f in files[:1]:
            os.chmod(f, 0o644)
        os.chmod(tmp_path / "var", 0o755)
        SqliteStore(tmp_path / "var" / "gridtwin.db").close()
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_stored_values_are_the_validated_ones_and_old_databases_are_migrated(tmp_path):
    s = SqliteStore(tmp_path / "db")
    s.write_batch([tel(seq=0, t=1.5, p=2)])
    assert s.conn.execute("SELECT msg FROM readings").fetchone()[0] == '{"t":1.5,"p":2}'
    s.close()
    # a database of the first release kept the whole payload; its queries keep working after an open
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.executescript(
        "CREATE TABLE readings (node TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL, "
        "ts INTEGER NOT NULL, hist INTEGER NOT NULL DEFAULT 0, msg TEXT NOT NULL);"
        "CREATE TABLE nodes (id TEXT PRIMARY KEY, state TEXT, fw TEXT, board TEXT, reset TEXT, "
        "boot TEXT, heap REAL, rssi REAL, uptime REAL, cfg TEXT, sensors TEXT, outbox REAL, "
        "drops REAL, interval REAL, last_seen INTEGER, status_at INTEGER);"
    )
    conn.execute(
        "INSERT INTO readings VALUES ('n1', '1', 0, ?, 0, ?)",
        (NOW, json.dumps({"v": 1, "node": "n1", "boot": 1, "seq": 0, "ts": NOW, "m": {"t": 4.5}})),
    )
    conn.commit()
    conn.close()
    old = SqliteStore(tmp_path / "old.db")
    assert old.query("n1", "t", since_ms=0) == [(NOW, 4.5)]
    assert old.latest("n1") == (NOW, {"t": 4.5})
    assert "rejected" in old.nodes()[0] if old.nodes() else True
    old.close()


def _made_db(tmp_path, name="gridtwin.db"):
    path = tmp_path / name
    s = SqliteStore(path)
    s.write_batch([tel(seq=i) for i in range(300)])
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    return path


def test_a_corrupt_database_is_named_with_its_fix(tmp_path):
    from gridtwin.daemon.store_sqlite import CorruptDatabase

    header = _made_db(tmp_path, "header.db")
    destroy_header(header)
    with pytest.raises(CorruptDatabase) as exc:
        SqliteStore(header, check=True)
    assert "header.db is corrupt" in exc.value.message and "mv " in exc.value.hint
    assert "disk is not full" not in str(exc.value)

    pages = _made_db(tmp_path, "pages.db")
    destroy_pages(pages)
    with pytest.raises(CorruptDatabase):
        SqliteStore(pages, check=True)  # the daemon's start and doctor
    # a reader that skipped the check (the CLI) meets it mid-query: the same error, never a
    # traceback
    store = SqliteStore(pages)
    met = 0
    for read in (
        lambda: store.query("n1", "t", since_ms=0),
        store.count_readings,
        store.nodes,
        lambda: store.latest("n1"),
    ):
        try:
            read()
        except CorruptDatabase:
            met += 1
    assert met >= 1


# -- compaction into blocks (issue #20: <= 60 B a reading)
# --------------------------------------------


def _mixed_readings():
    """Two nodes, two boots, readings that lack a metric, ints and floats, -0.0, hist flags, and two
    readings of one node at the same ts (another boot)."""
    out = []
    for i in range(300):
        m = {"p_w": round(1000 + i * 1.7, 1), "t_c": 21 + i % 13 * 0.125, "n": i * 3, "pf": 0.98}
        if i % 7 == 0:
            del m["pf"]
        if i == 5:
            m["t_c"] = -0.0
        if i % 11 == 0:
            m["n"] = float(i)  # an int metric sent as a float once: it comes back a float
        out.append(tel(seq=i, ts=NOW - 3_000_000 + i * 1000, hist=i % 5 == 0, **m))
        out.append(tel(node="n2", boot=4, seq=i, ts=NOW - 3_000_000 + i * 2000, v=230.0 + i / 3))
    out.append(tel(boot=2, seq=0, ts=NOW - 3_000_000 + 10_000, p_w=1.0))
    return out


def _everything(s, nodes=("n1", "n2"), metrics=("p_w", "t_c", "n", "pf", "v")):
    import math

    return (
        {
            (n, m): [(ts, v, math.copysign(1, v), type(v)) for ts, v in s.query(n, m, since_ms=0)]
            for n in nodes
            for m in metrics
        },
        {n: s.latest(n) for n in nodes},
        {n: s.metric_names(n) for n in nodes},
        s.count_readings(),
        {n: s.count_readings(n) for n in nodes},
    )


def test_compaction_moves_readings_into_blocks_and_queries_return_the_same_rows(store):
    store.write_batch(_mixed_readings())
    before = _everything(store)
    assert before[3] == 601
    moved = store.compact(now_ms=NOW, hot_ms=60_000, min_rows=50, max_rows=128)
    left = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert moved == 601 - left and left == 0
    assert store.conn.execute("SELECT max(n) FROM blocks").fetchone()[0] <= 128
    assert _everything(store) == before
    # a window inside a block, and readings still in rows next to blocks
    store.write_batch([tel(seq=300, ts=NOW - 1000, p_w=7.5)])
    assert store.query("n1", "p_w", since_ms=NOW - 3_000_000 + 298_500, until_ms=NOW) == [
        (NOW - 3_000_000 + 299_000, round(1000 + 299 * 1.7, 1)),
        (NOW - 1000, 7.5),
    ]
    assert store.latest("n1") == (NOW - 1000, {"p_w": 7.5})
    # below min_rows and younger than settle_ms: they wait; once they have settled, they go too
    assert store.compact(now_ms=NOW + 600_000, hot_ms=60_000, min_rows=50) == 0
    assert store.compact(now_ms=NOW + 600_000, hot_ms=60_000, min_rows=50, settle_ms=300_000) == 1


@pytest.fixture(params=["a row a statement", "chunks"])
def insert_path(request, monkeypatch):
    """Both ways write_batch inserts readings: one row a statement, or chunks of _CHUNK rows and
    the powers of two a batch's tail is cut into."""
    from gridtwin.daemon import store_sqlite

    if request.param == "a row a statement":
        monkeypatch.setattr(store_sqlite, "_CHUNK", 1)
    return request.param


def test_both_insert_paths_store_the_same_rows(tmp_path, monkeypatch):
    """A row a statement and chunks (a batch of 2 x _CHUNK + 7 + 3 redeliveries: every statement
    size) store byte-identical rows: the validated metrics as compact JSON, ints as ints, floats
    as written, boot as text; the payload's own text of "m" where validation kept it
    (Telemetry.mtext) is stored as written."""
    from gridtwin.daemon import store_sqlite

    m = {"t": 1.5, "k": 3, "e": 1e-07, "z": -0.0, "big": 123456789012, "f": 0.1}
    n = 2 * store_sqlite._CHUNK + 7
    batch = [tel(node=f"n{i % 3}", boot=i % 2, seq=i, hist=i % 4 == 0, **m) for i in range(n)]
    text = '{"t":1.50,"k":3,"e":1E-7,"z":-0.0,"big":123456789012,"f":0.1}'
    raw = validate.telemetry(
        "n9",
        f'{{"v":1,"node":"n9","boot":1,"seq":1,"ts":{NOW},"m":{text}}}'.encode(),
        now_ms=NOW,
    )
    assert raw.mtext == text and raw.m == m
    dumps = []
    for chunk in (1, store_sqlite._CHUNK):
        monkeypatch.setattr(store_sqlite, "_CHUNK", chunk)
        s = SqliteStore(tmp_path / f"db{chunk}")
        r = s.write_batch(batch + batch[:3] + [raw])
        assert (r.stored, r.duplicates) == (n + 1, 3)
        assert r.rows == (1, n + 1)
        dumps.append(s.conn.execute("SELECT * FROM readings ORDER BY rowid").fetchall())
        s.close()
    assert dumps[0] == dumps[1] and len(dumps[0]) == n + 1
    assert json.loads(dumps[0][0][5]) == m and dumps[0][0][5] == json.dumps(
        m, separators=(",", ":")
    )
    assert dumps[0][-1][5] == text and json.loads(text) == m


def test_a_reading_replayed_after_its_span_was_compacted_is_stored_once(tmp_path, insert_path):
    """A node's outbox replays a week late, or a QoS 1 redelivery comes after compaction: readings a
    block holds are counted as duplicates, those it lacks (the gap) are stored and fill the gap."""
    s = SqliteStore(tmp_path / "db")
    s.write_batch([tel(seq=i) for i in range(10)] + [tel(seq=i) for i in range(13, 20)])
    assert s.pending_gaps() == 3
    assert s.compact(now_ms=NOW + 3_600_000, min_rows=1) == 17
    s.close()
    s = SqliteStore(tmp_path / "db")  # the high-water mark comes from the blocks' runs now
    replay = [tel(seq=i, hist=True) for i in range(20)]
    r = s.write_batch(replay)
    assert (r.stored, r.duplicates, r.gaps) == (3, 17, [])
    assert s.pending_gaps() == 0
    assert s.count_readings("n1") == 20
    assert (
        s.compact(now_ms=NOW + 3_600_000, min_rows=1) == 3
    )  # the replayed three: a block of their own
    assert s.write_batch(replay + [tel(seq=5)]).stored == 0  # and again: nothing is stored twice
    assert (
        s.write_batch([tel(seq=20), tel(boot=2, seq=5)]).stored == 2
    )  # the next seq; another boot's seq 5
    assert [v for _ts, v in s.query("n1", "t", since_ms=0)] == sorted(
        [float(i) for i in range(21)] + [5.0]
    )
    assert s.write_batch([tel(seq=24)]).gaps == [("n1", "1", 20, 3)]
    s.close()


def test_retention_folds_blocks_as_it_folds_rows(tmp_path):
    """downsample() gives the same rollups and leaves the same readings whether they were compacted
    or not, with the cut-off inside a block (its newer readings stay, as a block)."""
    base = (NOW // 60_000 - 100) * 60_000
    batch = [tel(seq=i, ts=base + i * 5_000, t=i * 0.5, p=i % 4) for i in range(60)]  # 5 minutes
    rows, packed = SqliteStore(tmp_path / "rows.db"), SqliteStore(tmp_path / "packed.db")
    for s in (rows, packed):
        s.write_batch(batch)
    assert packed.compact(now_ms=NOW, min_rows=1, max_rows=40) == 60
    cut = base + 100_000  # inside the second minute and inside the first block (readings 0-29)
    assert rows.downsample(cut) == packed.downsample(cut) == 20
    assert packed.conn.execute("SELECT count(*), sum(n) FROM blocks").fetchone() == (2, 40)
    dump = "SELECT node, metric, bucket, n, vmin, vmax, vsum FROM rollup_1m ORDER BY metric, bucket"
    assert rows.conn.execute(dump).fetchall() == packed.conn.execute(dump).fetchall()
    assert packed.conn.execute(
        "SELECT n, vmin, vmax FROM rollup_1m WHERE metric='t' AND bucket=?", (base,)
    ).fetchone() == (12, 0.0, 5.5)
    for m in ("t", "p"):
        assert rows.query("n1", m, since_ms=0) == packed.query("n1", m, since_ms=0)
    assert rows.count_readings() == packed.count_readings() == 40
    assert (
        packed.downsample(NOW) == 40
        and packed.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    )
    rows.close()
    packed.close()


def _indexes(store, table: str) -> list:
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL",
            (table,),
        )
    ]


def test_the_hot_table_has_one_index_and_a_version_2_database_loses_its_second(tmp_path):
    """Each index on readings costs a page write per reading at fleet rates (a batch's readings come
    from as many nodes): only the de-duplication key stays. A version-2 database (with the (node,
    ts) index) is opened without loss, and a node's readings by time still come from that key."""
    s = SqliteStore(tmp_path / "new.db")
    assert _indexes(s, "readings") == ["readings_key"]
    s.close()
    s = SqliteStore(tmp_path / "v2.db")
    s.write_batch([tel(seq=i, ts=NOW - 10_000 + i * 1000, t=i / 2) for i in range(10)])
    s.conn.execute("CREATE INDEX readings_node_ts ON readings (node, ts)")
    s.conn.execute("PRAGMA user_version = 2")
    s.close()
    s = SqliteStore(tmp_path / "v2.db")
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert _indexes(s, "readings") == ["readings_key"]
    assert s.query("n1", "t", since_ms=NOW - 5_000) == [
        (NOW - 10_000 + i * 1000, i / 2) for i in range(5, 10)
    ]
    plan = s.conn.execute(
        "EXPLAIN QUERY PLAN SELECT ts FROM readings WHERE node=? AND ts>=?", ("n1", 0)
    ).fetchall()
    assert "readings_key (node=?)" in str(plan)
    s.close()


def test_a_version_1_database_is_migrated_without_loss(tmp_path):
    """A database of the release before blocks (user_version 1): opened, its readings and queries
    are all there, and the daemon's compaction then takes its rows like any others."""
    conn = sqlite3.connect(tmp_path / "v1.db")
    conn.executescript("""
        CREATE TABLE readings (node TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL,
            ts INTEGER NOT NULL, hist INTEGER NOT NULL DEFAULT 0, msg TEXT NOT NULL);
        CREATE UNIQUE INDEX readings_key ON readings (node, boot, seq);
        CREATE INDEX readings_node_ts ON readings (node, ts);
        CREATE TABLE rollup_1m (node TEXT NOT NULL, metric TEXT NOT NULL, bucket INTEGER NOT NULL,
            n INTEGER NOT NULL, vmin REAL, vmax REAL, vsum REAL,
            PRIMARY KEY (node, metric, bucket)) WITHOUT ROWID;
        CREATE TABLE nodes (id TEXT PRIMARY KEY, state TEXT, fw TEXT, board TEXT, reset TEXT,
            boot TEXT,
            heap REAL, rssi REAL, uptime REAL, cfg TEXT, sensors TEXT, outbox REAL, drops REAL,
            interval REAL, last_seen INTEGER, status_at INTEGER, heap_min REAL, rejected INTEGER,
            last_reject TEXT, last_reject_at INTEGER);
        PRAGMA user_version = 1;""")
    conn.executemany(
        "INSERT INTO readings VALUES ('n1', '3', ?, ?, 0, ?)",
        [(i, NOW - 700_000 + i * 1000, json.dumps({"t": i / 4, "k": i})) for i in range(500)],
    )
    conn.execute(
        "INSERT INTO rollup_1m VALUES ('n1', 't', ?, 2, 1.0, 3.0, 4.0)", (NOW - 7_200_000,)
    )
    conn.execute("INSERT INTO nodes (id) VALUES ('n1')")
    conn.commit()
    conn.close()
    s = SqliteStore(tmp_path / "v1.db")
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert _indexes(s, "readings") == ["readings_key"]
    want = [(NOW - 7_200_000, 2.0)] + [(NOW - 700_000 + i * 1000, i / 4) for i in range(500)]
    assert s.query("n1", "t", since_ms=0) == want and s.count_readings() == 500
    assert s.compact(now_ms=NOW) == 400  # the last 5 minutes stay rows
    assert s.query("n1", "t", since_ms=0) == want and s.count_readings() == 500
    assert s.latest("n1") == (NOW - 700_000 + 499_000, {"t": 499 / 4, "k": 499})
    assert s.compact(now_ms=NOW + 3_600_000) == 100 and s.latest("n1")[1] == {
        "t": 499 / 4,
        "k": 499,
    }
    assert s.write_batch([tel(boot=3, seq=i) for i in range(0, 600, 50)]).stored == 2  # 500 and 550
    s.close()


def test_a_compaction_killed_mid_transaction_loses_and_doubles_nothing(tmp_path):
    """kill -9 of the daemon while it compacts: the transaction that had written blocks and deleted
    their rows is not committed, the ones before are, and every reading is stored once (rows or a
    block); the next pass finishes the work."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "db"
    s = SqliteStore(db)
    sent = [
        tel(node=f"n{k}", seq=i, ts=NOW - 3_600_000 + i * 1000, t=i / 8)
        for i in range(200)
        for k in range(3)
    ]
    s.write_batch(sent)
    s.close()
    host = Path(__file__).resolve().parents[2] / "host"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import sys
sys.path.insert(0, {str(host)!r})
from gridtwin.daemon.store_sqlite import SqliteStore
s = SqliteStore({str(db)!r})
real, commits = s.conn, []

class StopsBeforeTheThirdCommit:  # the real connection, held at the point where a kill hurts most
    def __getattr__(self, name):
        return getattr(real, name)

    def execute(self, sql, *args):
        if sql == "COMMIT":
            commits.append(1)
            if len(commits) == 3:
                print("in the transaction", flush=True)
                sys.stdin.read()
        return real.execute(sql, *args)

s.conn = StopsBeforeTheThirdCommit()
s.compact(now_ms={NOW}, min_rows=1, max_rows=50, txn_rows=100)
""",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "in the transaction\n"
        # the uncommitted transaction's blocks and deletions are in the WAL or the page cache
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    from gridtwin.daemon import blocks

    s = SqliteStore(db)
    keys = s.conn.execute("SELECT node, boot, seq FROM readings").fetchall()
    for node, data in s.conn.execute("SELECT node, data FROM blocks").fetchall():
        keys += [(node, boot, seq) for boot, seq, *_ in blocks.Block(data).rows()]
    assert sorted(keys) == sorted((t.node, "1", t.seq) for t in sent)  # none lost, none twice
    assert (
        s.conn.execute("SELECT sum(n) FROM blocks").fetchone()[0] == 200
    )  # two transactions of 100
    assert s.write_batch(sent).stored == 0
    # at most txn_rows of a node a pass: n0 and n1 lost 100 rows each to blocks, n2 none
    assert [s.compact(now_ms=NOW, min_rows=1, max_rows=50, txn_rows=100) for _ in range(3)] == [
        300,
        100,
        0,
    ]
    assert s.count_readings() == 600 and s.write_batch(sent).stored == 0
    assert s.query("n2", "t", since_ms=0) == [
        (NOW - 3_600_000 + i * 1000, i / 8) for i in range(200)
    ]
    s.close()


def test_a_batch_names_the_rowids_its_readings_took_and_compaction_can_leave_them(
    store, insert_path
):
    """BatchResult.rows: the first and last rowid of the readings a batch stored (consecutive, in
    the batch's order; duplicates take none), what the analytics process reads back when it fell
    behind; compaction leaves rows from ``keep_from`` on in place."""
    first = store.write_batch([tel(seq=i, ts=NOW - 900_000 + i) for i in range(10)])
    assert first.rows == (1, 10)
    again = store.write_batch([tel(seq=i, ts=NOW - 900_000 + i) for i in range(5, 15)])
    assert again.rows == (11, 15)  # seq 10..14: five new rows after the five duplicates
    got = store.conn.execute(
        "SELECT rowid, seq FROM readings WHERE rowid BETWEEN ? AND ? ORDER BY rowid", again.rows
    ).fetchall()
    assert got == [(11 + k, 10 + k) for k in range(5)]
    assert store.write_batch([tel(seq=3, ts=NOW - 900_000 + 3)]).rows is None  # nothing new
    assert store.compact(min_rows=1, keep_from=11) == 10  # rowids 1..10 only
    assert [r[0] for r in store.conn.execute("SELECT rowid FROM readings ORDER BY rowid")] == list(
        range(11, 16)
    )
    assert store.count_readings("n1") == 15
