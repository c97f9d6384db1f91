"""The core detectors: engineering limits, windowed change rules and robust sigma.

Each keeps O(1) state per (node, metric) (the rules a few fixed buckets per window) and reports
``Finding``s (gridtwin.analytics.base). Limits and rules report a condition on every reading while
it holds and once ``cleared`` when it ends (hysteresis: it must come back past the threshold by a
margin); sigma reports point anomalies (``detail["instant"]``), which the engine clears after a
quiet spell. Thresholds are inclusive: a drop of exactly the threshold fires.
"""

from __future__ import annotations

import array
import math

from gridtwin.analytics.base import Context, Finding
from gridtwin.analytics.config import Limit, Resolver, Rule

_EPS = 1e-9  # float noise: a change of exactly the threshold fires


def _reached(change: float, threshold: float) -> bool:
    return change >= threshold - _EPS * max(1.0, abs(threshold))


class LimitDetector:
    """Quality (GOOD / UNCERTAIN / BAD) of every reading that has limits, and a ``limit`` alert
    while a value is outside lo..hi (the bounds are in range), cleared once it is back inside by the
    hysteresis. BAD (physically impossible) readings raise a high alert of their own."""

    name = "limits"

    def __init__(self, ctx: Context, resolver: Resolver | None = None):
        self.ctx = ctx
        self.resolver = resolver or Resolver(None, ctx.site)
        self._limits: dict = {}  # (node, metric) -> Limit | None
        self._active: dict = {}  # (node, metric) -> "lo" | "hi" | "bad" while an alert holds

    def limit(self, node: str, metric: str) -> Limit | None:
        key = (node, metric)
        if key not in self._limits:
            self._limits[key] = self.resolver.limit(node, metric)
        return self._limits[key]

    def observe(self, batch) -> list[Finding]:
        out = []
        for node, metric, ts, value in batch:
            lim = self.limit(node, metric)
            if lim is None:
                continue
            key = (node, metric)
            bad = (lim.bad_lo is not None and value < lim.bad_lo) or (
                lim.bad_hi is not None and value > lim.bad_hi
            )
            side = (
                "lo"
                if lim.lo is not None and value < lim.lo
                else "hi"
                if lim.hi is not None and value > lim.hi
                else None
            )
            quality = "BAD" if bad else "UNCERTAIN" if side else "GOOD"
            was = self._active.get(key)
            if bad or side:
                now = "bad" if bad else side
                if was and was != now:  # moved from one condition to another: a new alert
                    out.append(
                        self._finding(node, metric, ts, value, lim, was, quality, cleared=True)
                    )
                self._active[key] = now
                out.append(self._finding(node, metric, ts, value, lim, now, quality))
            elif was:
                h = lim.hysteresis
                back = (lim.lo is None or value >= lim.lo + h) and (
                    lim.hi is None or value <= lim.hi - h
                )
                if back:
                    del self._active[key]
                    out.append(
                        self._finding(node, metric, ts, value, lim, was, quality, cleared=True)
                    )
                else:  # inside the limits, not yet past the hysteresis: the alert holds
                    out.append(self._finding(node, metric, ts, value, lim, was, quality))
        return out

    @staticmethod
    def _finding(
        node, metric, ts, value, lim: Limit, side: str, quality: str, cleared: bool = False
    ) -> Finding:
        if side == "bad":
            lo = "" if lim.bad_lo is None else lim.bad_lo
            hi = "" if lim.bad_hi is None else lim.bad_hi
            bounds = f"{lo}..{hi}"
            desc = (
                f"{node} {metric} = {value:g} is physically impossible (outside {bounds}): "
                f"check the sensor and its wiring"
            )
            return Finding(
                node,
                metric,
                ts,
                value,
                "limit:bad",
                "high",
                desc,
                quality,
                cleared,
                {"bad_lo": lim.bad_lo, "bad_hi": lim.bad_hi},
            )
        bound = lim.lo if side == "lo" else lim.hi
        desc = (
            f"{node} {metric} = {value:g} is {'below' if side == 'lo' else 'above'} its limit "
            f"{bound:g} (range "
            f"{'' if lim.lo is None else f'{lim.lo:g}'}..{'' if lim.hi is None else f'{lim.hi:g}'})"
        )
        return Finding(
            node,
            metric,
            ts,
            value,
            "limit",
            lim.severity,
            desc,
            quality,
            cleared,
            {"lo": lim.lo, "hi": lim.hi, "hysteresis": lim.hysteresis, "side": side},
        )

    def state(self) -> dict:
        return {"active": [[n, m, s] for (n, m), s in self._active.items()]}

    def restore(self, saved: dict) -> None:
        self._active = {(n, m): s for n, m, s in saved.get("active", [])}


_NONE = -(1 << 62)  # an empty bucket's index (no reading's bucket is negative)
_EMPTY, _ZERO = (_NONE,), (0.0,)


class _Window:
    """min, max, sum and count of a series over the last window, in buckets a NB-th of it wide: O(1)
    memory, and the extremes exact (a bucket's). The window reaches at least window_s back (a bucket
    more at most): NB + 1 buckets, the oldest the one the window's start falls in. With NB only, it
    reached back 7/8 of the window at worst, so a change spread over exactly the rule's window (an
    electrolyser's efficiency loss ramping over 10 min) was seen only in part."""

    NB = 8
    SLOTS = NB + 1
    __slots__ = ("width", "idx", "lo", "hi", "sum", "n", "active", "last_ts")

    def __init__(self, window_ms: int):
        # arrays, not lists: a list holds a float object (24 B) for each value, a bucket's index
        # an int object; 4,000 windows of a 1,000-node fleet were 3.6 MB more as lists
        self.width = max(1, -(-window_ms // self.NB))
        self.idx = array.array("q", _EMPTY) * self.SLOTS
        self.lo = array.array("d", _ZERO) * self.SLOTS
        self.hi = array.array("d", _ZERO) * self.SLOTS
        self.sum = array.array("d", _ZERO) * self.SLOTS
        self.n = array.array("q", (0,)) * self.SLOTS
        self.active = False
        self.last_ts = None

    def saved(self) -> list:
        idx = [None if i == _NONE else i for i in self.idx]
        return [idx, list(self.lo), list(self.hi), list(self.sum), list(self.n), self.last_ts]

    def load(self, saved: list) -> None:
        idx, lo, hi, total, n, self.last_ts = saved
        self.idx = array.array("q", (_NONE if i is None else i for i in idx))
        self.lo, self.hi, self.sum = (array.array("d", x) for x in (lo, hi, total))
        self.n = array.array("q", n)

    def _live(self, b: int):
        # buckets b-NB..b: the window ending at this reading, its start inside the oldest
        for k in range(self.SLOTS):
            i = self.idx[k]
            if b - self.NB <= i <= b:  # (an empty bucket's _NONE is never)
                yield k

    def extremes(self, ts: int) -> tuple[float | None, float | None, float, int]:
        b = ts // self.width
        live = list(self._live(b))
        if not live:
            return None, None, 0.0, 0
        return (
            min(self.lo[k] for k in live),
            max(self.hi[k] for k in live),
            sum(self.sum[k] for k in live),
            sum(self.n[k] for k in live),
        )

    def add(self, ts: int, v: float) -> None:
        b = ts // self.width
        k = b % self.SLOTS
        if self.idx[k] != b:
            self.idx[k], self.lo[k], self.hi[k], self.sum[k], self.n[k] = b, v, v, v, 1
        else:
            self.lo[k] = min(self.lo[k], v)
            self.hi[k] = max(self.hi[k], v)
            self.sum[k] += v
            self.n[k] += 1
        self.last_ts = ts


class RuleDetector:
    """Windowed change rules (``[[analytics.rules]]`` and the defaults): kind ``rule:<kind>``.

    drop: the window's highest minus the value (relative: in percent of that highest);
    rise: the value minus the window's lowest; ratio: the value over the window's lowest (above
    ``floor``); deviation: the window's mean away from nominal, in percent. The window is the
    readings before this one, within window_s; fires at change >= threshold, clears below
    threshold x (1 - hysteresis)."""

    name = "rules"

    def __init__(self, ctx: Context, resolver: Resolver | None = None):
        self.ctx = ctx
        self.resolver = resolver or Resolver(None, ctx.site)
        self._rules: dict = {}  # (node, metric) -> [Rule]
        self._win: dict = {}  # (node, metric, rule name) -> _Window

    def rules(self, node: str, metric: str) -> list[Rule]:
        key = (node, metric)
        rules = self._rules.get(key)
        if rules is None:
            rules = self._rules[key] = self.resolver.rules(node, metric)
        return rules

    def observe(self, batch) -> list[Finding]:
        out = []
        for node, metric, ts, value in batch:
            for rule in self.rules(node, metric):
                f = self._one(node, metric, ts, value, rule)
                if f is not None:
                    out.append(f)
        return out

    def _one(self, node, metric, ts, value, rule: Rule) -> Finding | None:
        wkey = (node, metric, rule.name)
        w = self._win.get(wkey)
        if w is None:
            w = self._win[wkey] = _Window(rule.window_ms)
        if w.last_ts is not None and ts < w.last_ts:
            return None  # out of order (a late replay): the window has moved on
        if rule.kind == "deviation":
            w.add(ts, value)
            lo, hi, total, n = w.extremes(ts)
            ref = total / n
            change = abs(ref - rule.nominal) * 100.0 / abs(rule.nominal)
        else:
            lo, hi, total, n = w.extremes(ts)
            w.add(ts, value)
            if n == 0:
                return self._clear(w, node, metric, ts, value, rule) if w.active else None
            if rule.kind == "drop":
                ref, change = hi, hi - value
                if rule.relative:
                    change = change * 100.0 / hi if hi > 0 else 0.0
            elif rule.kind == "rise":
                ref, change = lo, value - lo
                if rule.relative:
                    change = change * 100.0 / lo if lo > 0 else 0.0
            else:  # ratio
                ref = lo
                change = value / lo if lo > rule.floor and lo > 0 else 0.0
        if _reached(change, rule.threshold):
            w.active = True
            return self._finding(node, metric, ts, value, rule, ref, change)
        if w.active:
            # ratio: the hysteresis applies to the part above 1 (a 2x spike clears below 1.9x)
            base = 1.0 if rule.kind == "ratio" else 0.0
            if change < base + (rule.threshold - base) * (1.0 - rule.hysteresis):
                return self._clear(w, node, metric, ts, value, rule)
            return self._finding(node, metric, ts, value, rule, ref, change)
        return None

    def _clear(self, w, node, metric, ts, value, rule) -> Finding:
        w.active = False
        return Finding(
            node,
            metric,
            ts,
            value,
            f"rule:{rule.kind}",
            rule.severity,
            f"{node} {metric}: {rule.name} is over",
            cleared=True,
            detail={"rule": rule.name},
        )

    @staticmethod
    def _finding(node, metric, ts, value, rule: Rule, ref, change) -> Finding:
        win = f"{rule.window_ms / 1000:g} s"
        if rule.kind == "deviation":
            desc = (
                f"{node} {metric} averaged {ref:g} over {win}, {change:.1f} % from nominal "
                f"{rule.nominal:g}"
            )
        elif rule.kind == "ratio":
            desc = f"{node} {metric} = {value:g} is {change:.2f}x its lowest ({ref:g}) in {win}"
        else:
            unit = " %" if rule.relative else ""
            desc = (
                f"{node} {metric} {'fell' if rule.kind == 'drop' else 'rose'} by "
                f"{change:.4g}{unit} in {win} (from {ref:g} to {value:g})"
            )
        return Finding(
            node,
            metric,
            ts,
            value,
            f"rule:{rule.kind}",
            rule.severity,
            f"{desc} [{rule.name}]",
            detail={
                "rule": rule.name,
                "threshold": rule.threshold,
                "change": change,
                "ref": ref,
                "window_s": rule.window_ms / 1000,
            },
        )

    def state(self) -> dict:
        # the windows of the conditions that hold (few), so a restart judges their end on the same
        # data
        return {"active": [list(k) + [w.saved()] for k, w in self._win.items() if w.active]}

    def restore(self, saved: dict) -> None:
        for node, metric, name, *win in saved.get("active", []):
            for rule in self.rules(node, metric):
                if rule.name == name:
                    w = self._win.setdefault((node, metric, name), _Window(rule.window_ms))
                    w.active = True
                    if win and len(win[0]) == 6 and len(win[0][0]) == w.SLOTS:
                        w.load(win[0])


SIGMA_LEVELS = ((5.0, "high"), (4.0, "medium"), (3.0, "low"))
_MAD_TO_SIGMA = 1.4826  # a normal distribution's sigma is 1.4826 x its median absolute deviation


class _Robust:
    """A series' center and spread: the median and MAD of its first ``warmup`` readings, then an
    exponentially weighted mean and variance of each reading winsorised to center +- 3 spreads, so
    an anomaly moves the estimate by at most 3 spreads x alpha."""

    __slots__ = ("warm", "center", "var", "prev", "res")

    def __init__(self):
        # the warm-up's readings, 8 bytes each: a list of floats took 32 (10,000 series x 60
        # readings: 19 MB for the first 10 minutes of a 1,000-node site, then freed but not given
        # back)
        self.warm: array.array | None = array.array("d")
        self.center = 0.0
        self.var = 0.0
        self.prev: float | None = None
        self.res = (
            math.inf
        )  # the smallest step seen between consecutive readings: the sensor's resolution

    def spread(self) -> float:
        # floors: a flat or coarsely quantised series (MAD 0: an LM75 reading 25.0 then 25.125)
        # would make its smallest step infinitely many sigmas; one step of resolution is one sigma
        # at least. Not a share of the level (it was 0.1 %): a series' noise does not grow with its
        # offset (50 Hz varies by mHz: the floor was 50 mHz; 101,325 Pa by 20 Pa: it was 101 Pa)
        return max(
            math.sqrt(self.var),
            self.res if self.res < math.inf else 0.0,
            1e-9 * abs(self.center),  # a float's own resolution, and no division by zero
            1e-6,
        )

    def step(self, value: float) -> None:
        if self.prev is not None and value != self.prev:
            self.res = min(self.res, abs(value - self.prev))
        self.prev = value


class SigmaDetector:
    """Robust z-score per (node, metric): |value - rolling center| / rolling spread; 3/4/5 = low,
    medium, high (kind ``sigma``), after a warm-up, on the metrics of ``sigma_roles``."""

    name = "sigma"

    def __init__(
        self, ctx: Context, warmup: int = 60, halflife: int = 600, roles=None, resolver=None
    ):
        self.ctx = ctx
        self.warmup, self.alpha = warmup, 1.0 - 0.5 ** (1.0 / halflife)
        self.roles = None if roles is None else frozenset(roles)
        self.resolver = resolver or Resolver(None, ctx.site)
        self._s: dict = {}
        self._skip: set = set()

    def _watched(self, node: str, metric: str) -> bool:
        if (
            self.roles is not None
            and self.resolver.site is not None
            and self.resolver.role(node) not in self.roles
        ):
            return False
        return self.resolver.quantity(node, metric) != "state"

    def observe(self, batch) -> list[Finding]:
        out = []
        s_of, skip = self._s, self._skip
        for node, metric, ts, value in batch:
            key = (node, metric)
            s = s_of.get(key)
            if s is None:
                if key in skip:
                    continue
                if not self._watched(node, metric):
                    skip.add(key)
                    continue
                s = s_of[key] = _Robust()
            s.step(value)
            if s.warm is not None:
                s.warm.append(value)
                if len(s.warm) >= self.warmup:
                    xs = sorted(s.warm)
                    med = xs[len(xs) // 2]
                    mad = sorted(abs(x - med) for x in xs)[len(xs) // 2]
                    s.center, s.var, s.warm = med, (mad * _MAD_TO_SIGMA) ** 2, None
                continue
            sd = s.spread()
            z = abs(value - s.center) / sd
            for level, sev in SIGMA_LEVELS:
                if z >= level:
                    out.append(
                        Finding(
                            node,
                            metric,
                            ts,
                            value,
                            "sigma",
                            sev,
                            f"{node} {metric} = {value:g} is {z:.1f} sigma from its usual "
                            f"{s.center:g} (spread {sd:.3g})",
                            detail={
                                "z": round(z, 2),
                                "center": s.center,
                                "spread": sd,
                                "instant": True,
                            },
                        )
                    )
                    break
            d = min(max(value, s.center - 3 * sd), s.center + 3 * sd) - s.center  # winsorised
            s.center += self.alpha * d
            s.var = (1.0 - self.alpha) * (s.var + self.alpha * d * d)
        return out

    def state(self) -> dict:
        return {
            "s": [
                [n, m, s.center, s.var, None if s.res == math.inf else s.res]
                for (n, m), s in self._s.items()
                if s.warm is None
            ]
        }

    def restore(self, saved: dict) -> None:
        for n, m, c, v, *res in saved.get("s", []):
            s = self._s[(n, m)] = _Robust()
            s.warm, s.center, s.var = None, c, v
            s.res = res[0] if res and res[0] is not None else math.inf
