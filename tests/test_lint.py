"""The tree stays ruff-clean under pyproject.toml's [tool.ruff] (pycodestyle, pyflakes)
and `ruff format`-clean (code wrapped at 100).

`make test` runs it with the rest of the suite; ruff is pinned in the dev extra, so everyone (and
CI) lints with the same rules and the same version.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_tree_is_ruff_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "host", "tools", "tests", "firmware"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"ruff check (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}", pytrace=False
        )


def test_the_tree_is_formatted():
    # one layout everywhere: a diff shows what changed, never who formatted it
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "host", "tools", "tests", "firmware"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"ruff format --check (exit {proc.returncode}): run `.venv/bin/ruff format host tools "
            f"tests firmware`\n{proc.stdout}{proc.stderr}",
            pytrace=False,
        )
