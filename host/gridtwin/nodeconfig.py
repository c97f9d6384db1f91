"""A node's config.json, rendered from the site file and the node's board file.

The firmware validates this file again on boot (firmware/gt/config.py): the host renders what the
firmware's schema() accepts, and a test boots the firmware on every rendered config to keep the two
in step. `render` is one pipeline of four stages, each returning its keys: the node's own (id, role,
board, interval), the link to the broker (gridtwin.nodenet.network, the same for every node), the
hardware (gridtwin.sensors_site.hardware: pins, display, sensors, checked against the board file)
and the params the twin decides (gridtwin.twin.topology.role_params, from the topology the site's
load built once). Board files live in ``boards/<name>.json``, shipped in the package
(gridtwin.resources).
"""

from __future__ import annotations

import json
import pathlib

from gridtwin import nodenet, sensors_site
from gridtwin.errors import ConfigError
from gridtwin.resources import BOARDS_DIR
from gridtwin.resources import boards_dir as shipped_boards_dir
from gridtwin.twin import topology


def load_board(name: str, boards_dir: pathlib.Path = BOARDS_DIR) -> dict:
    if pathlib.Path(boards_dir) == BOARDS_DIR:
        shipped_boards_dir()  # an installation without its board files says so, not "unknown board"
    path = pathlib.Path(boards_dir) / f"{name}.json"
    try:
        board = json.loads(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in pathlib.Path(boards_dir).glob("*.json")))
        raise ConfigError(
            path, None, f"no board file for '{name}'", f"known boards: {known}"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            path, f"line {exc.lineno}", f"not valid JSON: {exc.msg}", "fix the board file"
        ) from None
    for key in ("chip", "flash_offset", "pins"):
        if key not in board:
            raise ConfigError(
                path, key, "missing", "every board file names chip, flash_offset and pins"
            )
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
    }
    cfg.update(nodenet.network(site))
    cfg.update(sensors_site.hardware(site, node, board))
    params = topology.role_params(site, node)
    if params:
        cfg["params"] = params
    return cfg


def render_json(site, node_id: str, boards_dir: pathlib.Path = BOARDS_DIR) -> str:
    return json.dumps(render(site, node_id, boards_dir), indent=1, sort_keys=True)
