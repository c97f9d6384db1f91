"""Energy KPIs: kWh per node by integrating its power, and what follows from them, every
``aggregation_s`` (bucketed by reading time) into the ``kpi`` table (and an InfluxDB measurement
when the site's backend is InfluxDB: lines through the store's spool).

Per node and bucket: energy_kwh, avg_kw, peak_kw, load_factor (avg / peak), pf_mean (nodes that
measure a power factor), h2_nm3, specific_kwh_nm3 and efficiency_pct (electrolysers: stack energy
over hydrogen, against hydrogen's higher heating value), battery_discharge_kwh (UPSs: the load
carried on battery). Per site (node ""): generation_kwh (pv, generator), import_kwh (utility),
consumption_kwh (servers, electrolysers, meters), renewable_share_pct (pv over all supply), pue
(utility + generator over the IT load of the servers).

Integration is trapezoidal between consecutive readings of a node; a gap longer than three of the
node's intervals (at least 10 s) is not bridged: energy nobody measured is not invented (nor is a
stretch an outbox replays after the live readings went past it). The
running totals (``total_kwh``) are saved with the detector's state and survive a restart.
"""

from __future__ import annotations

from gridtwin.analytics.base import Context
from gridtwin.catalog import HHV_KWH_PER_NM3, node_metrics

GENERATION, IMPORT, RENEWABLE = (
    frozenset({"pv", "generator"}),
    frozenset({"utility"}),
    frozenset({"pv"}),
)
CONSUMERS = frozenset({"server", "electrolyser", "grid_monitor", "sensor"})
IT_LOAD = frozenset({"server"})
_SCALE = {"W": 0.001, "kW": 1.0, "MW": 1000.0}


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
    ):
        self.ctx = ctx
        self.agg_ms = int(aggregation_s * 1000)
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
            p = self._power_of(node)
            if metric == "on_batt":
                self._on_batt[node] = value
            if p is not None and metric == p[0]:
                kw = value * p[1]
                last = self._last.get(node)
                if last is not None and ts <= last[0]:
                    continue  # an outbox replay behind the live readings: that stretch is a gap here
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
            site["generation"] += a.kwh if role in GENERATION else 0.0
            site["import"] += a.kwh if role in IMPORT else 0.0
            site["consumption"] += a.kwh if role in CONSUMERS else 0.0
            site["renewable"] += a.kwh if role in RENEWABLE else 0.0
            site["it"] += a.kwh if role in IT_LOAD else 0.0
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

    def _flush(self, bucket: int) -> None:
        rows = self.rows(bucket)
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
        }

    def restore(self, saved: dict) -> None:
        self.total_kwh = {k: float(v) for k, v in saved.get("total_kwh", {}).items()}
        self._last = {n: tuple(v) for n, v in saved.get("last", {}).items()}
        self._bucket = saved.get("bucket")


def _by_node(rows) -> dict:
    out: dict = {}
    for _b, node, k, v in rows:
        out.setdefault(node, []).append((k, v))
    return out
