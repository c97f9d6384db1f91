"""Where the files gridtwin ships with live: the firmware, the board files and the virtual-board
shim.

They are package data, so an installed gridtwin (a wheel, `pip install`, `pipx install`) carries
them and never looks at a checkout:

    gridtwin/firmware/        the node's firmware (boot.py, main.py, gt/), run by boards and vnodes
    gridtwin/boards/*.json    one file per board: chip, pins, flash offset, MicroPython image
    gridtwin/virtual/shim/    the fake ESP32 (machine, network, ...) and its chip models (fakes/)
    gridtwin/examples/        the example site (the demo's)

In the repository `firmware/` and `boards/` stay at the top, where the firmware is written and
deployed from; `host/gridtwin/firmware` and `host/gridtwin/boards` are relative symlinks to them,
so an editable install (`make setup`) sees the working tree and a wheel copies their files in
(pyproject.toml's package-data). Every lookup at run time goes through this module.
"""

from __future__ import annotations

import pathlib

from gridtwin.errors import ToolError

REINSTALL = (
    "reinstall gridtwin (`pip install --force-reinstall gridtwin`); in a checkout, `make setup`"
)

# the installed package's own folder (a wheel unpacks: MicroPython needs real files, not a zip)
PACKAGE_DIR = pathlib.Path(__file__).parent
FIRMWARE_DIR = PACKAGE_DIR / "firmware"
BOARDS_DIR = PACKAGE_DIR / "boards"
SHIM_DIR = PACKAGE_DIR / "virtual" / "shim"
EXAMPLE_SITE = PACKAGE_DIR / "examples" / "site.toml"


def _missing(what: str, where: pathlib.Path) -> ToolError:
    return ToolError(f"this gridtwin has no {what}: looked in {where}", hint=REINSTALL)


def firmware_dir() -> pathlib.Path:
    """The shipped firmware folder; a clear error when the installation lacks it."""
    if not (FIRMWARE_DIR / "main.py").is_file() or not (FIRMWARE_DIR / "gt").is_dir():
        raise _missing("firmware (main.py and gt/)", FIRMWARE_DIR)
    return FIRMWARE_DIR


def boards_dir() -> pathlib.Path:
    """The shipped board files' folder; a clear error when there are none."""
    if not any(BOARDS_DIR.glob("*.json")):
        raise _missing("board files (*.json)", BOARDS_DIR)
    return BOARDS_DIR


def shim_dir() -> pathlib.Path:
    """The virtual-board shim (put first on a vnode's MicroPython path)."""
    if not (SHIM_DIR / "_boot_board.py").is_file():
        raise _missing("virtual-board shim (_boot_board.py)", SHIM_DIR)
    return SHIM_DIR


def known_boards() -> list[str]:
    return sorted(p.stem for p in boards_dir().glob("*.json"))
