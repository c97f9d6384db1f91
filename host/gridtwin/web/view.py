"""The web view: pages for the fleet, a node, the twin and alerts, live by server-sent events.

Served by the daemon's own HTTP server (``metrics.MetricsServer``) next to /healthz and /metrics,
so it is there whenever the daemon is, with nothing else to install: ``WebView.for_daemon(daemon)
.routes()`` adds

- ``GET /ui/`` (one HTML page; the fragment picks the view: ``#/``, ``#/node/<id>``, ``#/twin``,
  ``#/alerts``, ``#/energy``) and its assets ``/ui/<file>``, all from ``gridtwin/web/static/`` in
  the package (a Pi on a plant network has no internet: no CDN);
- ``GET /api/ui/{fleet,node,series,twin,alerts,energy}``: JSON read from the store (and the twin's
last
  state), the same facts ``gridtwin nodes|query|logs|alerts`` print;
- ``GET /api/ui/events``: server-sent events. ``reading`` (each node's newest values of a committed
  batch), ``twin`` (the twin's state as published on ``<root>/_host/twin``), ``changed`` (``fleet``,
  ``commands``, ``alerts``: the page fetches that part again). A client's queue is bounded: a slow
  page loses events, never slows ingest. ``retry: 1000`` and a ``hello`` carrying the daemon's start
  time let the page reconnect after a daemon restart and reload what it shows.

Who may look: on the daemon's server these routes answer clients on loopback only (it may listen
beyond loopback for Prometheus: [daemon] metrics_host); a client from another address gets 403
naming why. Beyond loopback the view is served by gridtwin.web.remote: HTTPS with the site PKI's
server certificate and a login ([web] host).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import threading
import time
from importlib import resources

log = logging.getLogger("gridtwin.web")

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "login.html": "text/html; charset=utf-8",
}
SERIES_POINTS = 600  # a chart gets at most this many points (bucket means beyond)
HEARTBEAT_S = 15.0  # an idle stream sends a comment this often: a gone page is noticed
CLIENT_QUEUE = 2000  # events waiting per page before it loses some
BUTTONS = (
    "ping",
    "identify",
)  # the commands a node page offers a logged-in user (HTTPS only: remote.py)


def is_loopback(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return False
    return ip.is_loopback or (
        ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback
    )


def _json(doc, code: int = 200):
    return code, "application/json", json.dumps(doc, separators=(",", ":"), default=str).encode()


def _int(query: dict, key: str, default=None):
    raw = query.get(key)
    if raw in (None, ""):
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise ValueError(f"{key} must be a number of ms, not {raw!r}") from None


def downsample(points: list, n: int = SERIES_POINTS) -> list:
    """At most ``n`` (ts, value) points: means of equal-count buckets, so a chart stays light."""
    if len(points) <= n:
        return [[t, v] for t, v in points]
    step = len(points) / n
    out = []
    for i in range(n):
        chunk = (
            points[int(i * step) : int((i + 1) * step)] or points[int(i * step) : int(i * step) + 1]
        )
        out.append([chunk[len(chunk) // 2][0], sum(v for _t, v in chunk) / len(chunk)])
    return out


class WebView:
    def __init__(self, store, *, site=None, stale_intervals: int = 3, stopping=lambda: False):
        self.store, self.site, self.stale_intervals, self.stopping = (
            store,
            site,
            stale_intervals,
            stopping,
        )
        self.dispatcher = None  # the daemon's: the command buttons of a logged-in user (remote.py)
        # fn() -> the daemon's node watch states or None (registry.fleet's ``judged``)
        self.judged = lambda: None
        self.started = int(time.time() * 1000)  # the page reloads what it shows when this changes
        self.twin: dict = {}  # the twin's last state document, as published
        self.twin_at: int | None = None
        self._clients: set = set()
        self._lock = threading.Lock()
        self.lost = 0  # events a slow page did not get
        self._static = {
            name: resources.files("gridtwin.web").joinpath("static", name).read_bytes()
            for name in STATIC
        }

    @classmethod
    def for_daemon(cls, daemon) -> "WebView":
        """The view of a ``service.Daemon``: fed after each committed batch, by node status and ack
        batches, by alerts, and by the twin's state on ``<root>/_host/twin`` (the twin may run in
        this process, ``gridtwin daemon --twin`` and the demo, or anywhere else on the bus)."""
        web = cls(
            daemon.store,
            site=daemon.site,
            stale_intervals=daemon.stale_intervals,
            stopping=lambda: daemon.metrics.stopping,
        )
        web.dispatcher = daemon.dispatcher
        web.judged = daemon.judged_states  # the daemon's judgment of each node's silence
        daemon.on_readings(web.on_readings)
        daemon.ingest.batch_hooks.append(web.on_batch)
        daemon.alerts.listeners.append(web.on_alert)
        bus, topic = daemon.bus, f"{daemon.bus.root}/_host/twin"
        inner = bus.sink

        def sink(messages):  # paho's thread: one comparison for every other message
            for m in messages:
                if m[3] == topic:
                    web.on_twin(m[4])
            inner(messages)

        bus.sink = sink
        # a twin in this process publishes through the daemon's session, which the broker does
        # not send its own messages back to (No Local): it is heard here instead
        bus.published.append(lambda t, payload: web.on_twin(payload) if t == topic else None)
        return web

    # -- what the daemon tells us -----------------------------------------------------------------
    def _send(self, event: str, data) -> None:
        if not self._clients:
            return
        chunk = (
            f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
        ).encode()
        for q in list(self._clients):
            try:
                q.put_nowait(chunk)
            except queue.Full:
                self.lost += 1

    def on_readings(self, tel) -> None:
        if not self._clients or not tel:
            return
        newest: dict = {}
        for t in tel:
            if not t.hist and (t.node not in newest or t.ts >= newest[t.node]["ts"]):
                newest[t.node] = {"node": t.node, "ts": t.ts, "m": t.m}
        if newest:
            self._send(
                "reading", {"at": int(time.time() * 1000), "readings": list(newest.values())}
            )

    def on_batch(self, statuses, acks) -> None:
        if statuses:
            self._send("changed", {"what": "fleet", "nodes": sorted({n for n, _s in statuses})})
        if acks:
            self._send("changed", {"what": "commands", "nodes": sorted({n for n, _a in acks})})

    def on_alert(self, alert: dict) -> None:
        self._send("changed", {"what": "alerts"})

    def on_twin(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload) if payload else {}
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        self.twin, self.twin_at = doc, int(time.time() * 1000)
        self._send("twin", doc)

    # -- routes ------------------------------------------------------------------------------------
    def static(self, name: str) -> bytes:
        return self._static[name]

    def routes(self, remote: bool = False) -> dict:
        """``{(method, path): fn}``; ``remote``: for gridtwin.web.remote (HTTPS and a login),
        without the loopback check."""
        r = {("GET", "/"): self.root, ("GET", "/ui"): self.root, ("GET", "/ui/"): self.page}
        for name in STATIC:
            if name != "login.html":  # the HTTPS server's (remote.py), not a page of its own here
                r[("GET", f"/ui/{name}")] = self._asset(name)
        for name, fn in (
            ("fleet", self.fleet),
            ("node", self.node),
            ("series", self.series),
            ("twin", self.twin_view),
            ("alerts", self.alerts),
            ("energy", self.energy),
            ("events", self.events),
        ):
            r[("GET", f"/api/ui/{name}")] = fn
        return {k: self._guard(v, remote) for k, v in r.items()}

    def _guard(self, fn, remote: bool = False):
        def route(handler, query, body):
            if not remote and not is_loopback(handler.client_address[0]):
                return _json(
                    {
                        "error": "the web view answers on this host only (loopback)",
                        "hint": "set [web] host to serve it over HTTPS with a login "
                        "(docs/web.md), or open it through `ssh -L 9810:127.0.0.1:9810 HOST`",
                    },
                    403,
                )
            try:
                return fn(handler, query, body)
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)

        return route

    def root(self, handler, query, body):
        handler.send_response(302)
        handler.send_header("Location", "/ui/")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return None

    def page(self, handler, query, body):
        return 200, STATIC["index.html"], self._static["index.html"]

    def _asset(self, name):
        return lambda handler, query, body: (200, STATIC[name], self._static[name])

    def _fleet_rows(self, now_ms: int) -> list[dict]:
        from gridtwin.daemon.registry import fleet

        rows = {r["id"]: r for r in self.store.nodes()}  # read once, for the views and the rest
        out = []
        for v in fleet(self.store, self.site, now_ms, self.stale_intervals, rows, self.judged()):
            r = rows.get(v.id, {})
            out.append(
                {
                    "id": v.id,
                    "state": v.state,
                    "last_seen": v.last_seen,
                    "age_s": v.age_s,
                    "rssi": v.rssi,
                    "heap": v.heap,
                    "heap_min": r.get("heap_min"),
                    "fw": v.fw,
                    "board": v.board,
                    "drops": v.drops,
                    "outbox": v.outbox,
                    "uptime": v.uptime,
                    "rejected": v.rejected,
                    "role": self._role(v.id),
                }
            )
        return out

    def _role(self, node: str):
        if self.site is None:
            return None
        return next((n.role for n in self.site.nodes if n.id == node), None)

    def fleet(self, handler, query, body):
        now = int(time.time() * 1000)
        return _json({"now": now, "started": self.started, "nodes": self._fleet_rows(now)})

    def _units(self, node: str) -> dict:
        if self.site is None:
            return {}
        from gridtwin.catalog import node_metrics

        n = next((n for n in self.site.nodes if n.id == node), None)
        return (
            {}
            if n is None
            else {
                k: {"unit": m.unit, "description": m.description, "source": m.source}
                for k, m in node_metrics(n).items()
            }
        )

    def node(self, handler, query, body):
        nid = query.get("id") or ""
        now = int(time.time() * 1000)
        row = next((r for r in self._fleet_rows(now) if r["id"] == nid), None)
        if row is None:
            return _json({"error": f"no node {nid!r} in this site or its database"}, 404)
        latest = self.store.latest(nid)
        ts, values = latest if latest else (None, {})
        units = self._units(nid)
        metrics = [
            {
                "name": k,
                "value": values.get(k),
                "ts": ts if k in values else None,
                **units.get(k, {"unit": "", "description": ""}),
            }
            for k in list(units) + sorted(set(values) - set(units))
        ]
        logs = self.store.node_logs(nid, limit=50)
        cmds = self.store.commands(nid, limit=20)
        # buttons only for a user logged in over HTTPS (remote.py sets handler.user); loopback is
        # read-only
        buttons = (
            list(BUTTONS) if getattr(handler, "user", None) and self.dispatcher is not None else []
        )
        return _json(
            {
                "now": now,
                "started": self.started,
                "node": row,
                "metrics": metrics,
                "logs": logs,
                "commands": cmds,
                "buttons": buttons,
            }
        )

    def command(self, node: str, cmd: str):
        """A node page's button (remote.py, logged in): the command through the daemon's dispatcher,
        answered with its ack, or the error `gridtwin cmd` would print."""
        from gridtwin.daemon.api import status_of
        from gridtwin.errors import GridTwinError

        if cmd not in BUTTONS:
            return _json(
                {
                    "error": f"the web view sends only {', '.join(BUTTONS)}, not {cmd!r}",
                    "hint": "use `gridtwin cmd` for the others",
                },
                400,
            )
        if self.dispatcher is None:
            return _json({"error": "no daemon behind this view to send commands"}, 503)
        try:
            ack = self.dispatcher.send(node, cmd, {}, timeout=10, ttl=0)
        except GridTwinError as exc:
            return _json({"error": exc.message, "hint": exc.hint}, status_of(exc))
        return _json({"ack": ack})

    def series(self, handler, query, body):
        nid, metric = query.get("node") or "", query.get("metric") or ""
        if not nid or not metric:
            raise ValueError("series needs ?node=ID&metric=NAME")
        now = int(time.time() * 1000)
        until = _int(query, "until", now)
        since = _int(query, "since", until - 3600_000)
        pts = [
            (t, v)
            for t, v in self.store.query(nid, metric, since, until)
            if isinstance(v, (int, float))
        ]
        return _json(
            {
                "node": nid,
                "metric": metric,
                "since": since,
                "until": until,
                "n": len(pts),
                "points": downsample(pts),
            }
        )

    def twin_view(self, handler, query, body):
        from gridtwin.twin.engine import unit_of

        comps = (self.twin or {}).get("components") or {}
        topo = []
        if self.site is not None:
            try:
                from gridtwin.twin import topology

                topo = [
                    {"id": c.id, "kind": c.kind, "parents": list(c.parents), "node": c.node}
                    for c in topology.of(self.site).components
                ]
            except Exception:  # a site without a twin section: the state's components, unlinked
                topo = []
        if not topo:
            topo = [
                {"id": cid, "kind": c.get("kind"), "parents": [], "node": None}
                for cid, c in comps.items()
            ]
        names = {k for c in comps.values() for k in (c.get("m") or {})}
        return _json(
            {
                "t": (self.twin or {}).get("t"),
                "at": self.twin_at,
                "topology": topo,
                "components": comps,
                "units": {k: unit_of(k) for k in sorted(names) if unit_of(k)},
                "started": self.started,
            }
        )

    def alerts(self, handler, query, body):
        return _json(
            {
                "active": self.store.alerts(active=True),
                "history": self.store.alerts(limit=200),
                "started": self.started,
            }
        )

    def energy(self, handler, query, body):
        """The energy KPIs (gridtwin.analytics.kpi) since ``since`` (default: 24 h): per node and
        for the site (node ""), energies and volumes summed over the buckets, peaks the highest, the
        rest (means, ratios, shares, PUE) the latest bucket's."""
        now = int(time.time() * 1000)
        since = _int(query, "since", now - 86400_000)
        out: dict = {}
        last = None
        for bucket, node, kpi, value in self.store.kpis(since):
            if value is None:
                continue
            last = bucket if last is None else max(last, bucket)
            row = out.setdefault(node or "", {})
            if kpi.endswith(("_kwh", "_nm3")):
                row[kpi] = row.get(kpi, 0.0) + value
            elif kpi.startswith("peak"):
                row[kpi] = max(row.get(kpi, value), value)
            else:
                row[kpi] = value  # oldest first: the latest bucket's stays
        site = out.pop("", {})
        return _json(
            {
                "since": since,
                "last_bucket": last,
                "site": site,
                "nodes": [{"id": n, **v} for n, v in sorted(out.items())],
                "started": self.started,
            }
        )

    def events(self, handler, query, body):
        q: queue.Queue = queue.Queue(maxsize=CLIENT_QUEUE)
        handler.close_connection = True
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Cache-Control", "no-store")
            handler.send_header("Connection", "close")
            handler.end_headers()
            hello = {"started": self.started, "now": int(time.time() * 1000)}
            handler.wfile.write(
                f"retry: 1000\nevent: hello\ndata: {json.dumps(hello)}\n\n".encode()
            )
            handler.wfile.flush()
            with self._lock:
                self._clients.add(q)
            last = time.monotonic()
            while not self.stopping():
                try:
                    chunk = q.get(timeout=0.5)
                except queue.Empty:
                    if time.monotonic() - last < HEARTBEAT_S:
                        continue
                    chunk = b": ping\n\n"
                handler.wfile.write(chunk)
                handler.wfile.flush()
                last = time.monotonic()
        except OSError:
            pass  # the page went away
        finally:
            with self._lock:
                self._clients.discard(q)
        return None
