"""The fleet at a glance: online/offline from birth and will, stale from missed intervals.

The daemon writes what it learns into the ``nodes`` table (status fields on each birth/will,
``last_seen`` on every batch); this module turns a row into a view. It reads only the database,
so ``gridtwin nodes`` works whether or not the daemon is running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class NodeView:
    id: str
    state: str  # online | offline | stale | unknown (never heard from)
    last_seen: int | None
    age_s: float | None
    fw: str | None = None
    board: str | None = None
    rssi: float | None = None
    heap: float | None = None
    reset: str | None = None
    outbox: float | None = None
    drops: float | None = None
    uptime: float | None = None
    in_site: bool = True
    # messages of the node the daemon refused (store columns, if present)
    rejected: int | None = None
    last_reject: str | None = None  # "reason: detail" of the last one
    last_reject_at: int | None = None  # host ms
    interval_ms: float | None = None  # its sample interval: stale after stale_intervals of them


def node_state(row: dict, interval_ms: float, now_ms: int, stale_intervals: int = 3) -> str:
    last = row.get("last_seen")
    if row.get("state") is None and last is None:
        return "unknown"
    if row.get("state") == "offline":
        return "offline"  # the broker published the will: the connection is gone
    if last is None or now_ms - last > stale_intervals * interval_ms:
        return "stale"  # connected (no will yet) but silent for too long: hung, or lost power
    return "online"


def interval_of(row: dict, sn=None) -> float:
    """The node's sample interval in ms: the site's, else what its birth said, else 1 s."""
    return (sn.interval_ms if sn is not None else None) or row.get("interval") or 1000


def view(
    nid: str,
    row: dict,
    sn,
    now_ms: int,
    stale_intervals: int = 3,
    in_site: bool = True,
    state: str | None = None,
) -> NodeView:
    """One node's view from its ``nodes`` row and its site entry (``sn``, or None); ``state``:
    the daemon's judgment of it, when there is one (see ``fleet``)."""
    last = row.get("last_seen")
    return NodeView(
        id=nid,
        state=state or node_state(row, interval_of(row, sn), now_ms, stale_intervals),
        last_seen=last,
        age_s=None if last is None else max(0.0, (now_ms - last) / 1000),
        fw=row.get("fw"),
        board=row.get("board") or (sn.board if sn is not None else None),
        rssi=row.get("rssi"),
        heap=row.get("heap"),
        reset=row.get("reset"),
        outbox=row.get("outbox"),
        drops=row.get("drops"),
        uptime=row.get("uptime"),
        in_site=in_site,
        rejected=row.get("rejected"),
        last_reject=row.get("last_reject"),
        last_reject_at=row.get("last_reject_at"),
        interval_ms=interval_of(row, sn),
    )


def fleet(
    store,
    site=None,
    now_ms: int | None = None,
    stale_intervals: int = 3,
    rows=None,
    judged=None,
) -> list[NodeView]:
    """Every node's view: the site's nodes in site order, then nodes only the database knows.
    ``rows``: the ``nodes`` table as ``{id: row}``, when the caller has read it already.
    ``judged``: ``{id: state}`` of the running daemon's node watch (``NodeWatch.states``), which
    takes precedence: only the daemon knows whether a node's silence is its own or the daemon's (a
    broker restart, readings waiting behind a locked database); the table alone says stale."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    site_nodes = {n.id: n for n in site.nodes} if site is not None else {}
    rows = {r["id"]: r for r in store.nodes()} if rows is None else rows
    judged = judged or {}
    return [
        view(
            nid,
            rows.get(nid, {"id": nid}),
            site_nodes.get(nid),
            now_ms,
            stale_intervals,
            in_site=nid in site_nodes or site is None,
            state=judged.get(nid),
        )
        for nid in list(site_nodes) + sorted(set(rows) - set(site_nodes))
    ]


# What to do about a node's rejected messages, by reason (the validator's labels); the rest: the
# log.
REJECT_FIXES = {
    "ts_window": "its clock is off: a node sets it by SNTP from [network] ntp (default: the broker "
    "host, where `gridtwin daemon` answers on udp/123; see docs/security.md, 'The nodes' time')",
}


def reject_note(v: NodeView, now_ms: int | None = None, recent_s: float = 120.0) -> str | None:
    """A sentence when the node's messages are being rejected (the last one within recent_s), else
    None."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not v.rejected or v.last_reject_at is None or now_ms - v.last_reject_at > recent_s * 1000:
        return None
    reason = (v.last_reject or "?").split(":", 1)[0]
    fix = REJECT_FIXES.get(
        reason, "the daemon's log has one line per rejection (`journalctl -u gridtwin-daemon`)"
    )
    return (
        f"{v.id}: its readings are being rejected ({v.rejected} so far, the last "
        f"{max(0, now_ms - v.last_reject_at) / 1000:.0f} s ago: {v.last_reject}); {fix}"
    )
