"""Alerts: stored (history), and retained on ``<root>/_host/alerts/<key>`` while active.

``Alerts.raise_(key, ...)`` stores the alert and publishes it retained; ``clear(key)`` marks it
cleared and publishes an empty retained message, which removes it from the broker. Keys name
what the alert is about (``node_<id>``, ``twin_<component>_<type>``), so raising an active key
again changes nothing. ``NodeWatch`` turns the registry's view of the fleet into node alerts
and ``_host/nodes/<id>`` state; the twin link raises its events through the same object.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
import time

log = logging.getLogger("gridtwin.daemon")


class Alerts:
    def __init__(self, store, bus):
        self.store, self.bus = store, bus
        self.active: dict[str, int] = {}   # key -> alert id

    def raise_(self, key: str, severity: str, kind: str, message: str, node: str | None = None, **extra) -> int:
        if key in self.active:
            return self.active[key]
        aid = self.store.raise_alert(severity, kind, message, node)
        self.active[key] = aid
        self.bus.publish_host(f"alerts/{key}", {"id": aid, "severity": severity, "kind": kind, "node": node,
                                               "message": message, "ts": int(time.time() * 1000), **extra})
        return aid

    def clear(self, key: str) -> bool:
        aid = self.active.pop(key, None)
        if aid is None:
            return False
        self.store.clear_alert(aid)
        self.bus.publish_host(f"alerts/{key}", b"")  # an empty retained message clears it
        return True


class NodeWatch:
    """Publish each node's state when it changes (``_host/nodes/<id>``, retained) and keep an
    alert active while a node that was online is stale or offline.

    Kept by events, not by walking the fleet: ``note(tel, statuses)`` (after each committed batch)
    marks the nodes that spoke, and a heap holds when each online node turns stale if it stays
    silent. ``check()`` looks only at those, so an idle daemon with 10,000 nodes does (almost)
    nothing; the first check walks the fleet once to start from the stored state."""

    def __init__(self, store, bus, alerts: Alerts, site=None, stale_intervals: int = 3):
        self.store, self.bus, self.alerts = store, bus, alerts
        self.site, self.stale_intervals = site, stale_intervals
        self._site_nodes = {n.id: n for n in site.nodes} if site is not None else {}
        self._states: dict[str, str] = {}
        self._interval: dict[str, float] = {}
        self._due_at: dict[str, int] = {}   # node -> ms when it turns stale if it stays silent
        self._deadlines: list = []          # heap of (due_at, node); entries not in _due_at are stale
        self._seen: dict[str, int] = {}     # node -> when its last batch was committed (since the last check)
        self._spoke: set = set()            # nodes that sent a status (birth, will, health)
        self._lock = threading.Lock()
        self._started = False

    def note(self, tel, statuses) -> None:
        """Ingest's batch hook (writer thread): these nodes spoke; look at them at the next check."""
        if not tel and not statuses:
            return
        now = int(time.time() * 1000)
        with self._lock:
            for t in tel:
                self._seen[t.node] = now
            for node, _st in statuses:
                self._spoke.add(node)

    def _arm(self, node: str, last_seen: int) -> None:
        due = last_seen + int(self.stale_intervals * self._interval.get(node, 1000)) + 1
        if self._due_at.get(node) != due:
            self._due_at[node] = due
            heapq.heappush(self._deadlines, (due, node))

    def check(self, now_ms: int | None = None) -> dict[str, str]:
        from gridtwin.daemon.registry import fleet, view

        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if not self._started:
            self._started = True
            views = fleet(self.store, self.site, now_ms, self.stale_intervals)
        else:
            with self._lock:
                seen, self._seen = self._seen, {}
                due, self._spoke = self._spoke, set()
            for node, at in seen.items():
                if self._states.get(node) == "online" and node not in due:
                    self._arm(node, at)   # still online: only its deadline moves, no database read
                else:
                    due.add(node)
            while self._deadlines and self._deadlines[0][0] <= now_ms:
                at, node = heapq.heappop(self._deadlines)
                if self._due_at.get(node) == at:
                    del self._due_at[node]
                    due.add(node)
            views = []
            for nid in due:
                sn = self._site_nodes.get(nid)
                views.append(view(nid, self.store.node_row(nid) or {"id": nid}, sn, now_ms, self.stale_intervals,
                                  in_site=sn is not None or self.site is None))
        changed = {}
        for v in views:
            self._interval[v.id] = v.interval_ms or 1000
            if v.state == "online" and v.last_seen is not None:
                self._arm(v.id, v.last_seen)
            if self._apply(v, now_ms):
                changed[v.id] = v.state
        return changed

    def _apply(self, v, now_ms: int) -> bool:
        before = self._states.get(v.id)
        if before == v.state:
            return False
        self._states[v.id] = v.state
        if before is None and v.state == "unknown":
            return False  # never heard from: nothing to publish (10,000 of them at a start would be a flood)
        self.bus.publish_host(f"nodes/{v.id}", {**dataclasses.asdict(v), "ts": now_ms})
        key = f"node_{v.id}"
        if v.state in ("stale", "offline") and before == "online" and key not in self.alerts.active:
            message = (f"{v.id} is offline (the broker published its will)" if v.state == "offline"
                       else f"{v.id} has sent nothing for {v.age_s:.0f} s ({self.stale_intervals} intervals)")
            self.alerts.raise_(key, "warning", f"node_{v.state}", message, v.id)
            log.warning("alert: %s", message)
        elif v.state == "online" and self.alerts.clear(key):
            log.info("alert cleared: %s is online again", v.id)
        return True
