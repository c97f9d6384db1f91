"""`gridtwin maintenance`: the forecast per node and thermometer from the store (no daemon running),
and one clear line naming what is wrong on a user's mistake."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gridtwin.cli import main
from gridtwin.daemon.config import db_path
from gridtwin.daemon.store_sqlite import SqliteStore
from gridtwin.site import load_site

EXAMPLE = Path(__file__).resolve().parents[2] / "host/gridtwin/examples/site.toml"
T0 = 1_780_000_000_000


@pytest.fixture
def site_file(tmp_path):
    dst = tmp_path / "site.toml"
    shutil.copy(EXAMPLE, dst)
    return dst


def _store(site_file, hours=12):
    """EL1's stack warming 1.5 degC/h from 60 degC (+-0.5), one message a minute; grid1's box
    steady."""
    site = load_site(site_file)
    path = db_path(site)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(path)
    rng = np.random.default_rng(1)
    rows = []
    for k in range(hours * 60):
        ts = T0 + k * 60_000
        rows.append(
            SimpleNamespace(
                node="EL1",
                boot="b",
                seq=k,
                ts=ts,
                hist=False,
                m={"t_stack": 60 + 1.5 * k / 60 + rng.normal(0, 0.5), "stack_v": 37.0},
            )
        )
        rows.append(
            SimpleNamespace(
                node="grid1",
                boot="b",
                seq=k,
                ts=ts,
                hist=False,
                m={"t_box": 30 + rng.normal(0, 0.2), "mains_hz": 50.0},
            )
        )
    store.write_batch(rows)
    store.close()


def test_prints_the_forecast_per_thermometer(site_file, capsys):
    _store(site_file)
    assert main(["--site", str(site_file), "maintenance"]) == 0
    out = capsys.readouterr().out
    el1 = next(ln for ln in out.splitlines() if ln.startswith("EL1") and "t_stack" in ln)
    # at the end 60 + 1.5 * 12 = 78 degC: a stack's 88 degC in 6.7 h
    assert "reaches 88 °C in 6." in el1 and "confidence 0.9" in el1, el1
    assert "do:   check the lye cooling loop" in out
    box = next(ln for ln in out.splitlines() if ln.startswith("grid1"))
    assert "t_box" in box and "not heading for 85" in box
    assert "stack_v" not in out and "mains_hz" not in out  # only thermometers
    assert main(["--site", str(site_file), "maintenance", "--node", "EL1", "--json"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [(r["node"], r["metric"], r["status"]) for r in rows] == [
        ("EL1", "t_stack", "inside horizon")
    ]
    assert abs(rows[0]["hours_left"] - 10 / 1.5) < 0.1 * 10 / 1.5


def test_short_history_says_how_much_is_needed(site_file, capsys):
    _store(site_file, hours=2)
    assert main(["--site", str(site_file), "maintenance", "--node", "EL1"]) == 0
    assert "not enough history (2.0 h of the 6 h a trend needs)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, says",
    [
        (["maintenance"], "no data yet:"),
        (["maintenance", "--node", "EL9"], "EL9"),
        (["maintenance", "--horizon", "soon"], "--horizon 'soon' is not a duration"),
        (["maintenance", "--horizon", "10m"], "shorter than an hour"),
    ],
)
def test_one_clear_line_on_errors(site_file, capsys, argv, says):
    assert main(["--site", str(site_file), *argv]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gridtwin: ") and says in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""
