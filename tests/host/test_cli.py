"""The CLI's one place for errors, and `gridtwin doctor`."""

import json
import pathlib

from gridtwin import cli


def test_a_verb_not_built_yet_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.VERBS, "frobnicate", ("no_such_module", "a future verb", 99))
    assert cli.main(["frobnicate"]) == 3
    err = capsys.readouterr().err
    assert err == "gridtwin: 'frobnicate' is not built yet (see issue #99)\n"


def test_no_verb_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "VERB" in capsys.readouterr().out


def test_doctor_finds_the_tools_and_names_a_bad_site(tmp_path, capsys, micropython):
    bad = tmp_path / "site.toml"
    bad.write_text("[site]\nid = 'lab'\nsurprise = 1\n")
    rc = cli.main(["--site", str(bad), "doctor", "--json"])
    results = {r["check"]: r for r in json.loads(capsys.readouterr().out)}
    assert rc == 1
    assert (
        results["micropython"]["ok"] and results["mpy-cross"]["ok"] and results["mosquitto"]["ok"]
    )
    assert results["site"]["ok"] is False and "surprise" in results["site"]["found"]
    assert results["pki"]["ok"] is None


def test_doctor_passes_on_the_example_site(capsys, micropython):
    REPO = pathlib.Path(__file__).resolve().parents[2]  # the checkout

    rc = cli.main(["--site", str(REPO / "host/gridtwin/examples/site.toml"), "doctor"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "site 'demo'" in out


def test_make_bench_has_every_section_the_issues_ask_for():
    # the sections live in one file that several people edit: a lost one would go unnoticed
    import importlib.util

    REPO = pathlib.Path(__file__).resolve().parents[2]  # the checkout

    spec = importlib.util.spec_from_file_location("bench", REPO / "tools" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert {"ingest", "twin", "firmware", "fleet"} <= set(bench.SECTIONS)
