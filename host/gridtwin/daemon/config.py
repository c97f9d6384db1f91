"""The ``[storage]`` and ``[daemon]`` sections of site.toml (rows added to gridtwin.site's schema).

``STORAGE``, ``DAEMON`` and their ``CHECKS``; gridtwin.schema (the site schema's composition root)
lists them.
"""

from __future__ import annotations

from pathlib import Path

from gridtwin.errors import ConfigError
from gridtwin.site import Key, Section, in_range, one_of
from gridtwin.sitedefaults import DB_FILE, RECEIVE_MAXIMUM

STORAGE = Section(
    {
        "backend": Key(
            str,
            "sqlite",
            check=one_of("sqlite", "influxdb"),
            help="where readings go: sqlite (embedded, default) or influxdb (InfluxDB 2, spooled "
            "to SQLite)",
        ),
        "path": Key(
            str,
            "",
            help="SQLite file; empty = <site var>/gridtwin.db; relative paths are under the site "
            "folder",
        ),
        "sync": Key(
            str,
            "normal",
            check=one_of("normal", "full"),
            help="normal: a committed batch survives a daemon crash; full: also a power cut "
            "(slower)",
        ),
        "raw_days": Key(
            int,
            30,
            check=in_range(1, 36500),
            help="days raw readings are kept before 1-minute rollups replace them",
        ),
        "rollup_days": Key(
            int, 730, check=in_range(1, 36500), help="days 1-minute rollups are kept"
        ),
        "max_payload": Key(
            int, 4096, check=in_range(256, 1 << 20), help="largest accepted payload in bytes"
        ),
        "max_past_days": Key(
            int,
            7,
            check=in_range(1, 3650),
            help="oldest accepted reading ts (outbox replays), days before now",
        ),
        "max_future_s": Key(
            int,
            300,
            check=in_range(0, 86400),
            help="clock skew accepted ahead of the host, seconds",
        ),
        "influx_url": Key(
            str, "http://127.0.0.1:8086", help="InfluxDB base URL (backend = influxdb)"
        ),
        "influx_api": Key(
            str, "v2", check=one_of("v2", "v1"), help="v2 for InfluxDB 2, v1 for InfluxDB 1.x"
        ),
        "influx_org": Key(str, "gridtwin", help="InfluxDB 2 organisation"),
        "influx_bucket": Key(str, "gridtwin", help="InfluxDB 2 bucket (v1: database)"),
        "influx_token_file": Key(
            str, "", help="file holding the InfluxDB token (never the token itself in site.toml)"
        ),
        "influx_measurement": Key(str, "telemetry", help="measurement name of readings"),
    },
    help="telemetry storage",
)

DAEMON = Section(
    {
        "client_id": Key(
            str,
            "",
            help="MQTT client id of instance 1 (fixed, so the broker keeps the session while the "
            "daemon restarts); empty: the host certificate's CN, which the rendered broker "
            "uses as client id anyway (use_username_as_clientid)",
        ),
        "shared_group": Key(
            str,
            "",
            help="non-empty: ingest through $share/<group>/... so several daemons split the load",
        ),
        "instances": Key(
            int,
            1,
            check=in_range(1, 16),
            help="host daemons sharing the ingest (`gridtwin daemon --instance K`); each has its "
            "own certificate gridtwin-host[-K] and broker session; >1 ingests through $share/",
        ),
        "batch_max": Key(
            int,
            20000,
            check=in_range(1, 100000),
            help="most messages per storage transaction (big batches share index pages: fewer "
            "writes)",
        ),
        "receive_maximum": Key(
            int,
            RECEIVE_MAXIMUM,
            check=in_range(1, 65535),
            help="unacknowledged QoS 1 messages the broker may send the daemon (its MQTT 5 "
            "Receive Maximum; the broker's max_inflight_messages is for 3.1.1 clients); above "
            "1,000, where ingest spills a backlog to store it later",
        ),
        "metrics_host": Key(str, "127.0.0.1", help="address of /healthz and /metrics"),
        "metrics_port": Key(
            int, 9810, check=in_range(0, 65535), help="port of /healthz and /metrics; 0 = off"
        ),
        "stale_intervals": Key(
            int,
            3,
            check=in_range(1, 1000),
            help="a node is stale after missing this many intervals",
        ),
        "linger_ms": Key(
            int,
            100,
            check=in_range(0, 1000),
            help="ms ingest waits for more messages before committing a small batch while it "
            "receives 200 msg/s or more (below that 20 ms at most; 0: none); fewer transactions "
            "at moderate rates, at most this much more latency",
        ),
        "gap_grace_s": Key(
            int,
            600,
            check=in_range(1, 7 * 86400),
            help="seconds a seq gap may wait for the node's replay before it counts as missing "
            "readings",
        ),
        "command_ttl_s": Key(
            int,
            60,
            check=in_range(0, 86400),
            help="how long a command for an offline node waits for it",
        ),
    },
    help="the host daemon: ingest, registry, commands",
)


def _check_storage(site) -> None:
    st = site.storage
    if st.raw_days < st.max_past_days:
        # a replay older than the raw window would be re-stored after its original was rolled up
        raise ConfigError(
            site.path,
            "storage.raw_days",
            f"{st.raw_days} days is shorter than storage.max_past_days ({st.max_past_days})",
            "keep raw readings at least as long as replays are accepted",
        )


def _check_daemon(site) -> None:
    d = site.daemon
    if d.metrics_port and d.metrics_port + d.instances - 1 > 65535:
        # instance K serves /healthz and /metrics on metrics_port + K - 1
        raise ConfigError(
            site.path,
            "daemon.metrics_port",
            f"{d.metrics_port} + {d.instances - 1} (one port per instance) passes 65535",
            "pick a lower metrics_port",
        )
    if d.shared_group and ("/" in d.shared_group or "+" in d.shared_group or "#" in d.shared_group):
        raise ConfigError(
            site.path,
            "daemon.shared_group",
            f"'{d.shared_group}' is not a valid share name",
            "use letters, digits, '_' or '-' (no '/', '+', '#')",
        )


def client_ids(site) -> list[str]:
    """The MQTT client id of each daemon instance, instance 1 first. Instance 1 keeps [daemon]
    client_id (its lock file and _host/daemon/<id> status topic stay as they were); the rendered
    broker replaces any client id by the CN anyway. The others send their CN, which is the id the
    broker uses, so logs, lock and status topic agree with it."""
    from gridtwin.pki import host_identities

    ids = host_identities(site)
    return [site.daemon.client_id or ids[0], *ids[1:]]


def shared_group(site) -> str:
    """The $share group ingest uses: the configured one, or "ingest" once there are several
    instances."""
    return site.daemon.shared_group or ("ingest" if site.daemon.instances > 1 else "")


CHECKS = (_check_storage, _check_daemon)


def db_path(site) -> Path:
    p = site.storage.path
    if not p:
        return Path(site.var_dir) / DB_FILE
    p = Path(p).expanduser()
    return p if p.is_absolute() else Path(site.dir) / p
