"""Energy KPIs: kWh per node by integrating its power, and what follows from them, every
``aggregation_s`` (bucketed by reading time) into the ``kpi`` table (and an InfluxDB measurement
when the site's backend is InfluxDB: lines through the store's spool).

Per node and bucket: energy_kwh, avg_kw, peak_kw, load_factor (avg / peak), pf_mean (nodes that
measure a power factor), h2_nm3, specific_kwh_nm3 and efficiency_pct (electrolysers: stack energy
over hydrogen, against hydrogen's higher heating value), battery_discharge_kwh (UPSs: the load
carried on battery); charge_kwh, discharge_kwh and rte_pct (a store that reports its cumulative
``e_charge_kwh`` and ``e_discharge_kwh``: a bess of the twin, through OPC UA or a meter). Per site
(node ""): generation_kwh (pv, generator), import_kwh (utility), consumption_kwh (servers,
electrolysers, meters), renewable_share_pct (pv over all supply), pue (utility + generator over the
IT load of the servers).

Integration is trapezoidal between consecutive readings of a node; a gap longer than three of the
node's intervals (at least 10 s) is not bridged: energy nobody measured is not invented (nor is a
stretch an outbox replays after the live readings went past it). The running totals (``total_kwh``,
a store's charge and discharge counters) are saved with the detector's state and survive a restart.

Round-trip efficiency over the last ``rte_window_s`` (default a day) from a store's counters:
charged kWh C, discharged kWh D and, when it reports ``e_stored_kwh``, the change of its stored
energy dE. D / C is the round trip only over a window that ends at the charge it began with; with dE
known the window need not: a store whose one-way efficiency e is the same both ways has dE = e C - D
/ e, so e = (dE + sqrt(dE^2 + 4 C D)) / 2C and the round trip is e^2 (D / C when dE is 0). A counter
that goes back (a restarted meter) starts again from its new value; nothing is reported before the
window holds some charge and some discharge (``RTE_MIN_KWH`` each).
"""

from __future__ import annotations

import collections
import math

from gridtwin.analytics.base import Context
from gridtwin.catalog import HHV_KWH_PER_NM3, node_metrics
from gridtwin.opcua.model import TAGS

GENERATION, IMPORT, RENEWABLE = (
    frozenset({"pv", "generator"}),
    frozenset({"utility"}),
    frozenset({"pv"}),
)
CONSUMERS = frozenset({"server", "electrolyser", "grid_monitor", "sensor"})
IT_LOAD = frozenset({"server"})
_SCALE = {"W": 0.001, "kW": 1.0, "MW": 1000.0}
# a store's cumulative counters: 0 charged, 1 discharged (their index in _Store.tot and last), 2 the
# energy it holds
_TWIN_STORE = {"e_charge_kwh": 0, "e_discharge_kwh": 1, "e_stored_kwh": 2}
# ... and the same counters under their OPC UA tags (Energy_Charged, ...), as the collector feeds
# them
STORE_METRICS = dict(_TWIN_STORE)
STORE_METRICS.update((tag, _TWIN_STORE[m]) for tag, m in TAGS.get("bess", ()) if m in _TWIN_STORE)
RTE_MIN_KWH = 0.01  # a window with less charge or discharge than this has no round trip to speak of


class _Store:
    """A battery store's counters: running totals of charge and discharge (increments of its
    cumulative counters), its stored energy, and a snapshot of them at each bucket's end (the
    window)."""

    __slots__ = ("tot", "last", "stored", "snaps", "bucket0")

    def __init__(self, maxlen: int):
        self.tot = [0.0, 0.0]
        self.last: list = [None, None]
        self.stored: float | None = None
        self.snaps: collections.deque = collections.deque(maxlen=maxlen)  # (ts, C, D, stored)
        self.bucket0 = [0.0, 0.0]  # totals at the open bucket's start


class _Acc:
    """One node's sums in the current bucket."""

    __slots__ = ("kwh", "hours", "peak", "pf_sum", "pf_n", "h2", "batt")

    def __init__(self):
        self.kwh = self.hours = self.peak = self.pf_sum = self.h2 = self.batt = 0.0
        self.pf_n = 0


class EnergyKpi:
    name = "kpi"

    def __init__(
        self,
        ctx: Context,
        aggregation_s: int = 300,
        influx_measurement: str | None = None,
        power: dict | None = None,
        rte_window_s: float = 86400.0,
    ):
        self.ctx = ctx
        self.agg_ms = int(aggregation_s * 1000)
        self.rte_window_ms = int(rte_window_s * 1000)
        self._stores: dict[str, _Store] = {}  # node -> its charge/discharge counters
        self.measurement = influx_measurement
        self._site_nodes = (
            {n.id: n for n in getattr(ctx.site, "nodes", ())} if ctx.site is not None else {}
        )
        self._power = dict(power or {})  # node -> (metric, kW per unit): resolved from the catalog
        self._pf: dict = {}  # node -> power-factor metric or None
        self._last: dict = {}  # node -> (ts, kW) of its previous power reading
        self._h2_last: dict = {}  # node -> (ts, NL/h)
        self._on_batt: dict = {}  # node -> 1 while a UPS carries its load on battery
        self.total_kwh: dict = {}  # node -> kWh since the first reading (saved)
        self._acc: dict = {}  # node -> _Acc of the open bucket
        self._bucket: int | None = None  # the open bucket's start, ms
        self.written: list = []  # the last bucket's rows (tests, `kpi`)

    def _role(self, node: str) -> str:
        n = self._site_nodes.get(node)
        return n.role if n is not None else ""

    def _max_gap(self, node: str) -> int:
        n = self._site_nodes.get(node)
        interval = n.interval_ms if n is not None and n.interval_ms else 1000
        return max(3 * interval, 10_000)

    def _power_of(self, node: str):
        if node not in self._power:
            found = None
            n = self._site_nodes.get(node)
            if n is not None:
                if n.role == "electrolyser":
                    found = (
                        "p_stack_w",
                        0.001,
                    )  # gridtwin.analytics.derived: the stack's own power
                else:
                    ms = node_metrics(n)
                    for m in ms.values():
                        if m.quantity in ("power", "load") and m.unit in _SCALE:
                            found = (m.name, _SCALE[m.unit])
                            break
                    pf = next((m.name for m in ms.values() if m.quantity == "power factor"), None)
                    self._pf[node] = pf
            self._power[node] = found
        return self._power[node]

    def observe(self, batch) -> list:
        for node, metric, ts, value in batch:
            b = ts - ts % self.agg_ms
            if self._bucket is None:
                self._bucket = b
            elif b > self._bucket:
                self._flush(self._bucket)
                self._bucket = b
            if metric in STORE_METRICS:
                self._store_reading(node, metric, ts, value)
                continue
            p = self._power_of(node)
            if metric == "on_batt":
                self._on_batt[node] = value
            if p is not None and metric == p[0]:
                kw = value * p[1]
                last = self._last.get(node)
                if last is not None and ts <= last[0]:
                    # an outbox replay behind the live readings: that stretch is a gap here
                    continue
                self._last[node] = (ts, kw)
                acc = self._acc.get(node)
                if acc is None:
                    acc = self._acc[node] = _Acc()
                acc.peak = max(acc.peak, kw)
                if last is not None and 0 < ts - last[0] <= self._max_gap(node):
                    h = (ts - last[0]) / 3_600_000
                    e = (kw + last[1]) / 2 * h
                    acc.kwh += e
                    acc.hours += h
                    self.total_kwh[node] = self.total_kwh.get(node, 0.0) + e
                    if self._on_batt.get(node):
                        acc.batt += e
            elif metric == "h2_nlh":
                last = self._h2_last.get(node)
                if last is not None and ts <= last[0]:
                    continue
                self._h2_last[node] = (ts, value)
                if last is not None and 0 < ts - last[0] <= self._max_gap(node):
                    acc = self._acc.setdefault(node, _Acc())
                    acc.h2 += (
                        (value + last[1]) / 2 / 1000 * (ts - last[0]) / 3_600_000
                    )  # NL/h -> Nm3
            elif self._pf.get(node) == metric:
                acc = self._acc.setdefault(node, _Acc())
                acc.pf_sum += abs(value)
                acc.pf_n += 1
        return []

    def _store_reading(self, node: str, metric: str, ts: int, value: float) -> None:
        st = self._stores.get(node)
        if st is None:
            st = self._stores[node] = _Store(self.rte_window_ms // self.agg_ms + 2)
            st.snaps.append((ts, 0.0, 0.0, None))  # the window's first base: this reading
        k = STORE_METRICS[metric]
        if k == 2:  # the stored energy
            st.stored = value
            if st.snaps[0][3] is None and len(st.snaps) == 1:
                st.snaps[0] = st.snaps[0][:3] + (value,)
            return
        last = st.last[k]
        if last is not None:
            st.tot[k] += value - last if value >= last else value  # a reset counts from 0
        st.last[k] = value

    def rte(self, node: str) -> float | None:
        """The store's round-trip efficiency (0..1) over the last rte_window_s, or None."""
        st = self._stores.get(node)
        if st is None or not st.snaps:
            return None
        newest = st.snaps[-1][0]
        base = next((s for s in st.snaps if s[0] >= newest - self.rte_window_ms), st.snaps[0])
        c, d = st.tot[0] - base[1], st.tot[1] - base[2]
        if c < RTE_MIN_KWH or d < RTE_MIN_KWH:
            return None
        if base[3] is None or st.stored is None:
            return d / c
        de = st.stored - base[3]
        eff = (de + math.sqrt(de * de + 4.0 * c * d)) / (2.0 * c)
        return eff * eff

    def tick(self, now_ms: int) -> list:
        # an idle site still closes its bucket once it is well over (late readings went into it)
        if self._bucket is not None and now_ms >= self._bucket + 2 * self.agg_ms and self._acc:
            self._flush(self._bucket)
            self._bucket = now_ms - now_ms % self.agg_ms
        return []

    def rows(self, bucket: int) -> list[tuple]:
        """The KPI rows (bucket, node, kpi, value) of the open bucket's sums."""
        out = []
        site = {"generation": 0.0, "import": 0.0, "consumption": 0.0, "renewable": 0.0, "it": 0.0}
        for node, a in sorted(self._acc.items()):
            role = self._role(node)
            row = {"energy_kwh": a.kwh}
            if a.hours > 0:
                avg = a.kwh / a.hours
                row["avg_kw"] = avg
                row["peak_kw"] = a.peak
                if a.peak > 0:
                    row["load_factor"] = avg / a.peak
            if a.pf_n:
                row["pf_mean"] = a.pf_sum / a.pf_n
            if a.h2 > 0:
                row["h2_nm3"] = a.h2
                if a.kwh > 0:
                    row["specific_kwh_nm3"] = a.kwh / a.h2
                    row["efficiency_pct"] = HHV_KWH_PER_NM3 * a.h2 / a.kwh * 100.0
            if a.batt > 0:
                row["battery_discharge_kwh"] = a.batt
            out += [(bucket, node, k, v) for k, v in row.items()]
            if node in self._stores:
                out += self._store_rows(bucket, node)
            site["generation"] += a.kwh if role in GENERATION else 0.0
            site["import"] += a.kwh if role in IMPORT else 0.0
            site["consumption"] += a.kwh if role in CONSUMERS else 0.0
            site["renewable"] += a.kwh if role in RENEWABLE else 0.0
            site["it"] += a.kwh if role in IT_LOAD else 0.0
        for node in sorted(self._stores):  # a store without power readings has no _Acc of its own
            if node not in self._acc:
                out += self._store_rows(bucket, node)
        if self._site_nodes:
            out += [
                (bucket, "", "generation_kwh", site["generation"]),
                (bucket, "", "import_kwh", site["import"]),
                (bucket, "", "consumption_kwh", site["consumption"]),
            ]
            supply = site["generation"] + site["import"]
            if supply > 0:
                out.append((bucket, "", "renewable_share_pct", site["renewable"] / supply * 100.0))
            if site["it"] > 0 and supply - site["renewable"] > 0:
                out.append((bucket, "", "pue", (supply - site["renewable"]) / site["it"]))
        return out

    def _store_rows(self, bucket: int, node: str) -> list[tuple]:
        st = self._stores[node]
        c, d = st.tot[0] - st.bucket0[0], st.tot[1] - st.bucket0[1]
        out = [(bucket, node, "charge_kwh", c), (bucket, node, "discharge_kwh", d)]
        rte = self.rte(node)
        if rte is not None:
            out.append((bucket, node, "rte_pct", 100.0 * rte))
        return out

    def _flush(self, bucket: int) -> None:
        # the stores' window moves on at the bucket's end (snapshot first: the rows see this bucket)
        for st in self._stores.values():
            st.snaps.append((bucket + self.agg_ms, st.tot[0], st.tot[1], st.stored))
        rows = self.rows(bucket)
        for st in self._stores.values():
            st.bucket0 = list(st.tot)
        self._acc = {}
        self.written = rows
        if not rows or self.ctx.store is None:
            return
        lines = None
        if self.measurement:
            from gridtwin.daemon.lineprotocol import NS_PER_MS, line

            lines = [
                line(
                    self.measurement,
                    {"node": node or "_site"},
                    {k: float(v) for k, v in group},
                    bucket * NS_PER_MS,
                )
                for node, group in _by_node(rows).items()
            ]
        self.ctx.store.write_kpis(rows, spool_lines=lines)

    def state(self) -> dict:
        return {
            "total_kwh": self.total_kwh,
            "last": {n: list(v) for n, v in self._last.items()},
            "bucket": self._bucket,
            "stores": {
                n: {
                    "tot": st.tot,
                    "last": st.last,
                    "stored": st.stored,
                    "snaps": [list(x) for x in st.snaps],
                    "bucket0": st.bucket0,
                }
                for n, st in self._stores.items()
            },
        }

    def restore(self, saved: dict) -> None:
        self.total_kwh = {k: float(v) for k, v in saved.get("total_kwh", {}).items()}
        self._last = {n: tuple(v) for n, v in saved.get("last", {}).items()}
        self._bucket = saved.get("bucket")
        for n, v in saved.get("stores", {}).items():
            st = self._stores[n] = _Store(self.rte_window_ms // self.agg_ms + 2)
            st.tot, st.last, st.stored = list(v["tot"]), list(v["last"]), v["stored"]
            st.snaps.extend(tuple(x) for x in v["snaps"])
            st.bucket0 = list(v["bucket0"])


def _by_node(rows) -> dict:
    out: dict = {}
    for _b, node, k, v in rows:
        out.setdefault(node, []).append((k, v))
    return out
