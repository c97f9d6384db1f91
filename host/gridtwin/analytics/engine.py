"""The analytics engine: committed readings in, alerts, reading quality and KPIs out.

Placement: ingest's writer commits a batch, then calls its listeners; ``Analytics.feed`` (one of
them) only appends the batch to a bounded queue and returns. A worker thread of its own drains the
queue, runs every detector (gridtwin.analytics.base) and turns findings into alerts
(gridtwin.daemon.alerts, one model with node health and the twin). When analytics falls behind,
what does not fit ``queue_max`` readings is dropped, counted (``gridtwin_analytics_dropped_total``)
and said (one log line a minute): ingest never waits.

Alerts from findings: a condition (limits, rules) must hold ``min_duration_s`` of reading time
before it raises, and clears when its detector says so (each detector has its hysteresis); a point
anomaly (sigma, iforest: ``detail["instant"]``) raises at once and clears after ``clear_after_s``
of reading time without another. Detector state, these timers and the KPI counters are saved in the
daemon's database every minute and at stop, and restored at start; active alerts are the store's.

Detectors beyond the core (IsolationForest, predictive maintenance) plug in through ``PLUGINS``:
a module with ``from_context(ctx) -> Detector | None``, skipped when not installed.
"""

from __future__ import annotations

import collections
import importlib
import logging
import threading
import time

from gridtwin.analytics import base, config
from gridtwin.analytics.base import Context, Finding
from gridtwin.analytics.derived import derivers
from gridtwin.analytics.detectors import LimitDetector, RuleDetector, SigmaDetector
from gridtwin.analytics.kpi import EnergyKpi
from gridtwin.analytics.notify import SEVERITY_RANK, Notifier
from gridtwin.daemon.alerts import alert_key

log = logging.getLogger("gridtwin.analytics")
PLUGINS = ("gridtwin.analytics.iforest", "gridtwin.analytics.maintenance")
SAVE_EVERY_S = 60.0


class Analytics:
    def __init__(
        self,
        store,
        alerts,
        *,
        site=None,
        metrics=None,
        section=None,
        clock=None,
        detectors=None,
        influx_measurement: str | None = None,
        plugins=PLUGINS,
        notify: bool = True,
    ):
        section = section if section is not None else config.section(site)
        self.section = section
        self.store, self.alerts, self.metrics = store, alerts, metrics
        self.ctx = Context(
            site=site, store=store, config=section, **({"clock": clock} if clock else {})
        )
        resolver = config.Resolver(section, site)
        if detectors is None:
            detectors = [LimitDetector(self.ctx, resolver), RuleDetector(self.ctx, resolver)]
            if config.setting(section, "sigma"):
                detectors.append(
                    SigmaDetector(
                        self.ctx,
                        config.setting(section, "sigma_warmup"),
                        config.setting(section, "sigma_halflife"),
                        config.setting(section, "sigma_roles"),
                        resolver,
                    )
                )
            self.kpi = EnergyKpi(
                self.ctx,
                aggregation_s=config.setting(section, "aggregation_s"),
                rte_window_s=config.setting(section, "rte_window_s"),
                influx_measurement=influx_measurement,
            )
            detectors.append(self.kpi)
            for mod in plugins:
                det = _plugin(mod, self.ctx)
                if det is not None:
                    detectors.append(det)
        else:
            self.kpi = next((d for d in detectors if isinstance(d, EnergyKpi)), None)
        self.detectors = list(detectors)
        self.min_duration_ms = int(config.setting(section, "min_duration_s") * 1000)
        self.sigma_rank = SEVERITY_RANK[config.setting(section, "sigma_alert")]
        self.counts: dict = {}  # (kind, severity) -> findings (alerted or not)
        self.clear_after_ms = int(config.setting(section, "clear_after_s") * 1000)
        self.queue_max = config.setting(section, "queue_max")
        self._derive = derivers(site)
        # the queue: batches of Telemetry as ingest committed them, and how many readings they hold
        self._q: collections.deque = collections.deque()
        self._queued = 0
        self._cv = threading.Condition()
        self.dropped = 0  # readings analytics never saw (queue full)
        self.analysed = 0  # readings through the detectors
        self.findings = 0
        self._last_drop_log = 0.0
        # alert timers, by alert key: when a condition was first seen (reading ms) and, for point
        # anomalies, when it was last seen
        self._since: dict[str, int] = {}
        self._instant: dict[str, int] = {}
        self._latest_ts = 0  # the newest reading time analysed: the clock of alert timers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.next_tick = self._next_save = time.monotonic()  # housekeeping's next times
        self.notifier = Notifier(  # notify=False: the caller notifies (analytics.process)
            config.setting(section, "notify_command") if notify else "",
            config.setting(section, "notify_url") if notify else "",
            config.setting(section, "notify_timeout_s"),
            config.setting(section, "notify_severity"),
        )
        if self.notifier.enabled:
            alerts.listeners.append(self.notifier)
        if metrics is not None:
            metrics.gauges["analytics_dropped_total"] = lambda: self.dropped
            metrics.gauges["analytics_readings_total"] = lambda: self.analysed
            metrics.gauges["analytics_queue"] = lambda: self._queued
            metrics.gauges["alerts_raised_total"] = lambda: alerts.counters("raised")
            metrics.gauges["alerts_cleared_total"] = lambda: alerts.counters("cleared")
            metrics.gauges["alerts_active"] = lambda: len(alerts.active)
            metrics.gauges["analytics_notify_failed_total"] = lambda: self.notifier.failed
            metrics.gauges["analytics_findings_total"] = lambda: {
                f'{{kind="{k}",severity="{s}"}}': n for (k, s), n in sorted(self.counts.items())
            }
        self.restore()

    @classmethod
    def from_daemon(cls, daemon) -> "Analytics | None":
        """The analytics of a daemon's site ([analytics] enabled), or None."""
        section = config.section(daemon.site)
        if section is not None and not section.enabled:
            return None
        return cls(
            daemon.store,
            daemon.alerts,
            site=daemon.site,
            metrics=daemon.metrics,
            section=section,
            influx_measurement="analytics" if daemon.forwarder else None,
        )

    # -- the ingest side: cheap, never blocks -------------------------------------------------
    def feed(self, tels) -> None:
        """Ingest's listener (the writer thread, after a commit): queue the batch or drop it."""
        n = 0
        for t in tels:
            n += len(t.m)
        with self._cv:
            if self._queued + n > self.queue_max:
                self.dropped += n
                drop = True
            else:
                self._q.append(tels)
                self._queued += n
                drop = False
                self._cv.notify()
        if drop:
            config.say_behind(self)

    def feed_points(self, tels) -> None:
        """OPC UA points after their commit: as readings (in-process there is nothing to read
        back: AnalyticsProcess.feed_points)."""
        self.feed(tels)

    def replay_floor(self) -> None:
        """Rows compaction must leave (AnalyticsProcess.replay_floor): none, nothing is read back
        here."""
        return None

    # -- the worker -----------------------------------------------------------------------------
    def start(self) -> "Analytics":
        self.notifier.start()
        self._thread = threading.Thread(target=self._run, name="analytics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(30)
        self.notifier.stop()
        try:
            self.save()
        except Exception:
            log.exception("analytics: cannot save its state")

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._q and not self._stop.is_set():
                    self._cv.wait(max(0.0, min(self.next_tick - time.monotonic(), 1.0)))
                batches = list(self._q)
                self._q.clear()
                self._queued = 0
            try:
                for tels in batches:
                    self.process(tels)
                self.housekeeping()
            except Exception:  # a detector's bug must not end analytics: log it and go on
                log.exception("analytics failed on a batch")
            if self._stop.is_set() and not self._q:
                return

    def housekeeping(self) -> None:
        """The worker's periodic part (also the analytics process's loop): detectors' ticks and
        point anomalies' expiry every second, the state saved every SAVE_EVERY_S."""
        now = time.monotonic()
        if now >= self.next_tick:
            self.next_tick = now + 1.0
            self.tick(self.ctx.now_ms())
        if now >= self._next_save:
            self._next_save = now + SAVE_EVERY_S
            self.save()

    def drain(self) -> None:
        """Analyse what is queued now, on the caller's thread (tests, benchmarks without the
        worker)."""
        with self._cv:
            batches = list(self._q)
            self._q.clear()
            self._queued = 0
        for tels in batches:
            self.process(tels)

    def readings(self, tels) -> list[base.Reading]:
        out = []
        derive = self._derive
        for t in tels:
            node, ts, m = t.node, t.ts, t.m
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append((node, k, ts, v))
            fn = derive.get(node)
            if fn is not None:
                for k, v in fn(m).items():
                    out.append((node, k, ts, v))
        return out

    def process(self, tels) -> list[Finding]:
        """Run every detector over one committed batch (Telemetry objects); handle their
        findings."""
        return self.observe(self.readings(tels))

    def observe(self, batch: list[base.Reading]) -> list[Finding]:
        if not batch:
            return []
        n = len(batch)
        for r in batch:
            if r[2] > self._latest_ts:
                self._latest_ts = r[2]
        found: list[Finding] = []
        for det in self.detectors:
            try:
                new = det.observe(batch)
            except Exception:
                log.exception("analytics: detector %s failed", getattr(det, "name", det))
                continue
            found += new
            bad = {(f.node, f.metric, f.ts) for f in new if f.quality == "BAD"}
            if (
                bad
            ):  # a physically impossible reading feeds no rule, statistic or KPI after the limits
                batch = [r for r in batch if (r[0], r[1], r[2]) not in bad]
        self.handle(found)
        self.analysed += n  # once the detectors are done: whoever reads the count sees their work
        return found

    def tick(self, now_ms: int) -> list[Finding]:
        found: list[Finding] = []
        for det in self.detectors:
            try:
                found += base.tick(det, now_ms)
            except Exception:
                log.exception("analytics: detector %s failed", getattr(det, "name", det))
        self.handle(found)
        self._expire()
        return found

    # -- findings -> alerts -------------------------------------------------------------------
    def handle(self, found: list[Finding]) -> None:
        quality = []
        for f in found:
            self.findings += 1
            if f.quality in ("UNCERTAIN", "BAD"):
                quality.append((f.node, f.metric, f.ts, f.value, f.quality))
            key = alert_key(f.node, f.kind, f.metric)
            if f.cleared:
                self._since.pop(key, None)
                self._instant.pop(key, None)
                self.alerts.clear(key)
                continue
            ks = (f.kind, f.severity)
            self.counts[ks] = self.counts.get(ks, 0) + 1
            if f.kind == "sigma" and SEVERITY_RANK.get(f.severity, 2) < self.sigma_rank:
                continue  # counted, not alerted (sigma_alert)
            if f.detail.get("instant"):
                self._instant[key] = f.ts
                if key not in self.alerts.active:
                    self._raise(key, f)
                continue
            if key in self.alerts.active:
                continue
            since = self._since.setdefault(key, f.ts)
            if f.ts - since >= self.min_duration_ms:
                self._since.pop(key, None)
                self._raise(key, f)
        if quality:
            self.store.write_quality(quality)

    def _raise(self, key: str, f: Finding) -> None:
        # raised and cleared are the host's times (as for every alert); the reading's time is in
        # detail (a replay or a demo's fast clock stamps readings far from now)
        detail = {k: v for k, v in f.detail.items() if k != "instant"}
        detail["reading_ts"] = f.ts
        self.alerts.raise_(
            key,
            f.severity,
            f.kind,
            f.description,
            f.node,
            metric=f.metric,
            value=f.value,
            detail=detail,
            source="analytics",
            **({"quality": f.quality} if f.quality else {}),
        )
        log.warning("alert: %s", f.description)

    def _expire(self) -> None:
        """Point anomalies quiet for clear_after_s of reading time are over."""
        horizon = self._latest_ts - self.clear_after_ms
        for key, last in list(self._instant.items()):
            if last <= horizon:
                del self._instant[key]
                self.alerts.clear(key)

    # -- across restarts ----------------------------------------------------------------------
    def save(self) -> None:
        for det in self.detectors:
            st = base.state_of(det)
            if st is not None:
                self.store.save_state(f"detector:{det.name}", st)
        self.store.save_state(
            "engine", {"since": self._since, "instant": self._instant, "latest": self._latest_ts}
        )

    def restore(self) -> None:
        try:
            for det in self.detectors:
                saved = self.store.load_state(f"detector:{det.name}")
                if saved is not None:
                    base.restore(det, saved)
            eng = self.store.load_state("engine") or {}
        except Exception:  # a damaged state starts analytics afresh, it never stops the daemon
            log.exception("analytics: cannot restore its saved state; starting afresh")
            return
        active = self.alerts.active
        self._since = {k: v for k, v in eng.get("since", {}).items()}
        self._instant = {k: v for k, v in eng.get("instant", {}).items() if k in active}
        self._latest_ts = eng.get("latest", 0)


def _plugin(module: str, ctx: Context):
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    make = getattr(mod, "from_context", None)
    if make is None:
        return None
    try:
        return make(ctx)
    except Exception:
        log.exception("analytics: %s could not start", module)
        return None
