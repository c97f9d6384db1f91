"""The read-only verbs' fast path to a site's database (issue #20).

`gridtwin query` spent most of its time importing and validating every section of the site (62 ms
for 1,000 nodes) to learn one path. Here the TOML is read and the database path resolved as the
loader and `daemon.config.db_path` resolve it, with the defaults from their one home
(`gridtwin.sitedefaults`). Anything this path does not understand returns None, and the caller
loads the site properly, which validates it and explains what is wrong.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from gridtwin.sitedefaults import DB_FILE, VAR


def _resolve(base: Path, value) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def db_and_nodes(site_file) -> tuple[Path, set[str]] | None:
    """(database path, node ids) of a site file, or None: load it with `load_site` instead."""
    path = Path(site_file).expanduser().absolute()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    site, storage = data.get("site"), data.get("storage", {})
    nodes = data.get("nodes")
    if not isinstance(site, dict) or not isinstance(storage, dict) or not isinstance(nodes, list):
        return None
    ids = {n.get("id") for n in nodes if isinstance(n, dict)}
    if not all(isinstance(i, str) for i in ids):
        return None
    var = _resolve(path.parent, site.get("var", VAR))
    if var is None:
        return None
    db = storage.get("path", "")
    if db == "":
        return var / DB_FILE, ids
    resolved = _resolve(path.parent, db)
    return (resolved, ids) if resolved is not None else None
