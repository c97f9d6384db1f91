"""`gridtwin demo`: PKI, broker, daemon, twin and every node as a virtual node, on loopback.

    demo = Demo(site, speed=1.0)
    demo.start()          # PKI (made if missing), mosquitto, daemon, virtual fleet, twin link
    demo.run(until=180)   # the scenario, paced at `speed`; view=True draws the live terminal view
    demo.stop()           # everything stops; the readings stay in the site's var/ for `gridtwin query`

Every node of the site runs the real firmware (compiled, as deployed) under the MicroPython unix
port: it joins the broker with its own certificate, samples chips the twin feeds, and obeys the
commands the twin sends when its component's state changes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

from gridtwin.broker import Mosquitto
from gridtwin.errors import BrokerError

log = logging.getLogger("gridtwin.demo")


class Demo:
    def __init__(self, site, *, speed: float = 1.0, port: int | None = None, nodes: list[str] | None = None,
                 seed: int | None = None, fail_at: float = 20.0, back_at: float = 120.0,
                 daemon_overrides: dict | None = None, heap: str | None = None):
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
        self._stop = threading.Event()
        self._counts: dict[str, int] = {}
        self._counts_at = 0.0
        self._base: dict[str, int] = {}  # readings the store held before this run (run_counts subtracts them)

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
        pki = PKI.for_site(site)
        made = pki.ensure(site)
        if made:
            log.info("PKI: issued %s", ", ".join(made))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(site, pki, self.dir / "broker", port=self.port)
        try:
            self.broker.start()
        except BrokerError as exc:
            raise BrokerError(f"cannot start the demo's broker on 127.0.0.1:{self.port}: {exc.message}",
                              hint="is another broker on that port? stop it or pass --port") from None
        try:
            ep = dataclasses.replace(endpoint_from_site(site), host="127.0.0.1", port=self.port)
            # no SNTP responder: the demo's boards are virtual (their world tells the time) and its
            # broker listens on loopback only, so no real board could use it
            self.daemon = Daemon.from_site(site, endpoint=ep, **{"sntp": None, **self.daemon_overrides}).start()
            self._base = {n: self.daemon.store.count_readings(n) for n in self.node_ids}
            boards = self.dir / "boards"
            self.fleet = VirtualFleet(site, pki, boards, broker=("127.0.0.1", self.port), nodes=self.node_ids,
                                      speed=self.speed, heap=self.heap)
            self.link = TwinLink(self.twin, self.daemon, site, virtual=self.node_ids, fleet=self.fleet)
            self.link.after_step()  # the chips read the twin's values from their first sample
            self.fleet.start()
        except BaseException:  # a failure, or Ctrl-C/SIGTERM while starting: nothing stays behind
            self.stop()
            raise
        log.info("demo running: broker on 127.0.0.1:%d (pid %d), daemon, twin, %d virtual boards",
                 self.port, self.broker.proc.pid, len(self.fleet.nodes))
        return self

    def run(self, until: float, *, view: bool = False) -> None:
        """Step the twin to `until` seconds at `speed` x real time (Ctrl-C or stop() ends it early)."""
        from gridtwin.twin.scenario import run_realtime

        def on_step(_twin):
            self.link.after_step()

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
        """Readings stored during this run, per node (the site's database also holds earlier runs')."""
        return {n: self.daemon.store.count_readings(n) - self._base.get(n, 0) for n in self.node_ids}

    def never_online(self, counts: dict[str, int] | None = None) -> list[str]:
        """The nodes that stored no reading during this run: the demo fails naming them."""
        counts = self.run_counts() if counts is None else counts
        return [n for n in self.node_ids if not counts.get(n)]

    def stop(self) -> None:
        self._stop.set()
        for part in (self.link and self.link.close, self.fleet and self.fleet.stop,
                     self.daemon and self.daemon.stop, self.broker and self.broker.stop):
            if part:
                try:
                    part()
                except Exception as exc:  # stop everything even when one part fails to
                    log.warning("stopping: %s", exc)
