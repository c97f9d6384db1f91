"""Alerts, one model for twin events, node health and analytics: stored (history), and retained on
``<root>/_host/alerts/<node>/<kind>[/<metric>]`` while active (the DESIGN topic contract).

``Alerts.raise_(key, ...)`` stores the alert and publishes it retained; ``clear(key)`` marks it
cleared and publishes an empty retained message, which removes it from the broker. The key is the
topic below ``_host/alerts/`` (``alert_key``): ``<node>/node_stale`` for node health,
``<component>/<event type>`` for the twin, ``<node>/<kind>/<metric>`` for analytics; raising an
active key again changes nothing, and active alerts survive a daemon restart (the store keeps
their key). ``NodeWatch`` turns the registry's view of the fleet into node alerts and
``_host/nodes/<id>`` state; the twin link and analytics (gridtwin.analytics.engine) raise theirs
through the same object. Every raise and clear is counted by kind and severity (/metrics) and handed
to ``listeners`` (the notifier), which must not block.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time

log = logging.getLogger("gridtwin.daemon")
# node alerts a check logs one line each; more go in one line (the alerts themselves are all kept)
SAY_EACH = 5


def alert_key(node: str | None, kind: str, metric: str | None = None) -> str:
    """The topic below ``_host/alerts/`` of one condition: ``<node>/<kind>[/<metric>]``."""
    return "/".join(p for p in (node or "_site", kind.replace("/", "_"), metric) if p)


class Alerts:
    def __init__(self, store, bus):
        self.store, self.bus = store, bus
        self._lock = threading.Lock()  # raised from the maintenance, twin and analytics threads
        try:
            self.active: dict[str, int] = (
                store.active_alert_keys()
            )  # key -> alert id, across restarts
        except Exception:  # a store without the analytics columns (a test double): start empty
            self.active = {}
        self.raised: dict[tuple[str, str], int] = {}  # (kind, severity) -> alerts raised
        self.cleared: dict[tuple[str, str], int] = {}  # (kind, severity) -> alerts cleared
        self._meta: dict[str, tuple[str, str]] = {}  # key -> (kind, severity) of the active alert
        # fn(alert dict with "state": "raised" | "cleared"); must not block
        self.listeners: list = []

    def raise_(
        self,
        key: str,
        severity: str,
        kind: str,
        message: str,
        node: str | None = None,
        metric: str | None = None,
        value: float | None = None,
        detail: dict | None = None,
        ts: int | None = None,
        **extra,
    ) -> int:
        with self._lock:
            if key in self.active:
                return self.active[key]
            ts = int(time.time() * 1000) if ts is None else ts
            aid = self.store.record_alert(
                key, severity, kind, message, node, metric, value, detail, ts
            )
            self.active[key] = aid
            self._meta[key] = (kind, severity)
            self.raised[(kind, severity)] = self.raised.get((kind, severity), 0) + 1
        doc = {
            "id": aid,
            "key": key,
            "severity": severity,
            "kind": kind,
            "node": node,
            "metric": metric,
            "value": value,
            "message": message,
            "ts": ts,
            **({"detail": detail} if detail else {}),
            **extra,
        }
        self.bus.publish_host(f"alerts/{key}", {k: v for k, v in doc.items() if v is not None})
        self._tell({**doc, "state": "raised"})
        return aid

    def clear(self, key: str, ts: int | None = None) -> bool:
        with self._lock:
            aid = self.active.pop(key, None)
            if aid is None:
                return False
            self.store.clear_alert(aid)
            kind, severity = self._meta.pop(key, ("", ""))
            if kind:
                self.cleared[(kind, severity)] = self.cleared.get((kind, severity), 0) + 1
        self.bus.publish_host(f"alerts/{key}", b"")  # an empty retained message clears it
        self._tell(
            {
                "id": aid,
                "key": key,
                "kind": kind,
                "severity": severity,
                "state": "cleared",
                "ts": int(time.time() * 1000) if ts is None else ts,
            }
        )
        return True

    def _tell(self, doc: dict) -> None:
        for fn in self.listeners:
            try:
                fn(doc)
            except Exception:  # a listener's bug never stops the raiser
                log.exception("alert listener failed")

    def counters(self, what: str = "raised") -> dict[str, int]:
        """/metrics: alerts raised (or cleared) since the start, {'{kind="..",severity=".."}':
        n}."""
        table = self.raised if what == "raised" else self.cleared
        return {f'{{kind="{k}",severity="{s}"}}': n for (k, s), n in sorted(table.items())}


class NodeWatch:
    """Publish each node's state when it changes (``_host/nodes/<id>``, retained) and keep an
    alert active while a node that was online is stale or offline.

    Kept by events, not by walking the fleet: ``note(tel, statuses)`` (after each committed batch)
    marks the nodes that spoke, and a heap holds when each online node turns stale if it stays
    silent. ``check()`` looks only at those, so an idle daemon with 10,000 nodes does (almost)
    nothing; the first check walks the fleet once to start from the stored state."""

    def __init__(
        self, store, bus, alerts: Alerts, site=None, stale_intervals: int = 3, heard_until=None
    ):
        self.store, self.bus, self.alerts = store, bus, alerts
        self.site, self.stale_intervals = site, stale_intervals
        # fn(now_ms) -> up to when the daemon has stored everything it received (Ingest's): a node
        # is silent only while the daemon was listening and keeping up. A locked database or a
        # daemon that stalled made every node of the fleet "stale" while their readings waited
        # in the daemon or the broker.
        self.heard_until = heard_until or (lambda now_ms: now_ms)
        self._listening_since = 0  # ms of the last (re)subscribe: relisten()
        self._rearmed_for = 0
        self._site_nodes = {n.id: n for n in site.nodes} if site is not None else {}
        self._states: dict[str, str] = {}
        self._interval: dict[str, float] = {}
        self._due_at: dict[str, int] = {}  # node -> ms when it turns stale if it stays silent
        self._deadlines: list = []  # heap of (due_at, node); entries not in _due_at are stale
        self._seen: dict[
            str, int
        ] = {}  # node -> when its last batch was committed (since the last check)
        self._spoke: set = set()  # nodes that sent a status (birth, will, health)
        self._lock = threading.Lock()
        self._started = False

    def note(self, tel, statuses) -> None:
        """Ingest's batch hook (writer thread): these nodes spoke; look at them at the next
        check."""
        if not tel and not statuses:
            return
        now = int(time.time() * 1000)
        with self._lock:
            for t in tel:
                self._seen[t.node] = now
            for node, _st in statuses:
                self._spoke.add(node)

    @property
    def states(self) -> dict[str, str]:
        """Each node's state as the last check judged it (read-only; empty before the first check,
        and in a daemon instance that does not watch): what the daemon's own views show."""
        return self._states

    def relisten(self, at_ms: int | None = None) -> None:
        """The daemon's session is subscribed again (any thread): whatever a node sent while the
        link was down is still to come from the broker, so an online node's silence counts from
        now, not from its last reading (else every node turned stale at the first check after a
        broker restart, before the broker had sent the backlog)."""
        self._listening_since = int(time.time() * 1000) if at_ms is None else at_ms

    def _rearm(self) -> None:
        since = self._listening_since
        if since <= self._rearmed_for:
            return
        self._rearmed_for = since
        for node, due in self._due_at.items():
            later = since + int(self.stale_intervals * self._interval.get(node, 1000)) + 1
            if later > due:
                self._due_at[node] = later  # its heap entry moves on when it comes up

    def _arm(self, node: str, last_seen: int) -> None:
        due = last_seen + int(self.stale_intervals * self._interval.get(node, 1000)) + 1
        old = self._due_at.get(node)
        if old != due:
            self._due_at[node] = due
            # a later deadline keeps the node's entry in the heap: check() moves it on when it
            # comes up (a node at 1 Hz is re-armed every second: one push per second each was
            # most of this thread's work with 1,000 nodes)
            if old is None or due < old:
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
                    self._arm(node, at)  # still online: only its deadline moves, no database read
                else:
                    due.add(node)
            self._rearm()
            heard = min(now_ms, self.heard_until(now_ms))
            while self._deadlines and self._deadlines[0][0] <= heard:
                at, node = heapq.heappop(self._deadlines)
                later = self._due_at.get(node)
                if later == at:
                    del self._due_at[node]
                    due.add(node)
                elif later is not None and later > at:
                    heapq.heappush(self._deadlines, (later, node))  # re-armed since: wait on
            views = []
            for nid in due:
                sn = self._site_nodes.get(nid)
                views.append(
                    view(
                        nid,
                        self.store.node_row(nid) or {"id": nid},
                        sn,
                        now_ms,
                        self.stale_intervals,
                        in_site=sn is not None or self.site is None,
                    )
                )
        changed, raised, cleared = {}, [], []  # the last two for the log (_say)
        for v in views:
            self._interval[v.id] = v.interval_ms or 1000
            if v.state == "online" and v.last_seen is not None:
                self._arm(v.id, v.last_seen)
            if self._apply(v, now_ms, raised, cleared):
                changed[v.id] = v.state
        self._rearm()  # the first check's deadlines, from a start that is a subscribe too
        _say(raised, cleared)
        return changed

    def _apply(self, v, now_ms: int, raised: list, cleared: list) -> bool:
        """Publish the node's state if it changed, raise or clear its alert; the alert's message
        goes into ``raised`` (the node into ``cleared``) for the check's log."""
        before = self._states.get(v.id)
        if before == v.state:
            return False
        self._states[v.id] = v.state
        if before is None and v.state == "unknown":
            # never heard from: nothing to publish (10,000 of them at a start would be a flood)
            return False
        # the view's fields are plain values: a copy of them, not asdict()'s deep copy (90 ms
        # of the GIL, taken from ingest, when 1,000 nodes went stale at once)
        self.bus.publish_host(f"nodes/{v.id}", {**vars(v), "ts": now_ms})
        keys = [alert_key(v.id, f"node_{s}") for s in ("stale", "offline")]  # one of them at a time
        if (
            v.state in ("stale", "offline")
            and before == "online"
            and not any(k in self.alerts.active for k in keys)
        ):
            message = (
                f"{v.id} is offline (the broker published its will)"
                if v.state == "offline"
                else f"{v.id} has sent nothing for {v.age_s:.0f} s ({self.stale_intervals} "
                "intervals)"
            )
            self.alerts.raise_(
                alert_key(v.id, f"node_{v.state}"), "warning", f"node_{v.state}", message, v.id
            )
            raised.append(message)
        elif v.state == "online" and any([self.alerts.clear(k) for k in keys]):
            cleared.append(v.id)
        return True


def _say(raised: list, cleared: list) -> None:
    """The check's alerts in the log: a line each, or one line for a crowd (a switch that
    fails takes hundreds of nodes at once; a line each was a flood, and its cost came out of
    ingest's share of the GIL)."""
    for level, items, each, crowd, sep in (
        (
            logging.WARNING,
            raised,
            "alert: %s",
            "alert: %d nodes stopped sending at once (`gridtwin alerts` lists them): %s; ...",
            "; ",
        ),
        (
            logging.INFO,
            cleared,
            "alert cleared: %s is online again",
            "alert cleared: %d nodes are online again: %s, ...",
            ", ",
        ),
    ):
        if len(items) <= SAY_EACH:
            for item in items:
                log.log(level, each, item)
        else:
            log.log(level, crowd, len(items), sep.join(items[:SAY_EACH]))
