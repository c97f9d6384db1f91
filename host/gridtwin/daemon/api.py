"""The daemon's local HTTP API: what `gridtwin cmd` and `gridtwin tail` talk to.

Routes (``POST /cmd``, ``GET /tail``) are served by the daemon's HTTP server (``metrics.py``:
token before body, small bodies, timeouts, bounded connections) next to /healthz and /metrics.
``STATUS`` is the one table between the project's exceptions and HTTP status codes: the API maps
an exception to its code here, and ``client.py`` maps the code back to the same exception.
The daemon's address and token go into ``var/daemon.json`` (mode 0600): only the daemon's user may
command nodes.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
from pathlib import Path

from gridtwin.daemon import validate
from gridtwin.daemon.dispatch import NodeOffline
from gridtwin.errors import CommandTimeout, GridTwinError

# exception -> HTTP status, most specific first (client.py reads it the other way round)
STATUS = ((NodeOffline, 409), (CommandTimeout, 504), (GridTwinError, 400))
UNHEALTHY = 503  # /healthz: not connected, store failing, or a worker thread died


def status_of(exc: Exception) -> int:
    return next(code for cls, code in STATUS if isinstance(exc, cls))


def exception_for(code: int) -> type[GridTwinError]:
    return next((cls for cls, c in STATUS if c == code), GridTwinError)


def tail_line(t) -> bytes:
    """A stored reading as `gridtwin tail` shows it: the validated values, not the node's bytes."""
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
    return json.dumps(doc, separators=(",", ":")).encode()


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
        for q in list(self._tails):
            for t in tel:
                try:
                    q.put_nowait(t)
                except queue.Full:  # a slow reader loses lines, never slows ingest
                    break

    def tail(self, handler, query, body):
        node = query.get("node")
        q: queue.Queue = queue.Queue(maxsize=10000)
        self._tails.add(q)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/x-ndjson")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.flush()
            while not self.stopping():
                try:
                    got = [q.get(timeout=0.5)]
                except queue.Empty:
                    continue
                # everything waiting in one write: a write and a flush per line made the stream
                # (and the GIL it takes from ingest) the slowest part at 10,000 readings/s
                try:
                    while len(got) < 5000:
                        got.append(q.get_nowait())
                except queue.Empty:
                    pass
                lines = [tail_line(t) for t in got if not node or t.node == node]
                if lines:
                    handler.wfile.write(b"\n".join(lines) + b"\n")
                    handler.wfile.flush()
        except OSError:
            pass  # the reader went away
        finally:
            self._tails.discard(q)
            handler.close_connection = True
        return None
