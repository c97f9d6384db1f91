"""InfluxDB writer: line protocol over HTTP, gzip, batches, retry with backoff, SQLite spool.

Every batch the ingest commits puts its points into the SQLite ``spool`` table *in the same
transaction* as the de-duplication keys, so the MQTT ack means "durable here", whether or not
InfluxDB is up. A forwarder thread drains the spool in id order (= arrival order) and deletes a
chunk only after InfluxDB answered 2xx; while InfluxDB is unreachable it backs off (0.5 s doubling
to 30 s) and the spool grows; when it returns, the spool is replayed in order. A crash between the
write and the delete re-sends the same points, which InfluxDB stores once (same series and time).

``api = "v2"`` talks to InfluxDB 2 (``/api/v2/write``, org, bucket, token); ``api = "v1"`` to
InfluxDB 1.x (``/write``, database) — the tests use a real 1.x server.
"""

from __future__ import annotations

import gzip
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

log = logging.getLogger("gridtwin.daemon.influx")


class InfluxUnavailable(Exception):
    """Connection refused, timeout or 5xx: keep the points, try again later."""


class InfluxRejected(Exception):
    """4xx: InfluxDB refused some lines (it still writes the valid ones of a batch)."""


@dataclass
class InfluxConfig:
    url: str = "http://127.0.0.1:8086"
    api: str = "v2"  # "v2" (InfluxDB 2) or "v1" (InfluxDB 1.x)
    org: str = ""
    bucket: str = "gridtwin"  # v1: the database
    token: str = ""
    gzip: bool = True
    timeout: float = 10.0
    batch_lines: int = 5000


class InfluxWriter:
    # the spool holds nanosecond times (lineprotocol.point_time_ns): one point per reading
    precision = "ns"

    def __init__(self, cfg: InfluxConfig):
        self.cfg = cfg
        base = cfg.url.rstrip("/")
        if cfg.api == "v1":
            self.endpoint = f"{base}/write?" + urllib.parse.urlencode(
                {"db": cfg.bucket, "precision": self.precision}
            )
        else:
            self.endpoint = f"{base}/api/v2/write?" + urllib.parse.urlencode(
                {"org": cfg.org, "bucket": cfg.bucket, "precision": self.precision}
            )

    def write(self, lines: list[str]) -> None:
        body = ("\n".join(lines) + "\n").encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.cfg.gzip:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        if self.cfg.token:
            headers["Authorization"] = f"Token {self.cfg.token}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise InfluxRejected(f"HTTP {exc.code}: {detail}") from None
            raise InfluxUnavailable(f"HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InfluxUnavailable(str(getattr(exc, "reason", exc))) from None


class SpoolForwarder:
    """Drains the store's spool into InfluxDB, in order, with backoff while it is unreachable."""

    def __init__(self, store, writer: InfluxWriter, metrics=None, max_backoff: float = 30.0):
        self.store, self.writer, self.metrics = store, writer, metrics
        self.max_backoff = max_backoff
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reachable = True
        self.sent = self.rejected_batches = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="influx-forwarder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                rows = self.store.spool_peek(self.writer.cfg.batch_lines)
            except (
                Exception
            ) as exc:  # the spool cannot be read (locked, disk): keep the thread alive
                log.error("cannot read the InfluxDB spool: %s; retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if not rows:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            try:
                self.writer.write([line for _id, line in rows])
            except InfluxUnavailable as exc:
                if self.reachable:
                    log.warning(
                        "InfluxDB at %s unreachable (%s); spooling to SQLite, retrying with "
                        "backoff",
                        self.writer.cfg.url,
                        exc,
                    )
                self.reachable = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            except InfluxRejected as exc:
                # InfluxDB wrote the valid lines of the batch; the rest can never succeed
                self.rejected_batches += 1
                log.error("InfluxDB refused part of a batch of %d lines: %s", len(rows), exc)
            if not self.reachable:
                log.info("InfluxDB at %s is back; replaying the spool", self.writer.cfg.url)
            self.reachable, backoff = True, 0.5
            self.store.spool_delete_upto(rows[-1][0])
            self.sent += len(rows)
