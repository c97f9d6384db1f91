"""The one interface between the analytics engine and its detectors.

A detector is constructed with a ``Context`` and then only sees committed readings, in the order
ingest committed them, on the analytics worker thread (never on the writer's):

    det = SomeDetector(ctx, **its_config)
    findings = det.observe([(node, metric, ts_ms, value), ...])   # every drained batch
    findings += det.tick(now_ms)                                   # about once a second (optional)
    saved = det.state(); ...; det.restore(saved)                   # across restarts (optional)

A ``Finding`` says "this (node, metric) is abnormal now"; the engine owns what follows (alert
hysteresis, minimum duration, storage, the retained MQTT topic, the notifier). A detector reports a
condition each time it still holds (or only when it starts: the engine keeps it active until the
detector reports ``cleared``; a point anomaly, ``detail["instant"] = True``, until none has been
reported for ``clear_after_s``).

Plugging in: the engine (gridtwin.analytics.engine.PLUGINS) imports each listed module and calls its
``from_context(ctx) -> Detector | None`` (None: not configured, or its dependency missing); the
site's ``[analytics]`` Record is ``ctx.config``.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

#: one committed reading as detectors see it: (node id, metric name, timestamp in ms, value)
Reading = tuple[str, str, int, float]

SEVERITIES = ("low", "medium", "high")
QUALITIES = ("GOOD", "UNCERTAIN", "BAD")  # the OPC UA convention


@dataclass
class Finding:
    node: str
    metric: str
    ts: int  # ms, the reading's time (not the wall clock when it was analysed)
    value: float | None
    kind: str  # "limit", "rule:drop", "rule:rise", "rule:ratio", "rule:deviation", "sigma",
    # "iforest", "maintenance", ... : the alert's <kind> (one active alert per node/kind/metric)
    severity: str  # one of SEVERITIES
    description: str  # one line a user can act on
    quality: str | None = None  # the reading's quality when the detector judges one (limits do)
    # True: the condition this detector reported for (node, metric, kind) is over
    cleared: bool = False
    detail: dict = field(
        default_factory=dict
    )  # JSON-able extras (threshold, window, score, prediction, ...)

    def key(self) -> tuple[str, str, str]:
        return (self.node, self.kind, self.metric)


@dataclass
class Context:
    """What a detector may use besides the readings it is fed."""

    site: object = None  # gridtwin.site.Site, or None (tests, bench)
    store: object = None  # a reader with SqliteStore's read methods (query, metric_names, ...)
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))  # now, ms
    config: object = None  # gridtwin.analytics.config.AnalyticsConfig of the site

    def now_ms(self) -> int:
        return self.clock()


@runtime_checkable
class Detector(Protocol):
    name: str  # unique per engine; the key of its saved state

    def observe(self, batch: list[Reading]) -> list[Finding]:
        """Findings for a batch of committed readings. Must be O(len(batch)), with bounded state."""
        ...


def tick(det, now_ms: int) -> list[Finding]:
    """``det.tick(now_ms)`` when the detector has periodic work, else nothing."""
    fn = getattr(det, "tick", None)
    return fn(now_ms) if fn else []


def state_of(det) -> dict | None:
    fn = getattr(det, "state", None)
    return fn() if fn else None


def restore(det, saved: dict) -> None:
    fn = getattr(det, "restore", None)
    if fn and saved is not None:
        fn(saved)


class LazyModule:
    """A module imported at its first attribute's use (``np = LazyModule("numpy")``), each attribute
    then kept as a plain one. Why: the analytics process imports every detector, and numpy is ~16
    MB of its RSS, needed only once a node has a forest or a thermometer a forecast."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value
