"""How `gridtwin query` and `gridtwin tail` name an OPC UA point: its ISA-95 machine is the node,
its tag the metric (``gridtwin query inv1 Power_Active``), the names the collector stores and the
daemon hands to analytics and `tail` (gridtwin/opcua/service.py). A site node of the same name keeps
its own metrics: a tag is read from the OPC UA points only when the node has no such reading.
"""

from __future__ import annotations

from pathlib import Path


class PointView:
    """A store's OPC UA points with the two calls `query` makes of readings (``query``,
    ``rollups``): numbers only (a Boolean as 0/1, text left out), BAD points (no value) left out."""

    def __init__(self, store):
        self.store = store

    def query(self, node: str, metric: str, since_ms: int, until_ms: int) -> list[tuple]:
        until_ns = until_ms * 1_000_000
        return [
            (ts // 1_000_000, float(v))
            for *_p, ts, v, _text, _unit, _q in self.store.opcua_points(
                node, metric, since_ns=since_ms * 1_000_000
            )
            if v is not None and ts < until_ns
        ]

    def rollups(self, node: str, metric: str, since_ms: int, until_ms: int) -> list:
        return []  # OPC UA points are kept raw


def is_machine(site, name: str, db: Path | None = None) -> bool:
    """`name` is an OPC UA machine: one a [[opcua.sources]] mapping names, or one with stored
    points."""
    for src in site.opcua.sources:
        for pt in src.get("points") or ():
            if pt["path"].rsplit("/", 1)[-1] == name:
                return True
    if db is None or not Path(db).exists():
        return False
    from gridtwin.daemon.store_sqlite import SqliteStore

    store = SqliteStore(db)
    try:
        return bool(store.opcua_tags(name))
    finally:
        store.close()
