"""The ``[stack]`` section of site.toml (Telegraf, InfluxDB 2, Grafana). InfluxDB's URL, org,
bucket and measurement come from ``[storage]`` (gridtwin.daemon.config), so the daemon, Telegraf
and the dashboards agree on where readings are."""

from __future__ import annotations

from gridtwin.site import Key, Section, in_range

STACK = Section(
    {
        "retention_days": Key(
            int,
            365,
            check=in_range(0, 36500),
            help="days InfluxDB 2 keeps readings in the bucket; 0 = forever",
        ),
        "broker_host": Key(
            str,
            "",
            help="broker name Telegraf and Grafana connect to; empty = the first [broker] hosts "
            "entry",
        ),
        "grafana_url": Key(
            str, "http://127.0.0.1:3000", help="Grafana's base URL (doctor checks /api/health)"
        ),
        "flush_interval_s": Key(
            int,
            10,
            check=in_range(1, 3600),
            help="seconds Telegraf batches readings before writing (larger spares the SD card)",
        ),
        "mqtt_live": Key(
            bool,
            True,
            help="provision Grafana's MQTT live datasource (plugin grafana-mqtt-datasource)",
        ),
    },
    help="Telegraf, InfluxDB 2 and Grafana (gridtwin stack)",
)


def broker_host(site) -> str:
    return site.stack.broker_host or (site.broker.hosts[0] if site.broker.hosts else "localhost")
