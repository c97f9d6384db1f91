"""One HTTP server for the daemon's API (gridtwin.daemon.metrics) and the remote web view
(gridtwin.web.remote): a thread per connection, up to a bound.

A connection over the bound is closed at once, without a thread and without waiting in the kernel's
backlog, so a flood of clients (or a slow-loris one) costs a counter, never the daemon's memory."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # accepted fast and answered or closed, not left in the backlog

    def __init__(self, address, handler, max_connections: int, on_refused=None):
        self._slots = threading.BoundedSemaphore(max_connections)
        self._on_refused = on_refused  # called (no argument) for each connection over the bound
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            if self._on_refused is not None:
                self._on_refused()
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
