"""Grafana provisioning: the InfluxDB datasource (fixed uid, read token from the environment), the
MQTT live datasource over TLS with Grafana's own certificate, a dashboard provider, and dashboards
built from the site (its nodes, roles and power topology).

Provisioning files are written as JSON, which is valid YAML (Grafana reads either). Secrets are
never inside them: the read token is ``${GRAFANA_INFLUX_TOKEN}`` (set in Grafana's root-only
environment file by ``stack provision``), the MQTT key is ``$__file{...}``.
"""

from __future__ import annotations

import json

from gridtwin import catalog
from gridtwin.site import PLANT_ROLES, parents_first
from gridtwin.stack import telegraf
from gridtwin.stack.config import broker_host

ETC = "/etc/grafana"
CERTS = f"{ETC}/gridtwin"
DASH_DIR = "/var/lib/grafana/dashboards/gridtwin"
ENV_FILE = "/etc/default/grafana-server"  # Debian's grafana-server.service reads it
TOKEN_VAR = "GRAFANA_INFLUX_TOKEN"
INFLUX_UID = "gridtwin-influxdb"
MQTT_UID = "gridtwin-mqtt"
MQTT_PLUGIN = "grafana-mqtt-datasource"
# Grafana reads GF_<SECTION>_<KEY> from its environment: settings that spare an SD card and keep
# the Pi quiet, without editing grafana.ini.
SETTINGS = {
    "GF_LOG_MODE": "console",  # to journald, not /var/log/grafana
    "GF_ANALYTICS_REPORTING_ENABLED": "false",
    "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
    "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
    "GF_DATABASE_WAL": "true",
    "GF_DASHBOARDS_VERSIONS_TO_KEEP": "5",
}


def datasources(site, *, certs_dir: str = CERTS) -> dict:
    st = site.storage
    out = [
        {
            "name": "GridTwin InfluxDB",
            "uid": INFLUX_UID,
            "type": "influxdb",
            "access": "proxy",
            "url": st.influx_url,
            "isDefault": True,
            "editable": False,
            "jsonData": {
                "version": "Flux",
                "organization": st.influx_org,
                "defaultBucket": st.influx_bucket,
                "timeInterval": f"{site.stack.flush_interval_s}s",
            },
            "secureJsonData": {"token": "${" + TOKEN_VAR + "}"},
        }
    ]
    if site.stack.mqtt_live:
        out.append(
            {
                "name": "GridTwin MQTT live",
                "uid": MQTT_UID,
                "type": MQTT_PLUGIN,
                "access": "proxy",
                "editable": False,
                "jsonData": {
                    "uri": f"tls://{broker_host(site)}:{site.broker.port}",
                    "clientID": "grafana",
                    "tlsAuth": True,
                    "tlsAuthWithCACert": True,
                    "tlsSkipVerify": False,
                },
                "secureJsonData": {
                    "tlsCACert": f"$__file{{{certs_dir}/ca.crt}}",
                    "tlsClientCert": f"$__file{{{certs_dir}/grafana.crt}}",
                    "tlsClientKey": f"$__file{{{certs_dir}/grafana.key}}",
                },
            }
        )
    return {"apiVersion": 1, "deleteDatasources": [], "datasources": out}


def dashboard_provider(dash_dir: str = DASH_DIR) -> dict:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "gridtwin",
                "orgId": 1,
                "folder": "GridTwin",
                "folderUid": "gridtwin",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": dash_dir, "foldersFromFilesStructure": False},
            }
        ],
    }


# --- dashboards
# ------------------------------------------------------------------------------------ Every panel
# names the fields it shows, taken from gridtwin.catalog (what the firmware publishes) or from the
# twin's own state; tests/host/test_stack_catalog.py checks each panel against what the example
# site's firmware really publishes.

GAUGE_FIELDS = ("gt_seq", "gt_boot")  # bookkeeping fields of a reading, not metrics
TWIN_UNITS = {
    "°C": "celsius",
    "MW": "megwatt",
    "s": "s",
    "kg": "masskg",
    "W/m²": "suffix: W/m²",
    "Nm³/h": "suffix: Nm³/h",
    "A/cm²": "suffix: A/cm²",
    "Hz/s": "suffix: Hz/s",
}


def _any(column: str, values) -> str:
    return "(" + " or ".join(f'r.{column} == {json.dumps(v)}' for v in values) + ")"


def _from(site, measurement: str, *where: str, start: str = "v.timeRangeStart") -> str:
    q = (
        f'from(bucket: "{site.storage.influx_bucket}")\n'
        f'  |> range(start: {start}, stop: v.timeRangeStop)\n'
        f'  |> filter(fn: (r) => r._measurement == "{measurement}")\n'
    )
    return q + "".join(f"  |> filter(fn: (r) => {w})\n" for w in where)


def _readings(site, nodes, fields, *, fn: str = "mean", tail: str = "") -> str:
    """Telemetry of these nodes and fields, one series per node and field: the `hist` tag (replayed
    readings) and Telegraf's `site` tag do not split a series."""
    node_expr = 'r.node == "${node}"' if nodes == "$node" else _any("node", nodes)
    return (
        _from(site, site.storage.influx_measurement, node_expr, _any("_field", fields))
        + '  |> group(columns: ["node", "_field"])\n  |> sort(columns: ["_time"])\n'
        + f'  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)\n'
        + tail
        + f'  |> yield(name: "{fn}")'
    )


def _panel(
    pid: int, kind: str, title: str, queries, grid: tuple, unit: str = "none", ds=None, **extra
) -> dict:
    ds = ds or {"type": "influxdb", "uid": INFLUX_UID}
    x, y, w, h = grid
    queries = [queries] if isinstance(queries, str) else queries
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "datasource": ds,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(65 + i), "datasource": ds, "query": q} for i, q in enumerate(queries)
        ],
    }
    p.update(extra)
    return p


def _dash(
    uid: str, title: str, panels: list, templating: list | None = None, tags=("gridtwin",)
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "tags": list(tags),
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": templating or []},
        "panels": panels,
    }


def _order(site, roles: set[str]) -> list:
    """Nodes with these roles, upstream before downstream (the power topology's order)."""
    chosen = {n.id: n for n in site.nodes if n.role in roles}
    ids, _ = parents_first({i: [p for p in n.parents if p in chosen] for i, n in chosen.items()})
    return [chosen[i] for i in ids]


POWER_ROLES = PLANT_ROLES  # the power chain's nodes: the firmware's plant roles
# role families with a dashboard each: (key, uid, title, roles)
FAMILIES = (
    ("pv", "gridtwin-pv", "PV arrays", {"pv"}),
    ("electrolysers", "gridtwin-electrolysers", "electrolysers side by side", {"electrolyser"}),
    ("grid_frequency", "gridtwin-grid-frequency", "grid frequency", {"grid_monitor"}),
    ("sensors", "gridtwin-sensors", "sensor nodes", {"sensor"}),
)


class _Grid:
    """Panels left to right in rows of 24 columns."""

    def __init__(self):
        self.pid, self.x, self.y, self.h = 0, 0, 0, 0

    def place(self, w: int, h: int = 8) -> tuple[int, tuple]:
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.h
        self.pid += 1
        at = (self.x, self.y, w, h)
        self.x += w
        self.h = h if self.x == w else max(self.h, h)
        return self.pid, at

    def newline(self):
        if self.x:
            self.x, self.y = 0, self.y + self.h


def _group_panel(site, g: _Grid, nodes, ms: list[catalog.Metric], title: str, w: int) -> dict:
    pid, at = g.place(w)
    names = list(dict.fromkeys(m.name for m in ms))
    m0 = ms[0]
    if m0.quantity == "state":  # 0/1 flags
        return _panel(
            pid,
            "state-timeline",
            title,
            _readings(site, nodes, names, fn="last"),
            at,
            description="1 = yes, 0 = no: " + "; ".join(f"{m.name}: {m.description}" for m in ms),
        )
    return _panel(
        pid,
        "timeseries",
        title,
        _readings(site, nodes, names),
        at,
        catalog.grafana_unit(m0.unit),
        description="; ".join(f"{m.name}: {m.description}" for m in ms),
    )


def _family_panels(site, nodes, g: _Grid, skip=()) -> list:
    """One panel per (quantity, unit) of these nodes' metrics, all nodes in each (side by side)."""
    metrics = [m for n in nodes for m in catalog.node_metrics(n).values() if m.name not in skip]
    groups = catalog.groups(metrics)
    out = []
    for (quantity, unit), ms in groups.items():
        title = quantity + (
            f" ({unit})" if unit and sum(q == quantity for q, _ in groups) > 1 else ""
        )
        out.append(_group_panel(site, g, [n.id for n in nodes], ms, title, 8))
    return out


def _electrolyser_panels(site, els, g: _Grid) -> list:
    """Efficiency, hydrogen, specific energy and safety, EL1 vs EL2 in each panel. The derived
    quantities are computed here, in Flux, from what the nodes publish (gridtwin.catalog:
    electrolyser_inputs): electric power P = u x i (or the chip's power), hydrogen h2_nlh (NL/h):
    efficiency = h2 x HHV / P (HHV 3.5424 kWh/Nm3, i.e. Wh/NL), specific energy = P / h2 (W per
    NL/h = kWh/Nm3)."""
    hhv = catalog.HHV_KWH_PER_NM3

    def derived(n, name: str, expr: str) -> str | None:
        ins = catalog.electrolyser_inputs(n)
        if ins is None:
            return None
        p = f'r.{ins["u"]} * r.{ins["i"]}' if "u" in ins else f'r.{ins["p"]}'
        have = " and ".join(f"exists r.{f}" for f in ins.values())
        return _readings(
            site,
            [n.id],
            list(ins.values()),
            tail=(
                '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
                f'  |> filter(fn: (r) => {have} and {p} > 0.0 and r.h2_nlh > 0.0)\n'
                f'  |> map(fn: (r) => ({{_time: r._time, node: r.node, _field: "{name}", '
                f'_value: {expr.format(p=p, hhv=hhv)}}}))\n'
            ),
        )

    ids = [n.id for n in els]
    out = []
    for title, name, expr, unit in (
        ("efficiency (HHV)", "efficiency", "100.0 * r.h2_nlh * {hhv} / ({p})", "percent"),
        ("specific energy", "specific_energy", "({p}) / r.h2_nlh", "suffix: kWh/Nm³"),
    ):
        qs = [q for n in els if (q := derived(n, name, expr))]
        if qs:
            pid, at = g.place(8)
            out.append(
                _panel(
                    pid,
                    "timeseries",
                    title,
                    qs,
                    at,
                    unit,
                    description=(
                        "from u x i (or the stack monitor's power) and h2_nlh; HHV of hydrogen "
                        f"{hhv} kWh/Nm³"
                    ),
                )
            )
    h2 = [n.id for n in els if "h2_nlh" in catalog.node_metrics(n)]
    if h2:
        pid, at = g.place(8)
        out.append(
            _panel(
                pid,
                "stat",
                "hydrogen made in the time range",
                _from(
                    site, site.storage.influx_measurement, _any("node", h2), 'r._field == "h2_nlh"'
                )
                + '  |> group(columns: ["node"])\n  |> sort(columns: ["_time"])\n  |> '
                'integral(unit: 1h)\n' + '  |> yield(name: "integral")',
                at,
                "suffix: NL",
                description="the integral of h2_nlh (NL/h) over time",
            )
        )
    g.newline()
    # safety: stack temperature (from the nodes), gas purity and trips (the twin), active alerts
    temps = [
        m.name for n in els for m in catalog.node_metrics(n).values() if m.quantity == "temperature"
    ]
    if temps:
        pid, at = g.place(8)
        out.append(
            _panel(
                pid,
                "timeseries",
                "safety: stack temperature",
                _readings(site, ids, list(dict.fromkeys(temps))),
                at,
                "celsius",
            )
        )
    pid, at = g.place(8)
    out.append(
        _panel(
            pid,
            "timeseries",
            "safety: hydrogen in oxygen (twin)",
            _from(site, telegraf.TWIN, _any("component", ids), 'r._field == "hto_pct"')
            + '  |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)',
            at,
            "percent",
            description=(
                "the twin's HTO: an electrolyser trips at 2 %, the lower explosive limit is 4 %"
            ),
        )
    )
    pid, at = g.place(8)
    out.append(_panel(pid, "table", "safety: active alerts", _active_alerts(site, ids), at))
    g.newline()
    return out


def _active_alerts(site, sources=None) -> str:
    # the last point per alert: raised (active 1, from the retained alert) or cleared (active 0,
    # the empty retained message); an alert raised before the time range is still active, so
    # this looks back 30 days
    where = [_any("_field", ("active", "message", "alert_id"))]
    return (
        _from(site, telegraf.ALERTS, *where, start="-30d")
        + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        + '  |> group(columns: ["alert"])\n  |> sort(columns: ["_time"])\n  |> last(column: '
        '"_time")\n'
        + (f'  |> filter(fn: (r) => {_any("source", sources)})\n' if sources else "")
        + '  |> filter(fn: (r) => r.active == 1.0)\n  |> group()\n'
        + '  |> keep(columns: ["_time", "alert", "severity", "kind", "source", "message"])'
    )


def _grid_panels(site, grids, g: _Grid) -> list:
    """Frequency, its deviation from nominal (the node's f_dev) and its rate of change (RoCoF,
    computed here: the derivative of the measured frequency), then everything else the meters
    read."""
    out = []
    hz = [(n.id, catalog.role_input(n)) for n in grids if catalog.role_input(n)]
    if hz:
        pid, at = g.place(8)
        out.append(
            _panel(
                pid,
                "timeseries",
                "frequency",
                _readings(site, [n for n, _ in hz], [f for _, f in hz]),
                at,
                "hertz",
            )
        )
        pid, at = g.place(8)
        out.append(
            _panel(
                pid,
                "timeseries",
                "rate of change (RoCoF)",
                [
                    _readings(
                        site, [n], [f], tail='  |> derivative(unit: 1s, nonNegative: false)\n'
                    )
                    for n, f in hz
                ],
                at,
                "suffix: Hz/s",
                description="d(frequency)/dt of the measured frequency, per second",
            )
        )
    g.newline()
    return out + _family_panels(site, grids, g, skip={f for _, f in hz})


def _twin_panels(site, g: _Grid) -> list:
    """The twin's state (<root>/_host/twin): component status, then one panel per unit."""
    from gridtwin.errors import GridTwinError
    from gridtwin.twin import Twin

    try:
        state = Twin.from_site(site).state()
    except GridTwinError:  # a site the twin cannot model has no twin dashboard
        return []
    pid, at = g.place(24)
    out = [
        _panel(
            pid,
            "state-timeline",
            "component status",
            _from(site, telegraf.TWIN, 'r._field == "status"')
            + '  |> group(columns: ["component"])\n  |> aggregateWindow(every: v.windowPeriod, '
            'fn: last, createEmpty: false)',
            at,
        )
    ]
    by_unit: dict[str, list[str]] = {}
    for c in state.values():
        for k, v in c["m"].items():
            if isinstance(v, (int, float)):
                by_unit.setdefault(c["units"].get(k, ""), []).append(k)
    for unit, names in sorted(by_unit.items(), key=lambda kv: kv[0] == ""):
        names = list(dict.fromkeys(names))
        q = (
            _from(site, telegraf.TWIN, _any("_field", names))
            + '  |> group(columns: ["component", "_field"])\n'
            + f'  |> aggregateWindow(every: v.windowPeriod, fn: {"mean" if unit else "last"}, '
            'createEmpty: false)'
        )
        pid, at = g.place(8)
        title = f"twin: {unit}" if unit else "twin: states (0/1)"
        out.append(
            _panel(
                pid,
                "timeseries" if unit else "state-timeline",
                title,
                q,
                at,
                TWIN_UNITS.get(unit, catalog.grafana_unit(unit)),
                description=", ".join(names),
            )
        )
    return out


def _events_panels(site, g: _Grid) -> list:
    """Alerts (<root>/_host/alerts/...) and node logs (<root>/<node>/log)."""
    out = []
    pid, at = g.place(24)
    out.append(_panel(pid, "table", "active alerts", _active_alerts(site), at))
    pid, at = g.place(24)
    out.append(
        _panel(
            pid,
            "table",
            "alerts raised in the time range",
            _from(site, telegraf.ALERTS, _any("_field", ("active", "message")))
            + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
            + '  |> filter(fn: (r) => r.active == 1.0)\n  |> group()\n  |> sort(columns: '
            '["_time"], desc: true)\n'
            + '  |> keep(columns: ["_time", "alert", "severity", "kind", "source", "message"])',
            at,
        )
    )
    pid, at = g.place(24)
    out.append(
        _panel(
            pid,
            "timeseries",
            "node log lines per level",
            _from(site, telegraf.LOG, 'r._field == "msg"')
            + '  |> group(columns: ["node", "lvl"])\n'
            + '  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: false)',
            at,
            "short",
        )
    )
    pid, at = g.place(24, 12)
    out.append(
        _panel(
            pid,
            "table",
            "node logs",
            _from(site, telegraf.LOG, 'r._field == "msg"')
            + '  |> group()\n  |> sort(columns: ["_time"], desc: true)\n'
            + '  |> keep(columns: ["_time", "node", "lvl", "mod", "_value"])',
            at,
        )
    )
    return out


def _fleet(site) -> dict:
    st = site.storage
    node_var = {
        "name": "node",
        "label": "node",
        "type": "query",
        "multi": True,
        "includeAll": True,
        "datasource": {"type": "influxdb", "uid": INFLUX_UID},
        "query": (
            f'import "influxdata/influxdb/schema"\n'
            f'schema.tagValues(bucket: "{st.influx_bucket}", tag: "node", predicate: '
            f'(r) => r._measurement == "{st.influx_measurement}", start: -30d)'
        ),
        "refresh": 2,
        "sort": 1,
        "current": {"text": "All", "value": "$__all"},
    }
    status = telegraf.STATUS
    panels = [
        {
            "id": 1,
            "type": "row",
            "title": "$node",
            "repeat": "node",
            "collapsed": False,
            "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1},
            "panels": [],
        },
        # every reading of the node, whatever it is (the role dashboards show them by quantity)
        _panel(
            2,
            "timeseries",
            "$node readings",
            _from(
                site,
                st.influx_measurement,
                'r.node == "${node}"',
                " and ".join(f'r._field != "{f}"' for f in GAUGE_FIELDS),
            )
            + '  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)\n  |> '
            'yield(name: "mean")',
            (0, 1, 16, 8),
            "short",
        ),
        _panel(
            3,
            "stat",
            "$node heap / RSSI",
            _from(site, status, 'r.node == "${node}"', _any("_field", ("heap", "heap_min", "rssi")))
            + "  |> last()",
            (16, 1, 8, 8),
        ),
        _panel(
            4,
            "state-timeline",
            "$node online",
            _from(site, status, 'r.node == "${node}"', 'r._field == "online"')
            + '  |> group(columns: ["node"])',
            (0, 9, 12, 4),
        ),
        _panel(
            5,
            "table",
            "$node log",
            _from(site, telegraf.LOG, 'r.node == "${node}"', 'r._field == "msg"')
            + '  |> group()\n  |> sort(columns: ["_time"], desc: true)\n'
            + '  |> keep(columns: ["_time", "lvl", "mod", "_value"])',
            (12, 9, 12, 4),
        ),
    ]
    if site.stack.mqtt_live:
        live = {"type": MQTT_PLUGIN, "uid": MQTT_UID}
        panels.append(
            {
                "id": 6,
                "type": "timeseries",
                "title": "Live (MQTT): $node",
                "gridPos": {"x": 0, "y": 13, "w": 24, "h": 8},
                "datasource": live,
                "targets": [
                    {"refId": "A", "datasource": live, "topic": site.topic("${node}", "telemetry")}
                ],
            }
        )
    return _dash("gridtwin-fleet", f"GridTwin {site.id}: fleet", panels, [node_var])


def _opcua(site) -> dict:
    """The OPC UA points the daemon collects (`[[opcua.sources]]`, measurement opcua_telemetry; tags
    enterprise, site, area, line, machine, tag): one panel per quantity of the seed's tags
    (gridtwin/opcua/model.py TAG_QUANTITY), the other tags, states, flags and what is not GOOD; a
    series per machine and tag."""
    from gridtwin.opcua.collector import MEASUREMENT
    from gridtwin.opcua.model import TAG_QUANTITY

    def values(field: str, *where: str, fn: str = "mean") -> str:
        return (
            _from(site, MEASUREMENT, f'r._field == "{field}"', *where)
            + '  |> group(columns: ["machine", "tag"])\n'
            + f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)\n"
            + f'  |> yield(name: "{fn}")'
        )

    by_quantity: dict[str, list[str]] = {}
    for tag, q in TAG_QUANTITY.items():
        by_quantity.setdefault(q, []).append(tag)
    g, panels = _Grid(), []
    for q, tags in by_quantity.items():
        pid, at = g.place(8)
        panels.append(_panel(pid, "timeseries", q, values("value_float", _any("tag", tags)), at))
    known = " and ".join(f"r.tag != {json.dumps(t)}" for t in TAG_QUANTITY)
    pid, at = g.place(8)
    panels.append(_panel(pid, "timeseries", "other tags", values("value_float", known), at))
    g.newline()
    for title, field in (("states", "value_string"), ("flags", "value_bool")):
        pid, at = g.place(12)
        panels.append(_panel(pid, "state-timeline", title, values(field, fn="last"), at))
    pid, at = g.place(24)
    panels.append(
        _panel(
            pid,
            "table",
            "points not GOOD (BAD: the server away or the asset out of service; no value stored)",
            _from(site, MEASUREMENT, 'r._field == "quality"', 'r._value != "GOOD"')
            + '  |> group(columns: ["machine", "tag"])\n  |> last()',
            at,
        )
    )
    return _dash("gridtwin-opcua", f"GridTwin {site.id}: OPC UA points", panels)


def dashboards(site) -> dict[str, dict]:
    out = {"fleet": _fleet(site)}
    chain = _order(site, POWER_ROLES)
    if chain:
        g, panels = _Grid(), []
        for n in chain:  # a row of panels per node, upstream first
            groups = catalog.groups(catalog.node_metrics(n).values())
            w = max(24 // max(len(groups), 1), 4)
            for (quantity, _unit), ms in groups.items():
                panels.append(_group_panel(site, g, [n.id], ms, f"{n.id}: {quantity}", w))
            g.newline()
        out["power_chain"] = _dash(
            "gridtwin-power-chain", f"GridTwin {site.id}: data-centre power chain", panels
        )
    for key, uid, title, roles in FAMILIES:
        nodes = [n for n in site.nodes if n.role in roles]
        if not nodes:
            continue
        g = _Grid()
        if key == "electrolysers":
            panels = _electrolyser_panels(site, nodes, g) + _family_panels(site, nodes, g)
        elif key == "grid_frequency":
            panels = _grid_panels(site, nodes, g)
        else:
            panels = _family_panels(site, nodes, g)
        out[key] = _dash(uid, f"GridTwin {site.id}: {title}", panels)
    twin = _twin_panels(site, _Grid())
    if twin:
        out["twin"] = _dash("gridtwin-twin", f"GridTwin {site.id}: digital twin", twin)
    if site.opcua.sources:  # the daemon collects OPC UA points (gridtwin/opcua/service.py)
        out["opcua"] = _opcua(site)
    out["events"] = _dash(
        "gridtwin-events",
        f"GridTwin {site.id}: alerts and node logs",
        _events_panels(site, _Grid()),
    )
    return out


def render(site, *, certs_dir: str = CERTS, dash_dir: str = DASH_DIR) -> dict[str, str]:
    """{path under /: text} for Grafana's provisioning and dashboards."""
    head = (
        "# GridTwin: rendered by `gridtwin stack render|install` (JSON is YAML); change site.toml "
        "instead.\n"
    )
    files = {
        f"{ETC}/provisioning/datasources/gridtwin.yaml": head
        + json.dumps(datasources(site, certs_dir=certs_dir), indent=2),
        f"{ETC}/provisioning/dashboards/gridtwin.yaml": head
        + json.dumps(dashboard_provider(dash_dir), indent=2),
    }
    for name, dash in dashboards(site).items():
        files[f"{dash_dir}/{name}.json"] = json.dumps(dash, indent=1)
    return files
