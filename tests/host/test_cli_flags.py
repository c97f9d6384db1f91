"""What a user types that is wrong gets one line `gridtwin: ...` and a non-zero exit (issue #12 items
6 and 7), and the CLI verbs that show what a node has (issue #11 items 5, 6 and 9).

The verbs run in-process through `gridtwin.cli.main` on a copy of the example site; readings reach
the store through the daemon's own validator and `SqliteStore.write_batch`, as ingest writes them.
"""

import json
import shutil
import time

import pytest

from gridtwin import cli
from gridtwin.micropython import REPO

EXAMPLE = REPO / "host/gridtwin/examples/site.toml"


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "site.toml"
    shutil.copyfile(EXAMPLE, path)
    return path


def one_line_error(capsys, argv, code=2):
    """Run the CLI; it must fail with `code` and say so in exactly one line, no traceback."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.startswith("gridtwin: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, words", [
    (["vnode", "pdu_a", "--heap", "lots"], ["--heap", "'lots' is not a heap size", "128k"]),
    (["vnode", "pdu_a", "--heap", "20k"], ["--heap", "below the 80k the firmware needs", "el1", "96k"]),
    (["vnode", "pdu_a", "--speed", "0"], ["--speed", "not a number greater than 0"]),
    (["demo", "--speed", "0"], ["--speed", "'0' is not a number greater than 0"]),
    (["demo", "--speed", "-1"], ["--speed", "'-1' is not a number greater than 0"]),
    (["demo", "--speed", "nan"], ["--speed"]),
    (["demo", "--duration", "-5"], ["--duration"]),
    (["demo", "--port", "99999"], ["--port", "not a TCP port"]),
    (["query", "pdu_a", "v", "--since"], ["query: argument --since: expected one argument"]),
    (["query", "pdu_a", "v", "--since", "soon"], ["--since 'soon' is not a duration", "15m"]),
    (["query", "pdu_a", "v", "--since", "+5m"], ["--since '+5m' is not a duration"]),
    (["daemon", "run", "--metrics-port", "x"], ["daemon run: argument --metrics-port"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
])
def test_a_bad_flag_is_one_clear_line_and_a_nonzero_exit(site, capsys, argv, words):
    err = one_line_error(capsys, ["--site", str(site), *argv])
    for w in words:
        assert w in err, err
    assert "usage:" not in err


def test_since_takes_a_leading_minus_as_influxdb_writes_it(site, capsys):
    # `--since -5m` was an argparse error ("expected one argument"); now it is five minutes back
    _store_readings(site, "pdu_a", [{"a": 1.0}, {"a": 2.0}], step_ms=1000)
    assert cli.main(["--site", str(site), "query", "pdu_a", "a", "--since", "-5m"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["1", "2"]


def test_an_unknown_board_fails_the_site_check_naming_the_node_and_the_known_boards(site, capsys):
    text = site.read_text()
    site.write_text(text.replace('id = "gen_a"\nrole = "generator"\nboard = "esp32"',
                                 'id = "gen_a"\nrole = "generator"\nboard = "esp32c9"'))
    assert cli.main(["--site", str(site), "doctor", "--json"]) == 1
    checks = {r["check"]: r for r in json.loads(capsys.readouterr().out)}
    found = checks["site"]["found"]
    assert checks["site"]["ok"] is False and "nodes[gen_a].board: unknown board 'esp32c9'" in found, found
    assert "esp32, esp32s3" in found
    # the demo refuses before it starts a broker, with the same line
    err = one_line_error(capsys, ["--site", str(site), "demo", "--no-view"])
    assert "nodes[gen_a].board: unknown board 'esp32c9'" in err and "boards/esp32c9.json" in err


def test_site_errors_name_the_node_by_its_id(site, capsys):
    site.write_text(site.read_text().replace('id = "pdu_a"\nrole = "pdu"', 'id = "pdu_a"\nrole = "pdv"'))
    err = one_line_error(capsys, ["--site", str(site), "nodes"])
    assert f"{site}: nodes[pdu_a].role: unknown role 'pdv'" in err


# --- helpers ---------------------------------------------------------------------------------------

def _store_readings(site_path, node, metrics: list[dict], *, step_ms=1000, end_ms=None, boot=1):
    """Readings of `node` through the daemon's validator into the site's store, the last at end_ms."""
    from gridtwin.daemon import validate
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.site import load_site

    end_ms = end_ms or int(time.time() * 1000) - 1000
    store = SqliteStore(db_path(load_site(site_path)))
    try:
        batch = []
        for i, m in enumerate(metrics):
            ts = end_ms - (len(metrics) - 1 - i) * step_ms
            payload = json.dumps({"v": 1, "node": node, "boot": boot, "seq": i, "ts": ts, "m": m}).encode()
            batch.append(validate.telemetry(node, payload))
        store.write_batch(batch)
    finally:
        store.close()
