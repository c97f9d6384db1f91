"""Counters of the daemon and the HTTP endpoints that expose them: /healthz and /metrics.

Counters are plain ints bumped by one thread each (the ingest writer), read by the HTTP thread;
a torn read of a Python int cannot happen, so no lock is needed on the hot path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

from gridtwin.daemon.httpserver import BoundedHTTPServer

log = logging.getLogger("gridtwin.daemon.http")


class Metrics:
    def __init__(self):
        self.received = 0
        self.stored = 0
        # messages ingest made durable (stored, or spilled as received) and so acknowledged; and
        # those of them spilled (ingest.py): stored later, in order
        self.durable = 0
        self.spilled = 0
        self.duplicates = 0
        self.gaps = 0  # confirmed gaps: seq jumps within a boot that replay did not fill
        self.missing = 0  # messages still missing in those gaps
        self.rejected: Counter = Counter()  # reason -> count
        self.batches = 0
        self.store_errors = 0
        self.last_lag_ms = 0  # now - ts of the newest live (non-replayed) reading stored
        self.link = None  # the bus: connected / subscribed are its state, read here
        self.started = time.time()
        self.gauges = {}  # name -> callable returning a number (spool depth, nodes online, ...)
        self.node_gauges = None  # callable -> [(node, {name: value})] for per-node gauges
        self.threads: list = []  # worker threads that must be alive while the daemon runs
        self.health_parts = {}  # name -> callable: more of /healthz (e.g. OPC UA sources' state)
        self.stopping = False

    def watch(self, thread) -> None:
        self.threads.append(thread)

    def dead_threads(self) -> list[str]:
        return [] if self.stopping else [t.name for t in self.threads if not t.is_alive()]

    @property
    def connected(self) -> bool:
        return bool(self.link and self.link.connected)

    @property
    def subscribed(self) -> bool:
        return bool(self.link and self.link.subscribed)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def prometheus(self) -> str:
        out = []

        def metric(name, kind, help_text, samples):
            out.append(f"# HELP gridtwin_{name} {help_text}")
            out.append(f"# TYPE gridtwin_{name} {kind}")
            for labels, value in samples:
                out.append(f"gridtwin_{name}{labels} {value}")

        metric(
            "received_total", "counter", "MQTT messages received by ingest", [("", self.received)]
        )
        metric("stored_total", "counter", "telemetry messages stored (new)", [("", self.stored)])
        metric(
            "durable_total",
            "counter",
            "messages made durable and acknowledged (stored, or spilled to be stored in order)",
            [("", self.durable)],
        )
        metric(
            "spilled_total",
            "counter",
            "messages kept as received while ingest caught up with a backlog",
            [("", self.spilled)],
        )
        metric(
            "duplicates_total",
            "counter",
            "telemetry messages already stored (QoS 1 redelivery, replays)",
            [("", self.duplicates)],
        )
        metric(
            "rejected_total",
            "counter",
            "messages that broke the payload contract, by reason",
            [(f'{{reason="{r}"}}', n) for r, n in sorted(self.rejected.items()) if n],
        )
        metric(
            "gaps_total",
            "counter",
            "seq gaps within a boot still open once replay had its chance",
            [("", self.gaps)],
        )
        metric("missing_total", "counter", "messages missing in those gaps", [("", self.missing)])
        metric(
            "batches_total",
            "counter",
            "ingest transactions committed (received / batches: messages per commit)",
            [("", self.batches)],
        )
        metric(
            "store_errors_total",
            "counter",
            "failed storage transactions (retried)",
            [("", self.store_errors)],
        )
        metric(
            "ingest_lag_seconds",
            "gauge",
            "now minus ts of the newest live reading stored",
            [("", self.last_lag_ms / 1000)],
        )
        metric(
            "mqtt_connected",
            "gauge",
            "1 while connected to the broker",
            [("", int(self.connected))],
        )
        for name, fn in sorted(self.gauges.items()):
            try:
                value = fn()
            except Exception:  # a gauge must never break /metrics
                continue
            if isinstance(value, dict):  # labelled samples: {'{kind="limit",severity="high"}': n}
                metric(name, "gauge", name.replace("_", " "), sorted(value.items()))
            elif value is not None:
                metric(name, "gauge", name.replace("_", " "), [("", value)])
        if self.node_gauges:
            try:
                rows = self.node_gauges()
            except Exception:  # a gauge must never break /metrics
                rows = []
            by_name: dict = {}
            for node, values in rows:
                for name, value in values.items():
                    if value is not None:
                        by_name.setdefault(name, []).append((f'{{node="{node}"}}', value))
            for name, (help_text, samples) in sorted(
                (n, (NODE_GAUGES.get(n, n), v)) for n, v in by_name.items()
            ):
                metric(f"node_{name}", "gauge", help_text, samples)
        return "\n".join(out) + "\n"

    def health(self) -> tuple[bool, dict]:
        dead = self.dead_threads()
        ok = self.subscribed and self.store_errors_recent() == 0 and not dead
        info = {
            "ok": ok,
            "mqtt_connected": self.connected,
            "subscribed": self.subscribed,
            "received": self.received,
            "stored": self.stored,
            "durable": self.durable,
            "rejected": self.rejected_total,
            "uptime_s": round(time.time() - self.started, 1),
        }
        for name, fn in self.health_parts.items():
            try:
                info[name] = fn()
            except Exception:  # a part must never break /healthz
                pass
        if dead:
            info["dead_threads"] = dead
        return ok, info

    _last_error_at = 0.0

    def store_error(self) -> None:
        self.store_errors += 1
        self._last_error_at = time.time()

    def store_errors_recent(self) -> int:
        return int(time.time() - self._last_error_at < 30)


# per-node gauges on /metrics (gridtwin_node_<name>{node="..."}) for Prometheus users
NODE_GAUGES = {
    "online": "1 while the node is online (birth seen, no will since, not stale)",
    "last_seen_seconds": "seconds since the node's last message",
    "rssi_dbm": "Wi-Fi signal strength the node reported last",
    "heap_free_bytes": "free heap the node reported last",
    "heap_min_bytes": "lowest free heap since the node's boot",
    "outbox": "readings waiting in the node's outbox",
    "drops": "readings the node dropped (outbox full) since its boot",
    "rejected": "messages of the node the daemon refused",
}


class MetricsServer:
    """The daemon's local HTTP server: /healthz (200 or 503, JSON), /metrics (Prometheus text),
    plus routes the daemon adds (``routes[(method, path)] = fn(handler, query, body)``).

    A route returns ``(code, content_type, bytes)`` or ``None`` when it wrote the response itself
    (streaming). Routes marked private need the token the daemon writes to ``var/daemon.token``
    (mode 600): /metrics may be scraped by anyone on the host, commands may not.
    """

    # A local API, but every local user can reach it: the token is checked before the body is
    # read, bodies are small, a client that stalls is cut off, and connections are bounded.
    MAX_BODY = 64 * 1024
    TIMEOUT_S = 10.0
    MAX_CONNECTIONS = 64

    def __init__(
        self,
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = 9810,
        routes=None,
        token: str | None = None,
        private=(),
        timeout: float | None = None,
        max_connections: int | None = None,
    ):
        m, routes, private = metrics, dict(routes or {}), set(private)
        max_body = self.MAX_BODY
        self.refused = 0
        io_timeout = self.TIMEOUT_S if timeout is None else timeout

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = io_timeout  # per socket operation: a client that stalls is cut off

            def _reply(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method):
                from urllib.parse import parse_qs, urlsplit

                parts = urlsplit(self.path)
                path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
                self.close_connection = True  # one request per connection: nothing lingers
                if path in private and self.headers.get("Authorization") != f"Bearer {token}":
                    # before the body: an unauthenticated client cannot make us read (or wait for)
                    # it
                    return self._reply(
                        401, "application/json", b'{"error": "missing or wrong daemon token"}'
                    )
                raw_length = self.headers.get("Content-Length") or "0"
                if not raw_length.isdigit():
                    return self._reply(400, "application/json", b'{"error": "bad Content-Length"}')
                length = int(raw_length)
                if length > max_body:
                    return self._reply(413, "application/json", b'{"error": "body too large"}')
                try:
                    body = self.rfile.read(length) if length else b""
                except OSError:  # stalled past the timeout, or reset
                    return None
                if len(body) != length:
                    return None  # the client went away or stalled past the timeout
                if method == "GET" and path == "/metrics":
                    return self._reply(200, "text/plain; version=0.0.4", m.prometheus().encode())
                if method == "GET" and path == "/healthz":
                    ok, info = m.health()
                    return self._reply(
                        200 if ok else 503, "application/json", json.dumps(info).encode()
                    )
                fn = routes.get((method, path))
                if fn is None:
                    return self._reply(404, "text/plain", b"try /healthz or /metrics\n")
                try:
                    out = fn(self, query, body)
                except Exception:  # a bug in a route: one log line and a 500, the daemon goes on
                    log.exception("%s %s failed", method, path)
                    out = (
                        500,
                        "application/json",
                        b'{"error": "internal error, see the daemon log"}',
                    )
                if out is not None:
                    self._reply(*out)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def log_message(self, *a):  # access logs would drown the structured log
                pass

        def refused():
            self.refused += 1  # over the bound: closed at once, no thread for it

        self.httpd = BoundedHTTPServer(
            (host, port), Handler, max_connections or self.MAX_CONNECTIONS, refused
        )
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="metrics-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
