"""Alerts: stored (history), and retained on ``<root>/_host/alerts/<key>`` while active.

``Alerts.raise_(key, ...)`` stores the alert and publishes it retained; ``clear(key)`` marks it
cleared and publishes an empty retained message, which removes it from the broker. Keys name
what the alert is about (``node_<id>``, ``twin_<component>_<type>``), so raising an active key
again changes nothing. ``NodeWatch`` turns the registry's view of the fleet into node alerts
and ``_host/nodes/<id>`` state; the twin link raises its events through the same object.
"""

from __future__ import annotations

import dataclasses
import logging
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
    alert active while a node that was online is stale or offline."""

    def __init__(self, store, bus, alerts: Alerts, site=None, stale_intervals: int = 3):
        self.store, self.bus, self.alerts = store, bus, alerts
        self.site, self.stale_intervals = site, stale_intervals
        self._states: dict[str, str] = {}

    def check(self, now_ms: int | None = None) -> dict[str, str]:
        from gridtwin.daemon.registry import fleet

        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        changed = {}
        for v in fleet(self.store, self.site, now_ms, self.stale_intervals):
            before = self._states.get(v.id)
            if before == v.state:
                continue
            self._states[v.id] = changed[v.id] = v.state
            self.bus.publish_host(f"nodes/{v.id}", {**dataclasses.asdict(v), "ts": now_ms})
            key = f"node_{v.id}"
            if v.state in ("stale", "offline") and before == "online" and key not in self.alerts.active:
                message = (f"{v.id} is offline (the broker published its will)" if v.state == "offline"
                           else f"{v.id} has sent nothing for {v.age_s:.0f} s ({self.stale_intervals} intervals)")
                self.alerts.raise_(key, "warning", f"node_{v.state}", message, v.id)
                log.warning("alert: %s", message)
            elif v.state == "online" and self.alerts.clear(key):
                log.info("alert cleared: %s is online again", v.id)
        return changed
