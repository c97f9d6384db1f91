"""The daemon's local HTTP API: what `gridtwin cmd` and `gridtwin tail` talk to.

Routes (``POST /cmd``, ``GET /tail``) are served by the daemon's HTTP server (``metrics.py``:
token before body, small bodies, timeouts, bounded connections) next to /healthz and /metrics.
``STATUS`` is the one table between the project's exceptions and HTTP status codes: the API maps
an exception to its code here, and ``client.py`` maps the code back to the same exception.
The daemon's address and token go into ``var/daemon.json`` (mode 0600): only the daemon's user may
command nodes.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import threading
import time
from pathlib import Path

from gridtwin.daemon import validate
from gridtwin.daemon.dispatch import NodeOffline
from gridtwin.errors import CommandTimeout, GridTwinError

# exception -> HTTP status, most specific first (client.py reads it the other way round)
STATUS = ((NodeOffline, 409), (CommandTimeout, 504), (GridTwinError, 400))
UNHEALTHY = 503  # /healthz: not connected, store failing, or a worker thread died
# readings a tail reader may be behind before it loses lines (ingest never waits for a reader)
TAIL_BEHIND = 10000


def status_of(exc: Exception) -> int:
    return next(code for cls, code in STATUS if isinstance(exc, cls))


def exception_for(code: int) -> type[GridTwinError]:
    return next((cls for cls, c in STATUS if c == code), GridTwinError)


# one encoder made once: json.dumps with separators builds a new one per call (~20 % of a line's
# cost, 10,000 lines a second at 10,000 readings/s)
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def tail_line(t, stored_ms: int) -> bytes:
    """A stored reading as `gridtwin tail` shows it: the validated values, not the node's bytes,
    and ``stored``, when its transaction committed (host clock, Unix ms): ``stored - ts`` is how
    long the reading took from the node's clock to the database."""
    doc = {
        "v": validate.SCHEMA_VERSION,
        "node": t.node,
        "boot": t.boot,
        "seq": t.seq,
        "ts": t.ts,
        "m": t.m,
    }
    if t.hist:
        doc["hist"] = True
    doc["stored"] = stored_ms
    return _COMPACT(doc).encode()


class LocalApi:
    """/cmd and /tail for the CLI; ``feed`` is an ingest listener (readings after each commit)."""

    PRIVATE = {"/cmd", "/tail"}

    def __init__(self, dispatcher, state_file: Path, stopping):
        self.dispatcher, self.state_file, self.stopping = dispatcher, Path(state_file), stopping
        self.token = secrets.token_hex(16)
        self._tails: set = set()

    def routes(self) -> dict:
        return {("POST", "/cmd"): self.cmd, ("GET", "/tail"): self.tail}

    # -- where the CLI finds us -----------------------------------------------------------------
    def publish_state(self, host: str, port: int) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": host, "port": port, "token": self.token}, f)
        os.replace(tmp, self.state_file)

    def withdraw_state(self) -> None:
        try:
            if json.loads(self.state_file.read_text()).get("pid") == os.getpid():
                self.state_file.unlink()
        except (OSError, ValueError):
            pass

    # -- routes -----------------------------------------------------------------------------
    def cmd(self, handler, query, body):
        try:
            req = json.loads(body or b"{}")
            node, cmd = req["node"], req["cmd"]
            timeout, ttl = float(req.get("timeout", 10)), float(req.get("ttl", 0))
        except (ValueError, KeyError, TypeError):
            return (
                400,
                "application/json",
                json.dumps({"error": 'body must be {"node", "cmd", "args"}'}).encode(),
            )
        try:
            ack = self.dispatcher.send(node, cmd, req.get("args") or {}, timeout=timeout, ttl=ttl)
        except GridTwinError as exc:
            return (
                status_of(exc),
                "application/json",
                json.dumps({"error": exc.message, "hint": exc.hint}).encode(),
            )
        return 200, "application/json", json.dumps({"ack": ack}).encode()

    def feed(self, tel) -> None:
        # the ingest writer, once per committed batch: one hand-over per reader and batch (a put
        # and a wake-up per reading were ~10,000 lock operations a second at 10,000 readings/s)
        for t in list(self._tails):
            t.offer(tel)

    def tail(self, handler, query, body):
        node = query.get("node")
        backlog = _Backlog(TAIL_BEHIND)
        self._tails.add(backlog)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/x-ndjson")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.flush()
            while not self.stopping():
                # everything waiting in one write: a write and a flush per line made the stream
                # (and the GIL it takes from ingest) the slowest part at 10,000 readings/s
                lines = [
                    tail_line(t, at) for at, t in backlog.take(0.5) if not node or t.node == node
                ]
                if lines:
                    handler.wfile.write(b"\n".join(lines) + b"\n")
                    handler.wfile.flush()
        except OSError:
            pass  # the reader went away
        finally:
            self._tails.discard(backlog)
            handler.close_connection = True
        return None


class _Backlog:
    """A tail reader's readings not yet written: whole batches as ingest committed them, at most
    ``limit`` readings (past that a batch loses its tail end: a slow reader loses lines, never
    slows ingest). The writer thread offers, the reader's thread takes everything at once."""

    def __init__(self, limit: int):
        self.limit = limit
        self._batches: collections.deque = collections.deque()
        self._n = 0  # readings in _batches
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def offer(self, tel) -> None:
        """A committed batch, on the ingest writer's thread right after its commit (the time it
        is stamped with)."""
        at = int(time.time() * 1000)
        with self._lock:
            room = self.limit - self._n
            if room <= 0 or not tel:
                return
            part = tel if len(tel) <= room else tel[:room]
            self._batches.append((at, part))
            self._n += len(part)
        if not self._ready.is_set():  # one wake-up per batch, none while the reader is behind
            self._ready.set()

    def take(self, timeout: float) -> list:
        """Every reading waiting as ``(stored_ms, reading)``, in commit order; [] after
        ``timeout`` s without any."""
        if not self._ready.wait(timeout):
            return []
        with self._lock:
            # cleared before taking: a batch offered after this sets it again, none is missed
            self._ready.clear()
            batches, self._batches, self._n = self._batches, collections.deque(), 0
        return [(at, t) for at, batch in batches for t in batch]
