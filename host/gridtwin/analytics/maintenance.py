"""Predictive maintenance: when will a metric cross its maintenance threshold, if its trend goes on?

    det = MaintenanceDetector(ctx, horizon_s=86400)   # the daemon's detector (engine plugin)
    det.observe(batch); det.tick(now_ms)               # Finding(kind="maintenance") in the horizon
    # one series (the CLI):
    fc = forecast(ts_ms, values, Threshold("t_*", 85.0), now_ms, horizon_s=86400)

Per (node, metric) with a threshold (``THRESHOLDS``: every thermometer against 85 °C, the seed
system's figure; a site's ``thresholds`` come first), readings are averaged into buckets (``horizon
/ 288``, 5 minutes for a day) of which the last horizon's worth is kept: bounded state, O(1) per
reading. At each closed bucket the trend is fitted by Theil–Sen (the median of all pairwise slopes:
a spike or a stuck stretch moves it little, where least squares follows it), and the predicted
crossing time is where the fitted line meets the threshold. Its confidence comes from the fit: 1 -
the 95 % interval of the slope over twice the slope (Sen's, as scipy.stats.theilslopes), so noise
and a wavering trend lower it and a slope whose interval holds zero has none. A forecast needs
``min_span_s`` of data (a quarter of the horizon by default: a warm-up over an hour is not a trend)
and ``min_points`` buckets.

A Finding is reported while the crossing falls inside the horizon with at least ``min_confidence``
and cleared when it no longer does. It names the predicted time, the confidence, the risk factors in
words and the recommended actions for the node's role (``ACTIONS``).
"""

from __future__ import annotations

import array
import fnmatch
import math
import time
from dataclasses import dataclass, field

from gridtwin.analytics.base import Context, Finding, LazyModule, Reading
from gridtwin.analytics.config import Resolver, setting

np = LazyModule("numpy")  # imported at its first use: gridtwin.analytics.base.LazyModule

BUCKETS = 288  # buckets per horizon
MIN_POINTS = 12  # buckets a forecast needs
# a forecast raises nothing below this: a day-periodic temperature (a stack warming every sunny
# morning) fitted over a day that starts mid-cycle gives a slope whose interval is wide (0.69 on the
# bench's twin)
MIN_CONFIDENCE = 0.8


@dataclass(frozen=True)
class Threshold:
    metric: str  # a metric name or fnmatch patterns joined by | ("t_*|*_t")
    limit: float
    direction: str = "rise"  # rise: crossing upwards; fall: downwards
    roles: tuple = ()  # only nodes of these roles (empty: all)
    nodes: tuple = ()  # only these nodes (empty: all)
    unit: str = ""
    # every metric of this catalog quantity (gridtwin.catalog) of a node the site knows
    quantity: str = ""

    def matches(
        self, node: str, role: str | None, metric: str, quantity: str | None = None
    ) -> bool:
        """`quantity`: the metric's catalog quantity; None when the site does not know the node and
        "" when the catalog does not know the metric (then the name patterns decide)."""
        if (self.roles and role not in self.roles) or (self.nodes and node not in self.nodes):
            return False
        if (
            self.quantity and quantity
        ):  # a metric the catalog does not describe ("") goes by its name
            return quantity == self.quantity
        return any(fnmatch.fnmatchcase(metric, p) for p in self.metric.split("|") if p)


# Every thermometer (the catalog's temperature quantity; by the firmware's names for a node the site
# does not describe: a sensor's own id such as t_cell, or a combined chip's "<id>_t"); 85 °C: the
# seed system's maintenance threshold. An alkaline stack runs at 80 °C by design (the twin's
# t_set_c) and trips at 90 (t_max_c): its threshold lies between, or every sunny morning's warm-up
# would be a forecast.
THRESHOLDS = (
    Threshold("t_*|*_t|temp*", 88.0, unit="°C", quantity="temperature", roles=("electrolyser",)),
    Threshold("t_*|*_t|temp*", 85.0, unit="°C", quantity="temperature"),
)

# What to do about a rising temperature, by the node's role (gridtwin.site roles).
ACTIONS = {
    "server": [
        "check the server's fans and air filters",
        "check the rack's inlet temperature and airflow",
        "move load off the server until it is cooled",
    ],
    "electrolyser": [
        "check the lye cooling loop: pump, heat exchanger, coolant level",
        "reduce the stack current until the temperature falls",
        "plan a stack inspection",
    ],
    "ups": ["check the battery room's cooling", "test the batteries (a failing cell runs hot)"],
    "pv": ["check the modules' rear ventilation and for hot spots (thermal camera)"],
    "grid_monitor": ["check the enclosure's ventilation and the sun on it"],
    "": ["inspect the device's cooling", "plan maintenance before the predicted time"],
}


@dataclass
class Forecast:
    node: str
    metric: str
    threshold: Threshold
    now_ms: int
    level: float | None = None  # the fitted value now
    slope_per_h: float | None = None  # the trend, unit per hour
    crossing_ms: int | None = None  # when the fitted line meets the threshold (None: never)
    confidence: float = 0.0  # 0..1, from the slope's 95 % interval
    points: int = 0
    span_s: float = 0.0
    noise: float = 0.0  # robust scatter around the line (unit)
    # no data | too short | flat | away | beyond horizon | crossed | inside horizon
    status: str = "no data"
    risks: list = field(default_factory=list)
    actions: list = field(default_factory=list)

    @property
    def hours_left(self) -> float | None:
        return None if self.crossing_ms is None else (self.crossing_ms - self.now_ms) / 3_600_000

    def as_dict(self) -> dict:
        return {
            "node": self.node,
            "metric": self.metric,
            "limit": self.threshold.limit,
            "direction": self.threshold.direction,
            "now": self.now_ms,
            "level": self.level,
            "slope_per_h": self.slope_per_h,
            "crossing": self.crossing_ms,
            "hours_left": self.hours_left,
            "confidence": round(self.confidence, 3),
            "points": self.points,
            "span_s": self.span_s,
            "noise": self.noise,
            "status": self.status,
            "risks": self.risks,
            "actions": self.actions,
        }


Z_975 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95 % interval


def _tie_term(a) -> float:
    """Sum of t(t-1)(2t+5) over the groups of t equal values: ties lower the variance of Kendall's
    S (Sen 1968, eq. 2.6)."""
    _u, counts = np.unique(a, return_counts=True)
    t = counts[counts > 1].astype(float)
    return float((t * (t - 1) * (2 * t + 5)).sum())


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, slope low, slope high): Theil–Sen with its 95 % interval (Sen 1968): the
    median of the pairwise slopes, the intercept through the medians, and the slopes ranked
    (N -+ z sigma) / 2 of the N sorted, sigma from Kendall's S with ties. scipy.stats.theilslopes
    computes the same (tests check it), but importing scipy.stats costs the analytics process ~90 MB
    of RSS for these twenty lines."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = x[:, None] - x
    dy = y[:, None] - y
    up = dx > 0
    slopes = np.sort(dy[up] / dx[up])
    if not slopes.size:
        return math.nan, math.nan, math.nan, math.nan
    slope = float(np.median(slopes))
    intercept = float(np.median(y) - slope * np.median(x))
    n, nt = len(y), len(slopes)
    sigma = math.sqrt(max(0.0, (n * (n - 1) * (2 * n + 5) - _tie_term(x) - _tie_term(y)) / 18.0))
    hi_i = min(int(np.round((nt + Z_975 * sigma) / 2.0)), nt - 1)
    lo_i = max(int(np.round((nt - Z_975 * sigma) / 2.0)) - 1, 0)
    return slope, intercept, float(slopes[lo_i]), float(slopes[hi_i])


def forecast(
    ts_ms,
    values,
    th: Threshold,
    now_ms: int,
    horizon_s: float = 86400.0,
    *,
    node: str = "",
    metric: str = "",
    role: str | None = None,
    min_span_s: float | None = None,
    min_points: int = MIN_POINTS,
) -> Forecast:
    """The forecast of one series (points oldest first; readings or bucket means) at `now_ms`."""
    fc = Forecast(node, metric, th, int(now_ms))
    x = np.asarray(ts_ms, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    fc.points = len(x)
    if not len(x):
        return fc
    fc.span_s = float(x[-1] - x[0]) / 1000.0
    min_span_s = horizon_s / 4 if min_span_s is None else min_span_s
    if len(x) < min_points or fc.span_s < min_span_s:
        fc.status = "too short"
        fc.level = float(y[-1])
        return fc
    hours = (x - now_ms) / 3_600_000.0  # hours relative to now: the intercept is the level now
    slope, level, lo, hi = theil_sen(hours, y)
    fc.level, fc.slope_per_h = level, slope
    resid = y - (level + slope * hours)
    fc.noise = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    sign = 1.0 if th.direction == "rise" else -1.0
    toward = sign * slope > 0
    # the interval as a share of the slope: 1 when tight; 0 when it reaches zero (no trend to speak
    # of)
    fc.confidence = (
        max(0.0, min(1.0, 1.0 - (hi - lo) / (2.0 * abs(slope)))) if slope and toward else 0.0
    )
    gap = th.limit - level
    if sign * gap <= 0:
        fc.status, fc.crossing_ms = "crossed", int(now_ms)
    elif not slope:
        fc.status = "flat"
    elif not toward:
        fc.status = "away"
    else:
        fc.crossing_ms = int(now_ms + gap / slope * 3_600_000)
        fc.status = (
            "inside horizon" if fc.crossing_ms - now_ms <= horizon_s * 1000 else "beyond horizon"
        )
    if fc.status in ("inside horizon", "crossed"):
        fc.risks = risk_factors(fc)
        fc.actions = list(ACTIONS.get(role or "", ACTIONS[""]))
    return fc


def risk_factors(fc: Forecast) -> list[str]:
    th, u = fc.threshold, fc.threshold.unit
    out = []
    if fc.status == "crossed":
        out.append(
            f"{fc.metric} is at {fc.level:.1f} {u}, past the maintenance threshold of {th.limit:g} "
            f"{u}"
        )
    else:
        left = fc.hours_left
        out.append(
            f"{fc.metric} {'rises' if fc.slope_per_h > 0 else 'falls'} {abs(fc.slope_per_h):.2f} "
            f"{u}/h: {abs(th.limit - fc.level):.1f} {u} from {th.limit:g} {u}, reached in "
            f"{left:.1f} h"
        )
    if fc.noise and fc.slope_per_h and fc.noise > abs(fc.slope_per_h):
        out.append(f"scatter of ±{fc.noise:.2f} {u} around the trend, more than an hour's rise")
    if fc.confidence < 0.8:
        out.append(
            f"the trend is uncertain (confidence {fc.confidence:.2f} from {fc.points} points over "
            f"{fc.span_s / 3600:.1f} h)"
        )
    return out


class _Points:
    """The last `keep` (bucket middle ms, mean) of a series, 16 bytes each in two arrays: a deque of
    tuples took ~120 (a day's 288 buckets of 2,000 thermometers: 69 MB, now 9)."""

    __slots__ = ("ts", "vals", "keep")

    def __init__(self, keep: int):
        self.ts, self.vals, self.keep = array.array("q"), array.array("d"), keep

    def append(self, t: int, v: float) -> None:
        self.ts.append(int(t))
        self.vals.append(float(v))
        if len(self.ts) > self.keep:
            del self.ts[0], self.vals[0]

    def __len__(self) -> int:
        return len(self.ts)

    def __iter__(self):
        return zip(self.ts, self.vals)

    def pairs(self) -> list[list]:
        return [[t, v] for t, v in self]


class _Series:
    __slots__ = ("th", "bucket", "n", "total", "points", "active")

    def __init__(self, th: Threshold, keep: int):
        self.th = th
        self.bucket: int | None = None
        self.n, self.total = 0, 0.0
        self.points = _Points(keep)
        self.active = False


class MaintenanceDetector:
    name = "maintenance"

    def __init__(
        self,
        ctx: Context,
        *,
        horizon_s: float = 86400.0,
        thresholds=None,
        min_span_s: float | None = None,
        min_confidence: float = MIN_CONFIDENCE,
        min_points: int = MIN_POINTS,
        buckets: int = BUCKETS,
    ):
        self.ctx = ctx
        self.horizon_s = float(horizon_s)
        self.thresholds = tuple(thresholds or ()) + THRESHOLDS
        self.min_span_s = horizon_s / 4 if min_span_s is None else min_span_s
        self.min_confidence, self.min_points = min_confidence, min_points
        self.bucket_ms = max(1000, int(horizon_s * 1000 / buckets))
        self.keep = buckets + 1
        self.series: dict[tuple[str, str], _Series | None] = {}
        # a node's role and a metric's catalog quantity: the limits' and rules' resolver, which
        # indexes the site's nodes and keeps each node's quantities once
        self.resolver = Resolver(None, ctx.site)

    def threshold_for(self, node: str, metric: str) -> Threshold | None:
        role, q = self.resolver.role(node), self.resolver.quantity(node, metric)
        return next((t for t in self.thresholds if t.matches(node, role, metric, q)), None)

    def observe(self, batch: list[Reading]) -> list[Finding]:
        out = []
        series = self.series
        for node, metric, ts, value in batch:
            key = (node, metric)
            s = series.get(key, 0)
            if s == 0:
                th = self.threshold_for(node, metric)
                s = series[key] = _Series(th, self.keep) if th is not None else None
            if s is None:
                continue
            b = ts - ts % self.bucket_ms
            if b != s.bucket:
                if s.n:
                    s.points.append(s.bucket + self.bucket_ms // 2, s.total / s.n)
                    f = self._judge(node, metric, s, ts)
                    if f is not None:
                        out.append(f)
                s.bucket, s.n, s.total = b, 0, 0.0
            s.n += 1
            s.total += value
        return out

    def _judge(self, node: str, metric: str, s: _Series, now_ms: int) -> Finding | None:
        if len(s.points) < self.min_points:
            return None
        ts, vals = s.points.ts, s.points.vals
        fc = forecast(
            ts,
            vals,
            s.th,
            now_ms,
            self.horizon_s,
            node=node,
            metric=metric,
            role=self.resolver.role(node),
            min_span_s=self.min_span_s,
            min_points=self.min_points,
        )
        due = fc.status in ("inside horizon", "crossed") and fc.confidence >= self.min_confidence
        if due:
            s.active = True
            return finding(fc)
        if s.active:
            s.active = False
            return Finding(
                node,
                metric,
                now_ms,
                fc.level,
                "maintenance",
                "low",
                f"{node} {metric}: no longer forecast to reach {s.th.limit:g} {s.th.unit} within "
                f"{self.horizon_s / 3600:g} h",
                cleared=True,
            )
        return None

    def forecasts(self) -> list[Forecast]:
        """The current forecast of every series (what `gridtwin maintenance` prints from a running
        engine)."""
        out = []
        for (node, metric), s in self.series.items():
            if s is not None and s.points:
                ts, vals = s.points.ts, s.points.vals
                out.append(
                    forecast(
                        ts,
                        vals,
                        s.th,
                        ts[-1],
                        self.horizon_s,
                        node=node,
                        metric=metric,
                        role=self.resolver.role(node),
                        min_span_s=self.min_span_s,
                        min_points=self.min_points,
                    )
                )
        return out

    def state(self) -> dict:
        """The buckets (a day's trend is worth keeping across a restart), the open one and the
        alerts."""
        return {
            "series": [
                [n, m, s.bucket, s.n, s.total, s.points.pairs(), s.active]
                for (n, m), s in self.series.items()
                if s is not None
            ]
        }

    def restore(self, saved: dict) -> None:
        for n, m, bucket, cnt, total, points, active in (saved or {}).get("series", []):
            th = self.threshold_for(n, m)
            if th is None:
                continue
            s = self.series[(n, m)] = _Series(th, self.keep)
            s.bucket, s.n, s.total, s.active = bucket, cnt, total, active
            for t, v in points:
                s.points.append(t, v)


def finding(fc: Forecast) -> Finding:
    th = fc.threshold
    left = fc.hours_left or 0.0
    sev = "high" if left <= 4 else "medium" if left <= 12 else "low"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(fc.crossing_ms / 1000))
    text = (
        f"{fc.node} {fc.metric}: past {th.limit:g} {th.unit} (maintenance threshold)"
        if fc.status == "crossed"
        else f"{fc.node} {fc.metric}: forecast to reach {th.limit:g} {th.unit} in {left:.1f} h "
        f"({when}), confidence {fc.confidence:.2f}; "
        f"{fc.actions[0] if fc.actions else 'plan maintenance'}"
    )
    return Finding(
        fc.node,
        fc.metric,
        fc.now_ms,
        fc.level,
        "maintenance",
        sev,
        text,
        detail={
            "crossing": fc.crossing_ms,
            "hours_left": None if fc.crossing_ms is None else round(left, 3),
            "confidence": round(fc.confidence, 3),
            "slope_per_h": fc.slope_per_h,
            "limit": th.limit,
            "risks": fc.risks,
            "actions": fc.actions,
        },
    )


def from_context(ctx: Context) -> MaintenanceDetector | None:
    """The engine's plugin hook (gridtwin.analytics.engine.PLUGINS)."""
    sec = ctx.config
    if not setting(sec, "maintenance"):
        return None
    return MaintenanceDetector(ctx, horizon_s=setting(sec, "maintenance_horizon_s"))
