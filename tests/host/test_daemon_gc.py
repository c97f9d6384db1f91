"""The daemon's process keeps the cyclic collector out of ingest's way (issue #20: at 10,000 msg/s
full collections stopped every thread for up to 15 ms, and young ones ran thousands of times a
second without finding garbage)."""

import gc
import signal
import threading
import time

import pytest

from fixtures.daemon_fleet import endpoint
from gridtwin.daemon.service import GC_YOUNG, Daemon

pytestmark = pytest.mark.broker


def test_run_forever_freezes_start_up_and_raises_the_young_threshold(fleet_broker, tmp_path):
    daemon = Daemon(endpoint=endpoint(fleet_broker), db_path=tmp_path / "g.db", metrics_port=None)
    before = gc.get_threshold()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    seen = {}

    def watch():
        # run_forever settles the collector right after start(); then it is stopped as by a signal
        deadline = time.monotonic() + 10
        while not daemon.failed.wait(0.05) and time.monotonic() < deadline:
            if daemon.bus.client and gc.get_freeze_count() and gc.get_threshold()[0] == GC_YOUNG:
                seen["frozen"], seen["threshold"] = gc.get_freeze_count(), gc.get_threshold()
                break
        daemon.failed.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        assert daemon.run_forever() == 0
    finally:
        daemon.failed.set()
        t.join(5)
        gc.unfreeze()
        gc.set_threshold(*before)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert seen, "the daemon's process kept CPython's default collector settings"
    assert seen["frozen"] > 10_000  # modules, paho, SQLite, the web view: out of every collection
    assert seen["threshold"][1:] == before[1:]
