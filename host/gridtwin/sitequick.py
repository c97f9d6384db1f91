"""The read-only verbs' fast path to a site's database (issue #20).

`gridtwin query` spent most of its time importing and validating every section of the site (62 ms
for 1,000 nodes) to learn one path. Here the database path is resolved as the loader and
`daemon.config.db_path` resolve it, with the defaults from their one home (`gridtwin.sitedefaults`).
A short scanner reads the three keys it needs (site.var, storage.path, each node's id) from a
plainly written file; importing `tomllib` alone cost a query 6-15 ms. A file it does not follow
line by line goes through `tomllib`, and anything unusual there returns None: the caller then loads
the site properly, which validates it and explains what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

from gridtwin.sitedefaults import DB_FILE, VAR

# what the scanner follows: blank and comment lines, [table] and [[array]] headers of bare dotted
# names, `bare_key = value` with a one-line value or an array/inline table over several lines
_BLANK = re.compile(r"[ \t]*(?:#[^\n]*)?\n")
_HEADER = re.compile(
    r"[ \t]*(\[\[?)([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)(\]\]?)[ \t]*(?:#[^\n]*)?\n"
)
_KEY = re.compile(r"[ \t]*([A-Za-z0-9_-]+)[ \t]*=[ \t]*")
_END = r"[ \t]*(?:#[^\n]*)?\n"
_LINE_END = re.compile(_END)
# a plain string: the only form the three keys are read in (escapes go through tomllib)
_STRING = re.compile(r"(?:\"([^\"\\\x00-\x1f\x7f]*)\"|'([^'\x00-\x1f\x7f]*)')" + _END)
_SCALAR = re.compile(  # a string, a boolean, or what starts as a number or a time would
    r"(?:\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|true|false|[+-]?(?:inf|nan)"
    r"|[+-]?\d[0-9A-Za-z_.:+-]*(?: \d[0-9:.+Z-]*)?)" + _END
)
# inside an array or inline table: strings, comments, brackets, and anything else in runs
_TOKEN = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|#[^\n]*|[\[{]|[\]}]|[^\"'#\[\]{}]+")
_WANTED = {"site": "var", "storage": "path", "nodes": "id"}


def _array_end(text: str, pos: int) -> int | None:
    """Where the line that closes the array or inline table starting at pos ends, or None."""
    depth = 0
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            return None  # a quote that does not close on its line
        tok, pos = m.group(), m.end()
        if tok == "[" or tok == "{":
            depth += 1
        elif tok == "]" or tok == "}":
            depth -= 1
            if depth == 0:
                end = _LINE_END.match(text, pos)
                return end.end() if end else None


def _scan(text: str) -> tuple[str, str, list[str]] | None:
    """(site.var, storage.path, node ids) of a plainly written site file, or None."""
    if '"""' in text or "'''" in text or "\r" in text:
        return None
    text += "\n"
    found: dict[str, str] = {}  # "site" / "storage" -> its value
    tables: set[str] = set()
    ids: list[str | None] = []
    table = ""  # the current table's dotted name; "" is the root
    pos, size = 0, len(text)
    while pos < size:
        m = _BLANK.match(text, pos)
        if m:
            pos = m.end()
            continue
        m = _HEADER.match(text, pos)
        if m:
            opened, table, closed = m.groups()
            pos = m.end()
            top, _, sub = table.partition(".")
            if len(opened) != len(closed) or (top in _WANTED and sub == _WANTED[top]):
                return None
            if opened == "[[":
                if table in ("site", "storage"):
                    return None
                if table == "nodes":
                    ids.append(None)
                # each element has sub-tables of its own: [[nodes]] [nodes.x] [[nodes]] [nodes.x]
                tables = {t for t in tables if not t.startswith(table + ".")}
            elif table == "nodes" or table in tables:
                return None  # a node table, or a table twice: tomllib says what is wrong
            tables.add(table)
            continue
        m = _KEY.match(text, pos)
        if m is None:
            return None
        key, pos = m.group(1), m.end()
        if table == "" and key in _WANTED:
            return None
        if _WANTED.get(table) == key:
            v = _STRING.match(text, pos)
            if v is None:
                return None
            value = v.group(1) if v.group(1) is not None else v.group(2)
            if table == "nodes":
                if ids[-1] is not None:
                    return None
                ids[-1] = value
            elif table in found:
                return None
            else:
                found[table] = value
            pos = v.end()
        elif text[pos] in "[{":
            end = _array_end(text, pos)
            if end is None:
                return None
            pos = end
        else:
            v = _SCALAR.match(text, pos)
            if v is None:
                return None
            pos = v.end()
    if "site" not in tables or not ids or None in ids:
        return None
    return found.get("site", VAR), found.get("storage", ""), ids


def _from_toml(text: str) -> tuple[str, str, list[str]] | None:
    import tomllib  # only for a file the scanner does not follow

    try:
        data = tomllib.loads(text)
    except ValueError:
        return None
    site, storage = data.get("site"), data.get("storage", {})
    nodes = data.get("nodes")
    if not isinstance(site, dict) or not isinstance(storage, dict) or not isinstance(nodes, list):
        return None
    ids = [n.get("id") for n in nodes if isinstance(n, dict)]
    if not all(isinstance(i, str) for i in ids):
        return None
    return site.get("var", VAR), storage.get("path", ""), ids


def _resolve(base: Path, value) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def db_and_nodes(site_file) -> tuple[Path, set[str]] | None:
    """(database path, node ids) of a site file, or None: load it with `load_site` instead."""
    path = Path(site_file).expanduser().absolute()
    try:
        text = path.read_text()
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    keys = _scan(text) or _from_toml(text)
    if keys is None:
        return None
    var_value, db, ids = keys
    var = _resolve(path.parent, var_value)
    if var is None:
        return None
    if db == "":
        return var / DB_FILE, set(ids)
    resolved = _resolve(path.parent, db)
    return (resolved, set(ids)) if resolved is not None else None
