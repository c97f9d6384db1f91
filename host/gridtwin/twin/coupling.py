"""The twin on the bus: what couples the engine to the daemon, the nodes and the operator.

``TwinLink(twin, daemon, site, virtual=...)`` is called once per twin step (``after_step()``):

- twin state goes out retained on ``<root>/_host/twin`` (every ``state_every_s`` of twin time), so
  Telegraf, Grafana and `gridtwin tail` see the plant without another path;
- twin events become alerts: stored by the daemon, published retained on
  ``<root>/_host/alerts/<component>/<type>`` while active, cleared with an empty retained message;
- a component whose state changes (supply lost or back, fault, a load that moved by more than
  ``load_step``) gets a command on its plant node, unless the node is wired to HIL inputs (below),
  so the node's OLED and telemetry show what the twin knows; commands go through the daemon's
  dispatcher on a worker thread and never hold up the twin;
- virtual nodes are fed from the twin continuously (``_feed``), each at half its sample interval
  of twin time: its chips measure what a real sensor would, and a plant-role node's HIL inputs
  (supply, fault, load, battery) carry what its component does; such a node needs no commands.
  ``history`` keeps, per feed, the host's clock, the twin's time and what each node should read
  (gridtwin.twin.sensorfeed.readings): the demo test compares the stored readings with it;
- hardware in the loop: telemetry from a node that is *not* virtual overrides the twin's metric of
  the same name on its component (``twin.override``), so a real INA226 on EL1 drives the model.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time

from gridtwin.daemon.alerts import alert_key
from gridtwin.twin.sensorfeed import PLANT_ROLES, feed, plant_readings, readings

log = logging.getLogger("gridtwin.twin")


class TwinLink:
    def __init__(
        self,
        twin,
        daemon,
        site,
        *,
        virtual=(),
        fleet=None,
        state_every_s: float = 1.0,
        load_step: float = 0.1,
        command_timeout: float = 10.0,
    ):
        self.twin, self.daemon, self.site, self.fleet = twin, daemon, site, fleet
        self.virtual = set(virtual)
        self.state_every_s = state_every_s
        self.load_step = load_step
        self.command_timeout = command_timeout
        self._next_state = 0.0
        self._told: dict[str, dict] = {}  # node -> what it was last told
        self.overrides = 0
        self.state: dict = {}  # the last published twin state
        self.commands_sent = 0
        self.command_errors = 0
        self.events: list = []  # every event seen, in order (the demo's log, the tests' record)
        self._roles = {n.id: n.role for n in site.nodes}
        by = twin.topo.by_id
        # a twin event's alert (<component>/<type>) left active by a previous run ends with that
        # run: this twin starts afresh and raises again what happens again (node health and
        # analytics keep theirs)
        for key in [
            k
            for k in daemon.alerts.active
            if k.count("/") == 1
            and k.split("/")[0] in by
            and not k.split("/")[1].startswith("node_")
        ]:
            daemon.alerts.clear(key)
        self._parents = {n: list(by[n].parents) if n in by else [] for n in self._roles}
        # virtual nodes: fed every half sample interval (twin s); HIL-wired ones get no commands
        nodes = fleet.nodes if fleet is not None else {}
        self._feed_every = {
            n: max(v.config.get("sample_ms", 1000) / 2000.0, twin.dt * 0.999)
            for n, v in nodes.items()
        }
        self._next_feed = dict.fromkeys(nodes, 0.0)
        self._fed: dict[str, dict] = {}
        self.hil = {n for n, v in nodes.items() if (v.config.get("params") or {}).get("hil")}
        # (host time.time(), twin t, {node: {metric: what the node should read}}), one per feed
        self.history: collections.deque = collections.deque(maxlen=100000)
        self._hil: collections.deque = collections.deque(maxlen=10000)  # (node, metric, value)
        self._work: queue.Queue = queue.Queue(maxsize=1000)
        # a few senders, so one slow node does not hold up the commands of the others
        self._workers = [
            threading.Thread(target=self._send_loop, name=f"twin-commands-{i}", daemon=True)
            for i in range(4)
        ]
        for w in self._workers:
            w.start()
        daemon.on_readings(self._on_telemetry)

    # --- once per step ---
    def after_step(self) -> None:
        twin = self.twin
        for ev in twin.drain_events():
            self.events.append(ev)
            self._alert(ev)
        if self.fleet is not None:
            self._feed()
        if twin.t + 1e-9 < self._next_state:
            return
        self._next_state = twin.t + self.state_every_s
        state = twin.state()
        while self._hil:  # readings from real nodes, taken in on the twin's own thread
            node, metric, value = self._hil.popleft()
            comp = state.get(node)
            if comp is not None and metric in comp["m"]:
                twin.override(node, metric, value)
                self.overrides += 1
        self.state = state
        self.daemon.publish_host(
            "twin",
            {
                "t": round(twin.t, 3),
                "components": {
                    cid: {"kind": c["kind"], "status": c["status"], "m": c["m"]}
                    for cid, c in state.items()
                },
            },
        )
        self._tell_nodes(state)

    def _feed(self) -> None:
        # the nodes due (each at half its sample interval): what their world measures now
        t = self.twin.t
        due = [n for n, at in self._next_feed.items() if t + 1e-9 >= at]
        if not due:
            return
        state = self.twin.state()
        # stamped before the first node is fed: a node may read the new values from then on (a
        # stamp taken after the loop is late by whatever held this thread, e.g. the GIL, meanwhile)
        now = time.time()
        expect = {}
        for n in due:
            self._next_feed[n] = t + self._feed_every[n]
            vnode = self.fleet.nodes[n]
            node, role = self.site.node(n), self._roles[n]
            values = feed(vnode.config, node, role, state, self._parents[n])
            if values != self._fed.get(n):
                self._fed[n] = values
                vnode.feed(values)
            expect[n] = readings(role, node, state, self._parents[n], vnode.config)
        self.history.append((now, t, expect))

    def close(self) -> None:
        self.daemon.on_readings(self._on_telemetry, remove=True)
        for w in self._workers:
            self._work.put(None)
        for w in self._workers:
            w.join(5)

    # --- alerts ---
    def _alert(self, ev) -> None:
        # the daemon's alerts: stored, retained on _host/alerts/<component>/<type> while active,
        # cleared empty
        key = alert_key(ev.component, ev.type.replace(":", "_"))
        if ev.state == "start":
            message = f"{ev.component}: {ev.type.replace('_', ' ')}" + (
                f" ({', '.join(f'{k}={v}' for k, v in ev.detail.items())})" if ev.detail else ""
            )
            self.daemon.alerts.raise_(
                key,
                ev.severity,
                ev.type,
                message,
                ev.component,
                t=ev.t,
                component=ev.component,
                type=ev.type,
                active=True,
            )
        elif ev.state == "clear":
            self.daemon.alerts.clear(key)
        log.info("twin event t=%.1f %s %s %s", ev.t, ev.component, ev.type, ev.state)

    # --- commands to nodes whose component changed ---
    def _tell_nodes(self, state: dict) -> None:
        # Only online nodes are told; what an offline node was not told it is told when it is back
        # (its "told" record stays behind the twin until then).
        for node, role in self._roles.items():
            c = state.get(node)
            if (
                c is None
                or role not in PLANT_ROLES
                or node in self.hil
                or not self.daemon.dispatcher.is_online(node)
            ):
                continue
            # what the node should report (a UPS's supply is its input, not its output)
            want = plant_readings(role, c, [state[p] for p in self._parents[node] if p in state])
            told = self._told.setdefault(node, {})
            if role == "generator":
                self._change(
                    node,
                    told,
                    "running",
                    bool(want["supply"]),
                    lambda on: ("start" if on else "stop", {}),
                )
            else:
                self._change(
                    node,
                    told,
                    "supply",
                    bool(want["supply"]),
                    lambda on: ("set_supply", {"on": on}),
                )
            self._change(
                node, told, "fault", bool(want["fault"]), lambda on: ("set_fault", {"on": on})
            )
            # a load that moved by more than load_step (a node without HIL inputs keeps the last)
            kw = round(float(c["m"].get("p_kw", 0.0)), 2)
            last = told.get("kw")
            if kw > 0 and (last is None or abs(kw - last) > max(self.load_step * abs(last), 0.2)):
                told["kw"] = kw
                self._queue(node, "set_load", {"kw": kw})

    def _change(self, node, told, key, value, command) -> None:
        if told.get(key) != value:
            told[key] = value
            self._queue(node, *command(value))

    def _queue(self, node: str, cmd: str, args: dict) -> None:
        try:
            self._work.put_nowait((node, cmd, args))
        except queue.Full:
            self.command_errors += 1

    def _send_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            node, cmd, args = item
            try:
                ack = self.daemon.dispatcher.send(
                    node, cmd, args, timeout=self.command_timeout, ttl=self.command_timeout
                )
                self.commands_sent += 1
                if not ack.get("ok"):
                    self.command_errors += 1
                    log.warning("%s refused %s %s: %s", node, cmd, json.dumps(args), ack.get("err"))
            except Exception as exc:  # an offline node or a timeout must not stop the twin
                self.command_errors += 1
                log.warning("command %s to %s failed: %s", cmd, node, exc)

    # --- hardware in the loop ---
    def _on_telemetry(self, batch) -> None:
        # ingest's thread, after each committed batch: only note the readings of real (not
        # virtual) nodes; after_step applies them between steps
        for tel in batch:
            if tel.node in self.virtual or tel.hist:
                continue
            for metric, value in tel.m.items():
                self._hil.append((tel.node, metric, value))


def run_with_daemon(daemon, site, *, seed: int | None = None) -> int:
    """`gridtwin daemon --twin`: the daemon plus the twin in real time (at [twin].speed), every node
    treated as real (its telemetry overrides the model) until SIGINT/SIGTERM."""
    import signal

    from gridtwin.twin import Twin
    from gridtwin.twin.scenario import run_realtime

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    daemon.start()
    twin = Twin.from_site(site, **({"seed": seed} if seed is not None else {}))
    link = TwinLink(twin, daemon, site)
    log.info(
        "twin running: %d components, step %.3g s, %g x real time",
        len(twin.state()),
        getattr(site.twin, "step_s", 0.1),
        twin.speed or 1.0,
    )
    try:
        run_realtime(
            twin,
            float("inf"),
            twin.speed or 1.0,
            on_step=lambda _t: link.after_step(),
            stop=done.is_set,
        )
    finally:
        link.close()
        daemon.stop()
    return 0
