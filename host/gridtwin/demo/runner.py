"""`gridtwin demo`: PKI, broker, daemon, twin and every node as a virtual node, on loopback.

    demo = Demo(site, speed=1.0)
    demo.start()          # PKI (made if missing), mosquitto, daemon, virtual fleet, twin link
    demo.run(until=180)   # the scenario, paced at `speed`; view=True draws the live terminal view
    demo.stop()           # everything stops; the readings stay in <var>/demo/ for `gridtwin query`

Every node of the site runs the real firmware (compiled, as deployed) under the MicroPython unix
port: it joins the broker with its own certificate, samples chips the twin feeds, and obeys the
commands the twin sends when its component's state changes.

The demo keeps its data apart from the site's (``demo_site``): it runs on a copy of the site file,
``<var>/demo/site.toml``, whose runtime folder is ``<var>/demo/`` (its own database, broker state,
boards and daemon state) and whose storage is always SQLite. The demo's readings are stamped by the
boards' clocks, which run ``speed`` x real time (at ``--speed 5`` minutes ahead of the host's): in
the site's own database they would sit among real readings in ``query --since``. The copy is what
`gridtwin --site <var>/demo/site.toml query|nodes|tail ...` reads, during the demo and after it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path

from gridtwin.broker import Mosquitto
from gridtwin.errors import BrokerError, GridTwinError

log = logging.getLogger("gridtwin.demo")

DEMO_SITE_HEADER = """\
# Written by `gridtwin demo` from {source}: the demo's own site, the same nodes, twin and PKI, with
# its runtime data (database, broker, boards) in this folder, apart from the site's. Read it with
# `gridtwin --site {here} query|nodes|tail ...`. Each demo writes it again: do not edit it.
"""


def _toml(value) -> str:
    """A TOML value on one line (inline tables and arrays): enough for what a site file holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def shown_path(path: Path) -> str:
    """The path as a user types it here: relative to the current folder when under it."""
    import os

    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def demo_site(site, opcua_endpoint: str | None = None):
    """Write and load ``<var>/demo/site.toml``: the site as its file says, with ``var`` the folder
    of the copy, ``certs`` the site's own PKI (absolute) and storage SQLite in that folder (demo
    readings never reach the site's database or InfluxDB), which takes readings up to a day ahead
    of the host's clock (at --speed 5 the boards' clocks gain 4 s every second). With
    `opcua_endpoint` the twin is served there and that server is the copy's one
    ``[[opcua.sources]]``: the demo's daemon collects it."""
    import os
    import tomllib

    from gridtwin.site import load_site

    folder = Path(site.var_dir) / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    raw = tomllib.loads(Path(site.path).read_text(encoding="utf-8"))
    raw.setdefault("site", {}).update(var=".", certs=str(Path(site.certs_dir).resolve()))
    storage = raw.setdefault("storage", {})
    # max_future_s: the boards' clocks run at the demo's speed, ahead of the host's by design
    storage.update(backend="sqlite", path="", max_future_s=86400)
    storage.pop("influx_token_file", None)
    if opcua_endpoint:
        raw.setdefault("opcua", {}).update(
            endpoint=opcua_endpoint, sources=[{"endpoint": opcua_endpoint}]
        )
    path = folder / "site.toml"
    text = DEMO_SITE_HEADER.format(source=site.path, here=shown_path(path))
    text += "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in raw.items())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return load_site(path)


class Demo:
    def __init__(
        self,
        site,
        *,
        speed: float = 1.0,
        port: int | None = None,
        nodes: list[str] | None = None,
        seed: int | None = None,
        fail_at: float = 20.0,
        back_at: float = 120.0,
        daemon_overrides: dict | None = None,
        heap: str | None = None,
        opcua_port: int | None = None,
    ):
        self.site = site
        self.speed = speed
        self.port = port or site.broker.port
        self.node_ids = nodes if nodes is not None else site.node_ids
        self.seed, self.fail_at, self.back_at = seed, fail_at, back_at
        self.daemon_overrides = daemon_overrides or {}
        from gridtwin.vboard import NODE_HEAP

        self.heap = heap or NODE_HEAP
        self.roles = {n.id: n.role for n in site.nodes}
        self.dir = Path(site.var_dir) / "demo"
        self.broker = self.daemon = self.fleet = self.link = self.twin = None
        # the twin served over OPC UA ([opcua] endpoint, or this port on loopback) and collected by
        # the daemon, beside the MQTT path (gridtwin/opcua/service.py)
        self.opcua_port, self.opcua = opcua_port, None
        self._published_at = 0.0
        self._stop = threading.Event()
        self._counts: dict[str, int] = {}
        self._counts_at = 0.0
        self._base: dict[
            str, int
        ] = {}  # readings the store held before this run (run_counts subtracts them)

    def start(self) -> "Demo":
        from gridtwin.daemon.connection import endpoint_from_site
        from gridtwin.daemon.service import Daemon
        from gridtwin.fleet import VirtualFleet
        from gridtwin.pki import PKI
        from gridtwin.twin import Twin, demo_scenario
        from gridtwin.twin.coupling import TwinLink

        site = self.site
        # what can be wrong in the site is found before anything starts: the nodes asked for, the
        # twin and its scenario
        for n in self.node_ids:
            site.node(n)
        self.twin = Twin.from_site(site, **({"seed": self.seed} if self.seed is not None else {}))
        self.twin.schedule(demo_scenario(self.twin, fail_at=self.fail_at, back_at=self.back_at))
        # from here on the demo's own copy of the site: its data in self.dir, apart from the site's
        self.site = site = demo_site(site, self._opcua_endpoint(site))
        pki = PKI.for_site(site)
        made = pki.ensure(site)
        if made:
            log.info("PKI: issued %s", ", ".join(made))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(site, pki, self.dir / "broker", port=self.port)
        try:
            self.broker.start()
        except BrokerError as exc:
            raise BrokerError(
                f"cannot start the demo's broker on 127.0.0.1:{self.port}: {exc.message}",
                hint="is another broker on that port? stop it or pass --port",
            ) from None
        try:
            self._serve_opcua(site, pki)  # before the daemon: its collector finds the server up
            ep = dataclasses.replace(endpoint_from_site(site), host="127.0.0.1", port=self.port)
            # no SNTP responder: the demo's boards are virtual (their world tells the time) and its
            # broker listens on loopback only, so no real board could use it
            self.daemon = Daemon.from_site(
                site, endpoint=ep, **{"sntp": None, **self.daemon_overrides}
            ).start()
            # the collector's handshakes and subscriptions (RSA, hundreds of items) before the
            # boards and the twin's clock start, not during the scenario's first seconds
            if self.daemon.opcua and not self.daemon.opcua.all_connected.wait(20):
                log.warning("the daemon's OPC UA collector has no session yet; the demo goes on")
            self._base = {n: self.daemon.store.count_readings(n) for n in self.node_ids}
            boards = self.dir / "boards"
            self.fleet = VirtualFleet(
                site,
                pki,
                boards,
                broker=("127.0.0.1", self.port),
                nodes=self.node_ids,
                speed=self.speed,
                heap=self.heap,
            )
            self.link = TwinLink(
                self.twin, self.daemon, site, virtual=self.node_ids, fleet=self.fleet
            )
            self.link.after_step()  # the chips read the twin's values from their first sample
            self.fleet.start()
        except BaseException:  # a failure, or Ctrl-C/SIGTERM while starting: nothing stays behind
            self.stop()
            raise
        log.info(
            "demo running: broker on 127.0.0.1:%d (pid %d), daemon, twin, %d virtual boards",
            self.port,
            self.broker.proc.pid,
            len(self.fleet.nodes),
        )
        return self

    def _opcua_endpoint(self, site) -> str:
        from urllib.parse import urlparse

        if self.opcua_port is None:
            return site.opcua.endpoint
        path = urlparse(site.opcua.endpoint).path or "/gridtwin"
        return f"opc.tcp://127.0.0.1:{self.opcua_port}{path}"

    def _serve_opcua(self, site, pki) -> None:
        from gridtwin.opcua.service import ServedTwin

        served = ServedTwin(site, self.twin, pki)
        try:
            served.start()
        except OSError as exc:
            raise GridTwinError(
                f"cannot serve the demo's twin over OPC UA on {served.endpoint}: "
                f"{exc.strerror or exc}",
                hint="is `gridtwin opcua serve` running? stop it, or set [opcua] endpoint",
            ) from None
        self.opcua = served

    def _publish_opcua(self, twin) -> None:
        """After a twin step: hand the server the twin's state every [opcua] publish_ms."""
        now = time.monotonic()
        if self.opcua and now - self._published_at >= self.site.opcua.publish_ms / 1000:
            self._published_at = now
            self.opcua.publish(twin.state())

    @property
    def web_url(self) -> str | None:
        """The daemon's web view (gridtwin.web), on loopback; None when the site turned the server
        off."""
        srv = self.daemon.metrics_server if self.daemon else None
        return f"http://127.0.0.1:{srv.port}/ui/" if srv else None

    def run(self, until: float, *, view: bool = False) -> None:
        """Step the twin to `until` seconds at `speed` x real time (Ctrl-C or stop() ends it
        early)."""
        from gridtwin.twin.scenario import run_realtime

        def on_step(twin):
            self.link.after_step()
            self._publish_opcua(twin)

        if not view:
            run_realtime(self.twin, until, self.speed, on_step=on_step, stop=self._stop.is_set)
            return
        from rich.live import Live

        from gridtwin.demo.view import render

        with Live(render(self), refresh_per_second=4, screen=False) as live:
            last = [0.0]

            def on_step_view(twin):
                on_step(twin)
                now = time.monotonic()
                if now - last[0] > 0.25:
                    last[0] = now
                    live.update(render(self))

            run_realtime(self.twin, until, self.speed, on_step=on_step_view, stop=self._stop.is_set)

    def reading_counts(self) -> dict[str, int]:
        now = time.monotonic()
        if now - self._counts_at > 2.0:
            self._counts_at = now
            self._counts = {n: self.daemon.store.count_readings(n) for n in self.node_ids}
        return self._counts

    def run_counts(self) -> dict[str, int]:
        """Readings stored during this run, per node (the site's database also holds earlier
        runs')."""
        return {
            n: self.daemon.store.count_readings(n) - self._base.get(n, 0) for n in self.node_ids
        }

    def never_online(self, counts: dict[str, int] | None = None) -> list[str]:
        """The nodes that stored no reading during this run: the demo fails naming them."""
        counts = self.run_counts() if counts is None else counts
        return [n for n in self.node_ids if not counts.get(n)]

    def stop(self) -> None:
        self._stop.set()
        for part in (
            self.link and self.link.close,
            self.fleet and self.fleet.stop,
            self.daemon and self.daemon.stop,  # its collector first: no BAD rows at the end
            self.opcua and self.opcua.stop,
            self.broker and self.broker.stop,
        ):
            if part:
                try:
                    part()
                except Exception as exc:  # stop everything even when one part fails to
                    log.warning("stopping: %s", exc)
