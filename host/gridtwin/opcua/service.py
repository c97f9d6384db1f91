"""The OPC UA collector inside `gridtwin daemon`: one thread with its own asyncio loop running a
Collector per ``[[opcua.sources]]`` entry into the daemon's store (gridtwin/daemon/service.py
starts and stops it with the rest).

After each commit the new points go where the daemon's readings go after theirs: the analytics
queue (so the battery SoC drop and efficiency rules judge OPC UA assets too), the local API's
`tail` and the web view's live stream, and the spool's forwarder is woken when the storage is
InfluxDB. A point is named there as a reading is: the ISA-95 machine is the node, the tag is the
metric (``gridtwin query inv1 Power_Active``, ``gridtwin tail inv1``). Points with BAD quality
carry no value and feed nothing but the store; a Boolean reaches analytics as nothing (rules are
about numbers) and `tail` as true/false.

A source whose mapping is wrong (a ConfigError: unknown NodeId, wrong type) stops alone with one
log line naming the site key; the others go on, and /healthz shows each source's state.

``ServedTwin`` is the other end for a twin that runs on another thread (`gridtwin demo`): the
server on a loop of its own, fed the states the twin's thread takes.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from gridtwin.daemon.validate import Telemetry
from gridtwin.errors import GridTwinError

log = logging.getLogger("gridtwin.opcua")
BOOT = "opcua"  # the boot field of an OPC UA point in `tail` (it has no node boot or seq)


def telemetry(rows) -> list[Telemetry]:
    """Collector rows -> one Telemetry per (machine, source time in ms), tags as metrics; BAD rows
    (no value) are left out."""
    out: dict[tuple, Telemetry] = {}
    for _e, _s, _a, _ln, machine, tag, ts_ns, num, text, _unit, q, _src, flag in rows:
        if q == "BAD":
            continue
        value = num if num is not None else bool(flag) if flag is not None else text
        if value is None:
            continue
        key = (machine, ts_ns // 1_000_000)
        t = out.get(key)
        if t is None:
            t = out[key] = Telemetry(machine, BOOT, 0, key[1], {}, False, "")
        t.m[tag] = value
    return list(out.values())


class CollectorService:
    """The daemon's collectors, one per source, on one thread. `start()`, `stop()`, `health()`."""

    def __init__(self, site, store, listeners=(), wake=None):
        from gridtwin.opcua.collector import Collector
        from gridtwin.pki import PKI

        self.site = site
        self.pki = PKI.for_site(site)
        self.listeners = list(listeners)  # fn(list[Telemetry]) after each commit
        self.wake = wake  # the spool forwarder's wake-up (InfluxDB), or None
        self.collectors = [
            Collector(
                site,
                store,
                self.pki,
                source=k,
                log=lambda msg, k=k: log.warning("opcua.sources[%d]: %s", k, msg),
            )
            for k in range(len(site.opcua.sources))
        ]
        for col in self.collectors:
            col.listeners.append(self._committed)
        self.thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        # set once every source has had a session (`gridtwin demo` waits for it before its run)
        self.all_connected = threading.Event()
        self._sessions_seen: set[int] = set()

    def _committed(self, rows) -> None:
        if self.wake is not None and any(c.influx for c in self.collectors):
            self.wake.set()
        tels = telemetry(rows)
        if not tels:
            return
        for fn in self.listeners:
            try:
                fn(tels)
            except Exception:  # a listener's bug must not stop collection
                log.exception("opcua: a listener failed")

    def start(self) -> "CollectorService":
        # the collector's RSA identity is issued by the site CA on first use (opcua/certs.py)
        self.thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self.thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await asyncio.gather(*(self._one(c) for c in self.collectors))
        await self._stop.wait()  # sources that stopped on a bad mapping leave the thread alive

    async def _one(self, col) -> None:
        # each source has its own stop: a bad mapping ends that source, not the others
        mine = asyncio.Event()

        async def relay():
            await self._stop.wait()
            mine.set()

        async def first_session():
            await col.connected.wait()
            self._sessions_seen.add(id(col))
            if len(self._sessions_seen) == len(self.collectors):
                self.all_connected.set()

        relay_task = asyncio.create_task(relay())
        seen_task = asyncio.create_task(first_session())
        try:
            await col.run(mine)
        except GridTwinError as exc:
            col.error = str(exc)  # the site key, the problem and the fix
            log.error("opcua: %s; this source stops, the daemon goes on", col.error)
        except Exception as exc:  # never take the daemon down with one source
            col.error = f"{type(exc).__name__}: {exc}"
            log.exception("opcua: %s stopped", col.endpoint)
        finally:
            relay_task.cancel()
            seen_task.cancel()

    def stop(self) -> None:
        """Stop every collector: queued points are committed first."""
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended
                pass
        if self.thread is not None:
            self.thread.join(15)

    def health(self) -> list[dict]:
        return [
            {
                "endpoint": c.endpoint,
                "connected": c.connected.is_set(),
                "stored": c.stored,
                **({"error": c.error} if c.error else {}),
            }
            for c in self.collectors
        ]

    def gauges(self) -> dict:
        """/metrics gauges (gridtwin_opcua_*), labelled by source endpoint."""

        def per(fn):
            return lambda: {
                f'{{source="{k}",endpoint="{c.endpoint}"}}': fn(c)
                for k, c in enumerate(self.collectors)
            }

        return {
            "opcua_connected": per(lambda c: int(c.connected.is_set())),
            "opcua_points_stored_total": per(lambda c: c.stored),
            "opcua_notifications_total": per(lambda c: c.received),
            "opcua_sessions_total": per(lambda c: c.sessions),
            "opcua_queued": per(lambda c: len(c.queue)),
        }


class ServedTwin:
    """A running twin served over OPC UA from a thread of its own (`gridtwin demo`): `start()`,
    then `publish(state)` from the twin's thread with a state it took (the server never reads the
    twin while it steps), `stop()`."""

    def __init__(self, site, twin, pki, endpoint: str | None = None):
        from gridtwin.opcua.server import TwinServer

        self.server = TwinServer(site, twin, pki, endpoint=endpoint)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="opcua-serve", daemon=True
        )
        self.published = 0
        self.last: dict | None = None  # the state of the last publish

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def start(self) -> "ServedTwin":
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        except BaseException:
            self.stop()
            raise
        return self

    def publish(self, state: dict) -> None:
        """Queue a publish of `state` (returns at once; a publish still running is not waited
        for)."""

        async def one():
            try:
                await self.server.publish(state)
                self.published += 1
                self.last = state
            except Exception as exc:  # the demo goes on; the collector marks what it misses
                log.warning("opcua serve: publish failed: %s", exc)

        if self.server.server is not None:
            asyncio.run_coroutine_threadsafe(one(), self.loop)

    def stop(self) -> None:
        if self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(15)
            except Exception as exc:
                log.warning("opcua serve: stopping: %s", exc)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
