"""A node's config.json, rendered from the site file and the node's board file.

The firmware validates this file again on boot (firmware/gt/config.py): the host renders what the
firmware's schema() accepts, and a test boots the firmware on every rendered config to keep the two
in step. Each part of the system contributes its keys through CONTRIBUTORS, a list of
``fn(site, node, board, cfg)`` that add to ``cfg`` in place (the transport adds wifi/mqtt, the
sensor layer adds sensors and display); board files live in ``boards/<name>.json``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable

from gridtwin.errors import ConfigError
from gridtwin.micropython import REPO

BOARDS_DIR = REPO / "boards"

Contributor = Callable[..., None]
CONTRIBUTORS: list[Contributor] = []


def load_board(name: str, boards_dir: pathlib.Path = BOARDS_DIR) -> dict:
    path = pathlib.Path(boards_dir) / f"{name}.json"
    try:
        board = json.loads(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in pathlib.Path(boards_dir).glob("*.json")))
        raise ConfigError(path, None, f"no board file for '{name}'", f"known boards: {known}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(path, f"line {exc.lineno}", f"not valid JSON: {exc.msg}",
                          "fix the board file") from None
    for key in ("chip", "flash_offset", "pins"):
        if key not in board:
            raise ConfigError(path, key, "missing", "every board file names chip, flash_offset and pins")
    return board


def render(site, node_id: str, boards_dir: pathlib.Path = BOARDS_DIR) -> dict:
    """The config.json document for one node (a dict; json.dumps it to write it)."""
    node = site.node(node_id)
    board = load_board(node.board, boards_dir)
    cfg = {
        "v": 1,
        "node": node.id,
        "site": site.id,
        "root": site.topic_root,
        "role": node.role,
        "board": node.board,
        "sample_ms": node.interval_ms,
        "pins": dict(board["pins"]),
    }
    for contribute in CONTRIBUTORS:
        contribute(site, node, board, cfg)
    return cfg


def render_json(site, node_id: str, boards_dir: pathlib.Path = BOARDS_DIR) -> str:
    return json.dumps(render(site, node_id, boards_dir), indent=1, sort_keys=True)
