"""The read-only verbs' fast path (issue #20): `gridtwin query` learns the database path and node
ids from a short scanner, not tomllib, and builds only its own verb's parser.

Whatever the scanner answers must be what tomllib reads from the same file; what it does not follow
it declines (None), and the tomllib path answers instead.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gridtwin import sitequick
from gridtwin.site import example_site_path

HOST = Path(__file__).resolve().parents[2] / "host"
NODES = '[[nodes]]\nid = "a"\nrole = "pv"\n\n[[nodes]]\nid = \'b\'  # literal\n'

# files the scanner reads: each answer is compared with tomllib's
PLAIN = [
    "[site]\nid = 'x'\n" + NODES,
    '# top\n\n[site]\nid = "x"\nvar = "run/data"   # here\n[storage]\npath = "/srv/g.db"\n' + NODES,
    "[site]\nvar = '~/v'\n[broker]\nhosts = [\n  \"a]\", # ] in a string\n  'b[',\n]\n"
    + "port = 1_883\n"
    + NODES
    + "sensors = [\n  { id = \"s\", cal = [0.0, 1e-3], twin = { a = \"i\" } },\n]\n"
    + "[nodes.extra]\nid = 'not a node id'\n"
    + NODES.replace('"a"', '"c"'),
    "[site]\nid = 'x'\nstart = 2026-06-21T10:00:00Z\nok = true\nf = -inf\n" + NODES,
]

# files it must decline (the tomllib path or load_site decides)
DECLINED = [
    '[site]\nid = """x"""\n' + NODES,  # multi-line strings
    '[site]\nvar = "a\\tb"\n' + NODES,  # an escape in a key it reads
    '[site]\nvar = 5\n' + NODES,
    "[site]\n[site]\n" + NODES,  # a table twice
    "[site]\nvar = 'a'\nvar = 'b'\n" + NODES,
    "site = { id = 'x' }\n" + NODES,  # the site as an inline table
    "[site]\n[[nodes]]\nrole = 'pv'\n",  # a node without an id
    "[site]\n[[nodes]]\nid = 'a'\nid = 'b'\n",
    "[site]\nx = bare\n" + NODES,  # not TOML
    "[site]\nx = [1,\n" + NODES,  # an array that never closes
    "[site]\r\nid = 'x'\r\n" + NODES,
    "[site]\n\"quoted\" = 1\n" + NODES,
    "[nodes]\nid = 'a'\n[site]\n",
    "[storage.path]\nx = 1\n[site]\n" + NODES,
]


def _toml(text):
    data = tomllib.loads(text)
    storage = data.get("storage", {})
    return (
        data["site"].get("var", "var"),
        storage.get("path", ""),
        [n["id"] for n in data["nodes"]],
    )


@pytest.mark.parametrize("text", PLAIN)
def test_the_scanner_reads_what_tomllib_reads(text):
    assert sitequick._scan(text) == _toml(text)


@pytest.mark.parametrize("text", DECLINED)
def test_the_scanner_declines_what_it_does_not_follow(text):
    assert sitequick._scan(text) is None


def test_the_example_site_is_scanned_not_parsed():
    text = example_site_path().read_text()
    assert sitequick._scan(text) == _toml(text)


def test_a_file_the_scanner_declines_is_read_with_tomllib(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('site = { var = "data" }\nnodes = [{ id = "a" }]\n')
    assert sitequick._scan(path.read_text()) is None
    assert sitequick.db_and_nodes(path) == (tmp_path / "data" / "gridtwin.db", {"a"})


def test_query_imports_neither_tomllib_nor_shutil_nor_other_verbs(tmp_path):
    """The whole process of a query (here one with no database yet: the same path up to the
    store): tomllib cost it 6-15 ms, shutil (argparse's terminal width) 3 ms."""
    site = tmp_path / "site.toml"
    site.write_text(example_site_path().read_text())
    code = (
        "import sys\n"
        "from gridtwin import cli\n"
        f"rc = cli.main(['--site', {str(site)!r}, 'query', 'pdu_a', 'load_kw'])\n"
        "mods = [m for m in ('tomllib', 'shutil', 'gridtwin.site') if m in sys.modules]\n"
        "print(rc, mods)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(HOST), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout.strip() == "1 []"
    assert "no data yet" in out.stderr


@pytest.mark.parametrize("site_flag", ["--site", "--si", "--sit"])
def test_the_verb_is_found_after_the_site_value_even_when_it_is_a_verb_name(
    tmp_path, monkeypatch, capsys, site_flag
):
    """`--site nodes` names a file called nodes; the verb is the next word."""
    from gridtwin import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nodes").write_text(example_site_path().read_text())
    rc = cli.main([site_flag, "nodes", "query", "pdu_a", "load_kw"])
    assert rc == 1
    assert "no data yet" in capsys.readouterr().err


def test_the_process_ends_at_once_with_all_of_its_output(tmp_path, capsys):
    """`python -m gridtwin query` skips the interpreter's teardown (cli.QUICK): what it prints
    through a pipe (more than a pipe holds) is all of it, as main() prints it in this process."""
    import json
    import time

    from gridtwin import cli
    from gridtwin.daemon import validate
    from gridtwin.daemon.store_sqlite import SqliteStore

    site = tmp_path / "site.toml"
    site.write_text(example_site_path().read_text())
    now = int(time.time() * 1000)
    store = SqliteStore(tmp_path / "var" / "gridtwin.db")
    try:
        rows = []
        for i in range(3000):
            doc = {"v": 1, "node": "pdu_a", "boot": 1, "seq": i, "ts": now - 3_000_000 + i * 1000}
            doc["m"] = {"load_kw": i * 0.25}
            rows.append(validate.telemetry("pdu_a", json.dumps(doc).encode(), now_ms=now))
        store.write_batch(rows)
    finally:
        store.close()
    argv = ["--site", str(site), "query", "pdu_a", "load_kw", "--since", "1h", "--csv"]
    assert cli.main(argv) == 0
    want = capsys.readouterr().out
    assert len(want) > 65536 and want.count("\n") == 3001
    out = subprocess.run(
        [sys.executable, "-m", "gridtwin", *argv],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(HOST), "PATH": "/usr/bin:/bin"},
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, want, "")
    miss = subprocess.run(
        [sys.executable, "-m", "gridtwin", *argv[:4], "load_kx"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(HOST), "PATH": "/usr/bin:/bin"},
    )
    assert miss.returncode == 2 and "pdu_a has no metric 'load_kx'" in miss.stderr


@pytest.mark.parametrize("verb, quick", [("query", True), ("nodes", False)])
def test_only_a_quick_verb_runs_without_the_gc_and_skips_the_teardown(verb, quick):
    """`python -m gridtwin` disables the GC before it knows the verb; any other verb (the daemon)
    gets it back before it runs, and exits the ordinary way (objects finalized at teardown)."""
    argv = ["gridtwin", verb, "a", "b"] if verb == "query" else ["gridtwin", verb]
    code = (
        "import gc, sys\n"
        "gc.disable()\n"
        "from gridtwin import cli\n"
        f"from gridtwin.commands import {verb} as verb\n"
        "verb.run = lambda args: print('gc on:', gc.isenabled()) or 3\n"
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        print('teardown')\n"
        "witness = Teardown()\n"
        f"sys.argv = {argv!r}\n"
        "cli.run()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(HOST), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 3
    want = ["gc on: False"] if quick else ["gc on: True", "teardown"]
    assert out.stdout.splitlines() == want
