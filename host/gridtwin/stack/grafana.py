"""Grafana provisioning: the InfluxDB datasource (fixed uid, read token from the environment), the
MQTT live datasource over TLS with Grafana's own certificate, a dashboard provider, and dashboards
built from the site (its nodes, roles and power topology).

Provisioning files are written as JSON, which is valid YAML (Grafana reads either). Secrets are
never inside them: the read token is ``${GRAFANA_INFLUX_TOKEN}`` (set in Grafana's root-only
environment file by ``stack provision``), the MQTT key is ``$__file{...}``.
"""

from __future__ import annotations

import json

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
    out = [{
        "name": "GridTwin InfluxDB",
        "uid": INFLUX_UID,
        "type": "influxdb",
        "access": "proxy",
        "url": st.influx_url,
        "isDefault": True,
        "editable": False,
        "jsonData": {"version": "Flux", "organization": st.influx_org, "defaultBucket": st.influx_bucket,
                     "timeInterval": f"{site.stack.flush_interval_s}s"},
        "secureJsonData": {"token": "${" + TOKEN_VAR + "}"},
    }]
    if site.stack.mqtt_live:
        out.append({
            "name": "GridTwin MQTT live",
            "uid": MQTT_UID,
            "type": MQTT_PLUGIN,
            "access": "proxy",
            "editable": False,
            "jsonData": {"uri": f"tls://{broker_host(site)}:{site.broker.port}", "clientID": "grafana",
                         "tlsAuth": True, "tlsAuthWithCACert": True, "tlsSkipVerify": False},
            "secureJsonData": {"tlsCACert": f"$__file{{{certs_dir}/ca.crt}}",
                               "tlsClientCert": f"$__file{{{certs_dir}/grafana.crt}}",
                               "tlsClientKey": f"$__file{{{certs_dir}/grafana.key}}"},
        })
    return {"apiVersion": 1, "deleteDatasources": [], "datasources": out}


def dashboard_provider(dash_dir: str = DASH_DIR) -> dict:
    return {"apiVersion": 1, "providers": [{
        "name": "gridtwin", "orgId": 1, "folder": "GridTwin", "folderUid": "gridtwin", "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": dash_dir, "foldersFromFilesStructure": False},
    }]}


# --- dashboards ------------------------------------------------------------------------------------

def _flux(site, node_expr: str, field_re: str | None = None, window: bool = True) -> str:
    st = site.storage
    q = (f'from(bucket: "{st.influx_bucket}")\n'
         f'  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
         f'  |> filter(fn: (r) => r._measurement == "{st.influx_measurement}" and {node_expr})\n'
         f'  |> filter(fn: (r) => r._field != "gt_seq" and r._field != "gt_boot")\n')
    if field_re:
        q += f'  |> filter(fn: (r) => r._field =~ /{field_re}/)\n'
    if window:
        q += '  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)\n'
    return q + '  |> yield(name: "mean")'


def _ts(pid: int, title: str, query: str, x: int, y: int, w: int = 12, h: int = 8, unit: str = "short") -> dict:
    return {"id": pid, "type": "timeseries", "title": title, "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "datasource": {"type": "influxdb", "uid": INFLUX_UID},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "datasource": {"type": "influxdb", "uid": INFLUX_UID}, "query": query}]}


def _dash(uid: str, title: str, panels: list, templating: list | None = None, tags=("gridtwin",)) -> dict:
    return {"uid": uid, "title": title, "tags": list(tags), "timezone": "browser", "schemaVersion": 39,
            "version": 1, "editable": False, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": templating or []}, "panels": panels}


def _order(site, roles: set[str]) -> list:
    """Nodes with these roles, upstream before downstream (the power topology's order)."""
    chosen = [n for n in site.nodes if n.role in roles]
    done, out = set(), []

    def visit(n):
        if n.id in done:
            return
        done.add(n.id)
        for p in n.parents:
            up = next((m for m in chosen if m.id == p), None)
            if up:
                visit(up)
        out.append(n)

    for n in chosen:
        visit(n)
    return out


POWER_ROLES = {"utility", "transformer", "generator", "switchgear", "distribution", "ups", "pdu", "server"}


def dashboards(site) -> dict[str, dict]:
    st = site.storage
    node_var = {
        "name": "node", "label": "node", "type": "query", "multi": True, "includeAll": True,
        "datasource": {"type": "influxdb", "uid": INFLUX_UID},
        "query": (f'import "influxdata/influxdb/schema"\n'
                  f'schema.tagValues(bucket: "{st.influx_bucket}", tag: "node", predicate: '
                  f'(r) => r._measurement == "{st.influx_measurement}", start: -30d)'),
        "refresh": 2, "sort": 1, "current": {"text": "All", "value": "$__all"},
    }
    fleet_panels = [
        {"id": 1, "type": "row", "title": "$node", "repeat": "node", "collapsed": False,
         "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}, "panels": []},
        _ts(2, "$node readings", _flux(site, 'r.node == "${node}"'), 0, 1, w=16),
        {"id": 3, "type": "stat", "title": "$node heap / RSSI", "gridPos": {"x": 16, "y": 1, "w": 8, "h": 8},
         "datasource": {"type": "influxdb", "uid": INFLUX_UID},
         "targets": [{"refId": "A", "datasource": {"type": "influxdb", "uid": INFLUX_UID},
                      "query": (f'from(bucket: "{st.influx_bucket}")\n'
                                '  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
                                '  |> filter(fn: (r) => r._measurement == "node_status" and r.node == "${node}")\n'
                                '  |> filter(fn: (r) => r._field == "heap" or r._field == "rssi")\n'
                                '  |> last()')}]},
    ]
    if site.stack.mqtt_live:
        fleet_panels.append({
            "id": 4, "type": "timeseries", "title": "Live (MQTT): $node", "gridPos": {"x": 0, "y": 9, "w": 24, "h": 8},
            "datasource": {"type": MQTT_PLUGIN, "uid": MQTT_UID},
            "targets": [{"refId": "A", "datasource": {"type": MQTT_PLUGIN, "uid": MQTT_UID},
                         "topic": site.topic("${node}", "telemetry")}]})
    out = {"fleet": _dash("gridtwin-fleet", f"GridTwin {site.id}: fleet", fleet_panels, [node_var])}

    def per_node(nodes, panels_for, cols: int) -> list:
        panels, pid = [], 1
        w = max(24 // max(min(len(nodes), cols), 1), 4)
        for i, n in enumerate(nodes):
            for j, (title, field_re, unit) in enumerate(panels_for):
                panels.append(_ts(pid, f"{n.id}: {title}", _flux(site, f'r.node == "{n.id}"', field_re),
                                  (i % cols) * w, (i // cols) * 8 * len(panels_for) + j * 8, w=w, unit=unit))
                pid += 1
        return panels

    chain = _order(site, POWER_ROLES)
    out["power_chain"] = _dash("gridtwin-power-chain", f"GridTwin {site.id}: data-centre power chain",
                               per_node(chain, [("power", None, "short")], cols=4))
    els = [n for n in site.nodes if n.role == "electrolyser"]
    out["electrolysers"] = _dash("gridtwin-electrolysers", f"GridTwin {site.id}: electrolysers side by side",
                                 per_node(els, [("efficiency", "eff", "percent"),
                                                ("hydrogen yield", "h2_(rate|yield|flow)|hydrogen", "short"),
                                                ("safety", "h2_ppm|leak|pressure|temp|safety|trip", "short")],
                                          cols=max(len(els), 1)))
    grid = [n for n in site.nodes if n.role == "grid_monitor"]
    out["grid_frequency"] = _dash("gridtwin-grid-frequency", f"GridTwin {site.id}: grid frequency",
                                  per_node(grid, [("frequency", "freq|f_hz|hz", "hertz"),
                                                  ("rate of change", "rocof", "short")], cols=1))
    return out


def render(site, *, certs_dir: str = CERTS, dash_dir: str = DASH_DIR) -> dict[str, str]:
    """{path under /: text} for Grafana's provisioning and dashboards."""
    head = "# GridTwin: rendered by `gridtwin stack render|install` (JSON is YAML); change site.toml instead.\n"
    files = {
        f"{ETC}/provisioning/datasources/gridtwin.yaml": head + json.dumps(datasources(site, certs_dir=certs_dir), indent=2),
        f"{ETC}/provisioning/dashboards/gridtwin.yaml": head + json.dumps(dashboard_provider(dash_dir), indent=2),
    }
    for name, dash in dashboards(site).items():
        files[f"{dash_dir}/{name}.json"] = json.dumps(dash, indent=1)
    return files
