"""A corrupt var/gridtwin.db (issue #12 item 4): every verb that reads it, `doctor` and the daemon
say the file is corrupt, name it and the fix, in one line; no traceback, no disk-space hint."""

import shutil
import sqlite3
import time

import pytest

from fixtures.dbfiles import destroy_header, destroy_pages

from gridtwin import cli
from gridtwin.daemon.store_sqlite import SqliteStore
from gridtwin.site import example_site_path

EXAMPLE = example_site_path()


def _site_with_db(tmp_path):
    site = tmp_path / "site.toml"
    shutil.copyfile(EXAMPLE, site)
    db = tmp_path / "var" / "gridtwin.db"
    store = SqliteStore(db)
    from gridtwin.daemon import validate

    now = int(time.time() * 1000)
    store.write_batch(
        [
            validate.telemetry(
                "pdu_a",
                (
                    '{"v":1,"node":"pdu_a","boot":1,"seq":%d,"ts":%d,"m":{"load_kw":%d.5}}'
                    % (i, now - 1000 + i, i)
                ).encode(),
            )
            for i in range(400)
        ]
    )
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return site, db


@pytest.mark.parametrize("damage", [destroy_header, destroy_pages], ids=["header", "pages"])
def test_every_verb_and_doctor_name_a_corrupt_database(tmp_path, capsys, damage):
    site, db = _site_with_db(tmp_path)
    damage(db)
    for argv in (
        ["nodes"],
        ["query", "pdu_a", "load_kw", "--since", "1h"],
        ["logs", "pdu_a"],
        ["daemon", "--metrics-port", "0"],
    ):
        rc = cli.main(["--site", str(site), *argv])
        err = capsys.readouterr().err
        if damage is destroy_pages and argv[0] in ("nodes", "logs") and rc == 0:
            continue  # a reader that never touches a damaged page has nothing to report
        assert rc != 0, (argv, err)
        assert err.startswith("gridtwin: ") and err.count("\n") == 1 and "Traceback" not in err, (
            argv,
            err,
        )
        assert (
            "is corrupt" in err
            and str(db) in err
            and "mv " in err
            and "disk is not full" not in err
        ), err
    rc = cli.main(["--site", str(site), "doctor"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "database" in ln)
    assert rc == 1 and line.startswith("FAIL") and "is corrupt" in out and "mv " in out, out


def test_doctor_passes_a_sound_database(tmp_path, capsys):
    site, db = _site_with_db(tmp_path)
    cli.main(["--site", str(site), "doctor"])
    out = capsys.readouterr().out
    assert any(ln.startswith("ok") and "quick_check ok" in ln for ln in out.splitlines()), out
    sqlite3.connect(db).close()
