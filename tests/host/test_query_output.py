"""`gridtwin query`'s raw output, written at once (issue #20): each format as it has always been.

The readings go through the daemon's validator into the example site's store; what the CLI prints is
compared with the same rows formatted the slow, obvious way (datetime, the csv module, json, %g).
Times cross a minute and an hour boundary, values mix ints and floats of every shape.
"""

import csv
import datetime as dt
import io
import json
import shutil
import time

import pytest

from gridtwin import cli
from gridtwin.site import example_site_path

VALUES = [0, 1.5, -2, 1e-7, 123456789.125, -0.0, 3, 2.5e20, 7.25, 10**15, 0.1, 42]


@pytest.fixture
def site(tmp_path):
    from gridtwin.daemon import validate
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.site import load_site

    path = tmp_path / "site.toml"
    shutil.copyfile(example_site_path(), path)
    # the last hour boundary at least 5 minutes ago (5 to 65 minutes ago: `--since 2h` below takes
    # it all), readings 23.5 s apart around it, the last 4.3 minutes after it
    hour = (int(time.time() * 1000) - 300_000) // 3_600_000 * 3_600_000
    store = SqliteStore(db_path(load_site(path)))
    try:
        rows = []
        for i, v in enumerate(VALUES):
            ts = hour - 70_000 + i * 23_500 + i % 3
            doc = {"v": 1, "node": "pdu_a", "boot": 1, "seq": i, "ts": ts, "m": {"load_kw": v}}
            rows.append(validate.telemetry("pdu_a", json.dumps(doc).encode()))
        store.write_batch(rows)
        want = store.query("pdu_a", "load_kw", 0)
    finally:
        store.close()
    assert [type(v) for _t, v in want] == [type(v) for v in VALUES]
    return path, want


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")


def _run(capsys, path, *fmt) -> str:
    argv = ["--site", str(path), "query", "pdu_a", "load_kw", "--since", "2h", *fmt]
    assert cli.main(argv) == 0
    return capsys.readouterr().out


def test_raw_csv_is_what_the_csv_module_writes(site, capsys):
    path, rows = site
    want = io.StringIO()
    w = csv.writer(want, lineterminator="\n")
    w.writerow(["time", "load_kw"])
    w.writerows([_iso(ts), v] for ts, v in rows)
    assert _run(capsys, path, "--csv") == want.getvalue()


def test_raw_json_lines_carry_ts_time_and_value(site, capsys):
    path, rows = site
    want = "".join(json.dumps({"ts": ts, "time": _iso(ts), "value": v}) + "\n" for ts, v in rows)
    assert _run(capsys, path, "--json") == want


def test_raw_text_is_time_and_value_per_line(site, capsys):
    path, rows = site
    assert _run(capsys, path) == "".join(f"{_iso(ts)}  {v:g}\n" for ts, v in rows)
