"""The daemon as one object: ``Daemon(...).start()`` / ``.stop()`` / ``.run_forever()``.

It only wires and runs the parts: the store (``store_sqlite``), the one MQTT session (``bus``),
ingest, the dispatcher, alerts and node states (``alerts``), the InfluxDB forwarder when the site
selects it, the HTTP server (``metrics``: /healthz, /metrics, and the local API of ``api``), the
nodes' time server (``sntp``), the OPC UA collector of ``[[opcua.sources]]`` (``opcua.service``)
and a maintenance thread (node states, gap settling, retention).
Build it from a site (``Daemon.from_site(site)``) or from explicit parts (tests, benchmarks).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from gridtwin.daemon import validate
from gridtwin.daemon.alerts import Alerts, NodeWatch
from gridtwin.daemon.api import LocalApi
from gridtwin.daemon.bus import Bus
from gridtwin.daemon.dispatch import Dispatcher
from gridtwin.daemon.ingest import LINGER_S, Ingest
from gridtwin.daemon.metrics import Metrics, MetricsServer
from gridtwin.daemon.store_influx import InfluxConfig, InfluxWriter, SpoolForwarder
from gridtwin.daemon.store_sqlite import SqliteStore
from gridtwin.errors import ConfigError, GridTwinError
from gridtwin.sitedefaults import RECEIVE_MAXIMUM

log = logging.getLogger("gridtwin.daemon")
DAY_MS = 86400_000
# the maintenance thread woke this much later than it asked: the daemon stood still (_maintenance)
STOOD_STILL_S = 2.0


# The young generation's threshold once the daemon runs (CPython's default: 700). A batch of a
# few hundred messages holds thousands of tuples, payloads and dicts for a moment: at 700 that set
# off collections that found nothing to free (10,000 msg/s for 7 s: 6,153 of them, 250 ms of CPU).
GC_YOUNG = 20_000


def settle_gc() -> None:
    """For a process that runs the daemon, once it has started: what start-up built (modules,
    paho, SQLite, the web view) lives as long as the process and goes out of the collector's way
    (``gc.freeze``), and the young generation grows to GC_YOUNG. Measured at 10,000 msg/s over
    7 s (docs/scaling.md): 50 full collections took 330 ms, the longest 15.5 ms (every thread
    stopped, every reading waiting), and 18 ms in all, 0.5 ms at most, once frozen."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


class Daemon:
    def __init__(
        self,
        *,
        endpoint,
        db_path: Path | str,
        client_id: str = "gridtwin-daemon",
        known_nodes=None,
        shared_group: str = "",
        limits: validate.Limits = validate.DEFAULT_LIMITS,
        sync: str = "normal",
        batch_max: int = 20000,
        receive_maximum: int = RECEIVE_MAXIMUM,
        metrics_host: str = "127.0.0.1",
        metrics_port: int | None = 0,
        influx: InfluxConfig | None = None,
        influx_measurement: str = "telemetry",
        raw_days: int = 30,
        rollup_days: int = 730,
        site=None,
        stale_intervals: int = 3,
        watch_interval: float = 1.0,
        instance: int = 1,
        sntp=None,
        gap_grace_s: float = 600,
        linger_ms: int = round(LINGER_S * 1000),
        spill_owners=None,
    ):
        self.site = site
        self.sntp = sntp  # gridtwin.daemon.sntp.SntpServer: the nodes' time source, or None
        # Instances share the ingest ($share/) and, from a site, one database. Instance 1 is the one
        # the CLI talks to (daemon.json: cmd, tail, status) and the only one that watches the
        # registry and runs retention, so alerts and rollups happen once, not once per instance.
        self.instance = instance
        self.stale_intervals, self.watch_interval = stale_intervals, watch_interval
        self.gap_grace_s = gap_grace_s
        self.endpoint = endpoint
        self.metrics = Metrics()
        self.store = SqliteStore(db_path, sync=sync, check=True)
        # On a shared subscription each daemon sees only part of a node's seq numbers, so a
        # per-process high-water mark would report a gap at nearly every message.
        self.store.track_gaps = not shared_group
        self.known_nodes = None if known_nodes is None else list(known_nodes)
        if self.known_nodes:
            self.store.ensure_nodes(self.known_nodes)
        if instance == 1 and spill_owners:
            # spilled messages of an instance the site no longer runs would wait forever: the
            # first instance stores them (before anything it receives now)
            rows, msgs, owners = self.store.adopt_spilled(client_id, spill_owners)
            if rows:
                log.warning(
                    "%d spilled messages of %s (no longer a daemon instance of this site) are "
                    "stored by this one",
                    msgs,
                    ", ".join(owners),
                )
        self.bus = Bus(
            endpoint,
            client_id=client_id,
            shared_group=shared_group,
            receive_maximum=receive_maximum,
        )
        self.metrics.link = self.bus
        self.forwarder = (
            SpoolForwarder(self.store, InfluxWriter(influx), self.metrics) if influx else None
        )
        self.ingest = Ingest(
            self.bus,
            self.store,
            known_nodes=self.known_nodes,
            limits=limits,
            metrics=self.metrics,
            batch_max=batch_max,
            influx_measurement=influx_measurement if influx else None,
            on_spool=self.forwarder.wake.set if self.forwarder else None,
            linger_s=linger_ms / 1000,
        )
        self.dispatcher = Dispatcher(self.bus, self.store, self.known_nodes)
        self.ingest.batch_hooks.append(self.dispatcher.on_batch)
        self.alerts = Alerts(self.store, self.bus)
        self.nodewatch = NodeWatch(
            self.store,
            self.bus,
            self.alerts,
            site,
            stale_intervals,
            heard_until=self.ingest.heard_until,
        )
        self.bus.on_link.append(lambda event: event == "subscribed" and self.nodewatch.relisten())
        self.ingest.listeners.append(lambda tel: self.nodewatch.note(tel, ()))
        self.ingest.batch_hooks.append(lambda statuses, acks: self.nodewatch.note((), statuses))
        self.metrics.gauges["spool_depth"] = self.store.spool_depth
        # spilled messages not yet stored (ingest works them off once it caught up)
        self.metrics.gauges["spill_waiting"] = lambda: self.ingest.spill_waiting
        self.metrics.health_parts["spill_waiting"] = lambda: self.ingest.spill_waiting
        self.metrics.gauges["gap_readings_pending"] = self.store.pending_gaps
        if self.forwarder:  # only where there is an InfluxDB to reach
            self.metrics.gauges["influx_reachable"] = lambda: int(self.forwarder.reachable)
        self.metrics.node_gauges = self._node_gauges
        # set when a worker thread dies: run_forever returns non-zero so a supervisor restarts us
        self.failed = threading.Event()
        self.ingest.on_fatal = lambda name: self.failed.set()
        self._stop = threading.Event()
        self.api = LocalApi(
            self.dispatcher,
            Path(db_path).parent / ("daemon.json" if instance == 1 else f"daemon-{instance}.json"),
            stopping=self._stop.is_set,
        )
        self.ingest.listeners.append(self.api.feed)
        # analytics reads what ingest committed, from a bounded queue, in a process of its own
        # (gridtwin.analytics.process: it never takes the GIL from ingest); once per site
        # (instance 1), off for a daemon built without a site (tests and benchmarks set their own)
        from gridtwin.analytics.process import AnalyticsProcess

        self.analytics = (
            AnalyticsProcess.from_daemon(self) if instance == 1 and site is not None else None
        )
        if self.analytics:
            self.on_readings(self.analytics.feed)
            self.ingest.idle_hooks.append(self.analytics.idle)
        self.metrics_server = None
        if metrics_port is not None:
            try:
                self.metrics_server = MetricsServer(
                    self.metrics,
                    metrics_host,
                    metrics_port,
                    token=self.api.token,
                    private=LocalApi.PRIVATE,
                    routes={**self.api.routes(), **self._web_routes()},
                )
            except OSError as exc:
                self.store.close()
                raise GridTwinError(
                    f"cannot serve /healthz and /metrics on {metrics_host}:{metrics_port}: "
                    f"{exc.strerror or exc}",
                    hint="is another daemon running for this site? (`gridtwin daemon status`) "
                    "or set [daemon] metrics_port",
                ) from None
        self.raw_days, self.rollup_days = raw_days, rollup_days
        self._maint: threading.Thread | None = None
        # [[opcua.sources]]: the OPC UA collector (gridtwin/opcua/service.py), once per site
        self.opcua = None
        if instance == 1 and site is not None and site.opcua.sources:
            from gridtwin.opcua.service import CollectorService

            self.opcua = CollectorService(
                site,
                self.store,
                listeners=[self._opcua_listener],
                wake=self.forwarder.wake if self.forwarder else None,
            )
            self.metrics.gauges.update(self.opcua.gauges())
            self.metrics.health_parts["opcua"] = self.opcua.health

    @classmethod
    def from_site(cls, site, instance: int = 1, **overrides) -> "Daemon":
        """The daemon a site file describes ([broker], [storage], [daemon], nodes, PKI).

        ``instance`` K (1..[daemon] instances) connects with its own certificate
        (``pki.host_identity``), so the broker gives it a session of its own; with more than one
        instance all of them ingest through ``$share/<group>/`` into the one SQLite database
        (WAL; the (node, boot, seq) key keeps a message redelivered to another instance once).
        """
        from gridtwin.daemon import config
        from gridtwin.daemon.connection import endpoint_from_site
        from gridtwin.pki import host_identity

        st, d = site.storage, site.daemon
        influx = None
        if st.backend == "influxdb":
            token = ""
            if st.influx_token_file:
                tf = Path(st.influx_token_file).expanduser()
                tf = tf if tf.is_absolute() else Path(site.dir) / tf
                try:
                    token = tf.read_text().strip()
                except OSError as exc:
                    raise ConfigError(
                        site.path,
                        "storage.influx_token_file",
                        f"cannot read {tf}: {exc}",
                        "put the InfluxDB token in that file (chmod 600)",
                    ) from None
            influx = InfluxConfig(
                url=st.influx_url,
                api=st.influx_api,
                org=st.influx_org,
                bucket=st.influx_bucket,
                token=token,
            )
        identity = host_identity(
            site, instance
        )  # ConfigError naming daemon.instances if out of range
        metrics_port = d.metrics_port + instance - 1 if d.metrics_port else None
        client_ids = config.client_ids(site)
        client_id = client_ids[instance - 1]
        kw = dict(
            endpoint=endpoint_from_site(site, identity),
            db_path=config.db_path(site),
            client_id=client_id,
            known_nodes=site.node_ids,
            shared_group=config.shared_group(site),
            instance=instance,
            spill_owners=client_ids,
            limits=validate.Limits(
                max_bytes=st.max_payload,
                max_past_ms=st.max_past_days * DAY_MS,
                max_future_ms=st.max_future_s * 1000,
            ),
            sync=st.sync,
            batch_max=d.batch_max,
            receive_maximum=d.receive_maximum,
            metrics_host=d.metrics_host,
            metrics_port=metrics_port,
            influx=influx,
            influx_measurement=st.influx_measurement,
            raw_days=st.raw_days,
            rollup_days=st.rollup_days,
            site=site,
            stale_intervals=d.stale_intervals,
            gap_grace_s=d.gap_grace_s,
            linger_ms=d.linger_ms,
        )
        if (
            instance == 1
        ):  # the nodes' time: one responder per host ([network] ntp_serve/ntp_port/ntp_bind)
            from gridtwin.daemon.sntp import from_site as sntp_from_site

            kw["sntp"] = sntp_from_site(site)
        kw.update(overrides)
        return cls(**kw)

    def _lock_instance(self) -> None:
        """One daemon per database and client id: a second one would take over the first one's
        broker session (same client id) and both would lose track of what is acked."""
        import fcntl

        path = Path(f"{self.store.path}.{self.bus.client_id}.lock")
        self._lockfile = open(path, "w")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockfile.close()
            self._lockfile = None
            raise GridTwinError(
                f"another daemon is running with {self.store.path} as {self.bus.client_id}",
                hint="stop it first (`gridtwin daemon status` shows it); to run more daemons "
                "set [daemon] instances and start each with its own --instance K (own "
                "certificate and client_id)",
            ) from None

    def start(self) -> "Daemon":
        self._lock_instance()
        if self.metrics_server:
            self.metrics_server.start()
            if self.web_remote:
                self.web_remote.start()
        self.store.start_checkpointer()
        if self.forwarder:
            self.forwarder.start()
        if self.analytics:
            self.analytics.start()
        self.ingest.start()  # the writer first: the bus delivers as soon as it is subscribed
        self.bus.start()
        if self.opcua:
            self.opcua.start()
            self.metrics.watch(self.opcua.thread)
        self.metrics.watch(self.ingest._writer)
        if self.forwarder:
            self.metrics.watch(self.forwarder._thread)
        if self.sntp:
            try:
                self.sntp.start()
            except (
                GridTwinError
            ):  # a [network] ntp_port we may not bind: one clear line, nothing left running
                self.stop()
                raise
        if self.metrics_server:
            # how the CLI finds this daemon (the port may be ephemeral) and proves it may command it
            self.api.publish_state(
                self.metrics_server.httpd.server_address[0], self.metrics_server.port
            )
        if self.instance == 1:  # registry alerts and retention once per site (see __init__)
            self._maint = threading.Thread(
                target=self._maintenance, name="maintenance", daemon=True
            )
            self._maint.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.metrics.stopping = True
        self.api.withdraw_state()
        self.ingest.stop()  # store what was received; unacked messages come back from the broker
        self.bus.stop()
        if self.opcua:
            self.opcua.stop()  # commits what it queued
        if self.sntp:
            self.sntp.stop()
        if self.forwarder:
            self.forwarder.stop()
        if self.metrics_server:
            self.metrics_server.stop()
            if self.web_remote:
                self.web_remote.stop()
        if self._maint:
            self._maint.join(timeout=10)
        if self.analytics:
            self.analytics.stop()  # analyses what ingest stored last, saves its state
        self.store.close()
        if getattr(self, "_lockfile", None):
            self._lockfile.close()  # releases the lock

    def run_forever(self) -> int:
        """Run until SIGINT, SIGTERM or SIGHUP (0), or until a worker thread dies (1: a supervisor
        such as systemd's Restart=on-failure starts a fresh daemon, and the broker redelivers)."""
        done = self.failed
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        settle_gc()  # this process is the daemon's: start-up's objects out of the collector's way
        where = f" /metrics on port {self.metrics_server.port}" if self.metrics_server else ""
        log.info("daemon running: database %s,%s", self.store.path, where)
        while not done.wait(1.0):
            pass
        dead = self.metrics.dead_threads()
        log.info(
            "stopping: storing what was received; the broker keeps the rest for the next start"
        )
        self.stop()
        if dead:
            log.error("exiting with status 1: %s stopped", ", ".join(dead))
            return 1
        return 0

    # -- what the rest of the process uses -----------------------------------------------------
    def on_readings(self, fn, remove: bool = False) -> None:
        """Call ``fn(list[Telemetry])`` after each committed batch (the twin link, the tail API)."""
        if not remove:
            self.ingest.listeners.append(fn)
        elif fn in self.ingest.listeners:
            self.ingest.listeners.remove(fn)

    def _opcua_listener(self, tels) -> None:
        """OPC UA points after their commit go to analytics and `tail` (not to the twin link, the
        node registry or the web view's fleet: a machine is not a node of the fleet)."""
        if self.analytics:
            self.analytics.feed_points(tels)
        self.api.feed(tels)

    def publish_host(self, suffix: str, payload, retain: bool = True) -> None:
        """``<root>/_host/<suffix>`` on the daemon's one session (see Bus.publish_host)."""
        self.bus.publish_host(suffix, payload, retain)

    def judged_states(self) -> dict[str, str] | None:
        """The node watch's states for the daemon's own views (registry.fleet's ``judged``) while
        the daemon listens; None while its link is down, when it knows no better than the table
        (whose ages then turn every node stale, as the nodes may well be)."""
        return self.nodewatch.states if self.bus.subscribed else None

    def watch_registry(self, now_ms: int | None = None) -> dict[str, str]:
        return self.nodewatch.check(now_ms)

    def maintain(self, now_ms: int | None = None) -> int:
        """Retention: raw readings older than raw_days become 1-minute rollups; old rollups go."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        folded = self.store.downsample(now_ms - self.raw_days * DAY_MS)
        self.store.drop_rollups(now_ms - self.rollup_days * DAY_MS)
        if folded:
            log.info(
                "retention: %d raw readings older than %d days folded into 1-minute rollups",
                folded,
                self.raw_days,
            )
        return folded

    def settle_gaps(self, now_ms: int | None = None) -> list:
        """Confirm the seq gaps that replay did not fill within gap_grace_s: only these count as
        missing readings (a gap the node's outbox replay fills a moment later never does)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        confirmed = self.store.settle_gaps(now_ms - int(self.gap_grace_s * 1000))
        for node, boot, after, missing in confirmed:
            self.metrics.gaps += 1
            self.metrics.missing += missing
            log.warning(
                "gap node=%s boot=%s: %d message(s) after seq %d never arrived (not replayed "
                "within %g s)",
                node,
                boot,
                missing,
                after,
                self.gap_grace_s,
            )
        return confirmed

    def _web_routes(self) -> dict:
        """The web view's pages and live stream (gridtwin.web), served on this same server."""
        from gridtwin.web import WebView

        from gridtwin.web.remote import RemoteWeb

        self.web = WebView.for_daemon(self)
        # beyond loopback only over HTTPS with a login ([web] host; None when unset)
        self.web_remote = (
            RemoteWeb.from_site(self.web, self.site) if self.site is not None else None
        )
        return self.web.routes()

    def _node_gauges(self) -> list:
        """Per-node gauges for /metrics: state, age and the health the node reported last."""
        from gridtwin.daemon.registry import fleet

        now_ms = int(time.time() * 1000)
        rows = {r["id"]: r for r in self.store.nodes()}  # read once, for the views and the rest
        out = []
        judged = self.judged_states()
        for v in fleet(self.store, self.site, now_ms, self.stale_intervals, rows, judged):
            r = rows.get(v.id, {})
            out.append(
                (
                    v.id,
                    {
                        "online": int(v.state == "online"),
                        "last_seen_seconds": None if v.age_s is None else round(v.age_s, 1),
                        "rssi_dbm": r.get("rssi"),
                        "heap_free_bytes": r.get("heap"),
                        "heap_min_bytes": r.get("heap_min"),
                        "outbox": r.get("outbox"),
                        "drops": r.get("drops"),
                        "rejected": r.get("rejected") or 0,
                    },
                )
            )
        return out

    def _maintenance(self) -> None:
        """Instance 1's housekeeping thread: node states and alerts every watch_interval, gap
        settling every few seconds, retention hourly."""
        next_retention = time.monotonic() + 3600
        next_gaps = 0.0
        next_compact = (
            time.monotonic() + 300
        )  # readings older than 5 min -> compressed blocks (issue #20)
        while True:
            asleep = time.monotonic()
            if self._stop.wait(self.watch_interval):
                return
            overslept = time.monotonic() - asleep - self.watch_interval
            if overslept > STOOD_STILL_S:
                # the wait (not this thread's own work: a long compaction is no standstill) ran
                # over: the process (SIGSTOP, swapped out) or the machine (a VM paused) stood
                # still and heard nothing meanwhile; what the nodes sent is still on its way from
                # the broker, as after a resubscribe
                log.warning(
                    "the daemon stood still for %.1f s; node silence counts from now", overslept
                )
                self.nodewatch.relisten()
            try:
                if self.bus.subscribed:
                    self.nodewatch.check()
                if self.store.track_gaps and time.monotonic() >= next_gaps:
                    next_gaps = time.monotonic() + min(10.0, self.gap_grace_s / 2)
                    self.settle_gaps()
                if time.monotonic() >= next_compact:
                    next_compact = time.monotonic() + 60
                    # rows analytics has yet to read back stay rows (by rowid) until it has
                    self.store.compact(
                        keep_from=self.analytics.replay_floor() if self.analytics else None
                    )
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + 3600
                    self.maintain()
            except GridTwinError as exc:
                log.error("maintenance failed: %s", exc)
            except Exception:  # the watcher must not die silently: log and keep going
                log.exception("maintenance failed")
