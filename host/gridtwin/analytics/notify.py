"""The optional notifier: each alert raised or cleared, as JSON, to a command's stdin
(``[analytics] notify_command``) or POSTed to a webhook (``notify_url``).

It runs on a thread of its own with a bounded queue and a time limit per alert: a notifier that
fails, hangs or is slow is logged (one line a minute at most) and counted, and alerts beyond the
queue are dropped; neither ingest nor analytics ever waits for it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
import time

log = logging.getLogger("gridtwin.analytics")
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}


class Notifier:
    def __init__(
        self,
        command: str = "",
        url: str = "",
        timeout_s: float = 5.0,
        min_severity: str = "low",
        queue_max: int = 1000,
    ):
        self.command, self.url, self.timeout_s = command, url, timeout_s
        self.min_rank = SEVERITY_RANK.get(min_severity, 0)
        self._q: queue.Queue = queue.Queue(queue_max)
        self.sent = self.failed = self.dropped = 0
        self._last_log = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._proc = None

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.url)

    def __call__(self, doc: dict) -> None:
        """An Alerts listener: never blocks (a full queue drops the alert and counts it)."""
        sev = doc.get("severity")
        if sev in SEVERITY_RANK and SEVERITY_RANK[sev] < self.min_rank:
            return
        try:
            self._q.put_nowait(doc)
        except queue.Full:
            self.dropped += 1
            self._complain(f"notifier queue full: {self.dropped} alert(s) not notified so far")

    def start(self) -> "Notifier":
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="analytics-notify", daemon=True)
            self._thread.start()
        return self

    def stop(self, wait_s: float = 2.0) -> None:
        self._stop.set()
        self._q.put(None) if not self._q.full() else None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _kill(proc)
        if self._thread is not None:
            self._thread.join(wait_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            doc = self._q.get()
            if doc is None:
                return
            try:
                self._send(json.dumps(doc, separators=(",", ":")).encode())
                self.sent += 1
            except Exception as exc:  # one clear line, rate-limited; the next alert is tried again
                self.failed += 1
                self._complain(f"notifier failed ({self.failed} so far): {exc}")

    def _send(self, body: bytes) -> None:
        if self.command:
            # its own process group, so a hung notifier and whatever it started are ended together
            proc = self._proc = subprocess.Popen(
                shlex.split(self.command),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                _, err = proc.communicate(body, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise RuntimeError(
                    f"{self.command!r} took longer than {self.timeout_s:g} s and was stopped"
                ) from None
            finally:
                self._proc = None
            if proc.returncode:
                raise RuntimeError(
                    f"{self.command!r} exited with status {proc.returncode}: "
                    f"{(err or b'').decode(errors='replace').strip()[:200]}"
                )
        if self.url:
            # imported here: urllib.request (ssl, http, email) is ~10 MB of RSS, and the analytics
            # process, which imports this module, never posts (the daemon notifies)
            import urllib.request

            req = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read(1024)

    def _complain(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= 60:
            self._last_log = now
            log.warning("%s", text)


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        pass
