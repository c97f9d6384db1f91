"""Telegraf's configuration: MQTT (mTLS, its own certificate) in, InfluxDB 2 out.

Readings land exactly as the daemon's InfluxDB writer stores them (gridtwin.daemon.lineprotocol):
measurement ``[storage] influx_measurement`` (default "telemetry"), tag ``node``, one float field
per metric, ``gt_seq`` (int) and ``gt_boot`` (string), tag ``hist`` on replayed readings, time from
the payload's ``ts`` in ms. Telegraf adds the tag ``site``. So the dashboards read either writer.

Topic parsing: ``<root>/+/telemetry`` has len(root)+2 levels; the ``tags`` pattern has exactly as
many, with ``node`` at the ``+`` and ``site`` at the root's last level when that is the site id
(the default root ``gridtwin/<site>``), else ``site`` is a static tag.
"""

from __future__ import annotations

import json

from gridtwin.stack.config import broker_host

ETC = "/etc/telegraf"
CONF = f"{ETC}/telegraf.d/gridtwin.conf"
CERTS = f"{ETC}/gridtwin"
ENV_FILE = "/etc/default/telegraf"  # Debian's telegraf.service reads it (EnvironmentFile=-)
TOKEN_VAR = "INFLUX_TOKEN"
CLIENT_ID = "telegraf"  # the broker sets it to the certificate CN anyway (use_username_as_clientid)


def _q(value) -> str:
    """A TOML value: JSON's string escapes are valid TOML basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_q(v) for v in value) + "]"
    return json.dumps(str(value))


def topic_tags(site, leaf: str) -> tuple[str, str, dict]:
    """(topic filter, tags pattern, static tags) for `<root>/+/<leaf>`; pattern length == topic length."""
    levels = site.topic_root.split("/")
    names = ["_"] * len(levels)
    static = {}
    if levels[-1] == site.id:
        names[-1] = "site"
    else:
        static["site"] = site.id
    topic = "/".join(levels + ["+", leaf])
    pattern = "/".join(names + ["node", "_"])
    return topic, pattern, static


def render(site, *, certs_dir: str = CERTS) -> str:
    st, stack = site.storage, site.stack
    meas = st.influx_measurement
    host, port = broker_host(site), site.broker.port
    lines = [
        f"# GridTwin site '{site.id}': Telegraf reads the node topics and writes InfluxDB 2.",
        "# Rendered by `gridtwin stack render|install`; change site.toml and render again instead of this file.",
        f"# The InfluxDB token comes from ${{{TOKEN_VAR}}}, set in {ENV_FILE} (root-only) by `gridtwin stack provision`.",
        "",
        "[agent]",
        # SD card: batch writes, no local log file (journald), hostname tag not needed
        f"  interval = {_q(f'{stack.flush_interval_s}s')}",
        f"  flush_interval = {_q(f'{stack.flush_interval_s}s')}",
        "  flush_jitter = \"2s\"",
        "  metric_batch_size = 5000",
        "  metric_buffer_limit = 100000",
        "  omit_hostname = true",
        "  logfile = \"\"",
        "  quiet = true",
        "",
    ]

    def consumer(leaf: str, comment: str, body: list[str]) -> list[str]:
        topic, pattern, static = topic_tags(site, leaf)
        out = [
            f"# {comment}",
            "[[inputs.mqtt_consumer]]",
            f"  servers = {_q([f'ssl://{host}:{port}'])}",
            f"  topics = {_q([topic])}",
            "  qos = 1",
            "  persistent_session = true",
            f"  client_id = {_q(CLIENT_ID)}",
            "  topic_tag = \"\"",
            "  connection_timeout = \"30s\"",
            "  max_undelivered_messages = 1000",
            f"  tls_ca = {_q(f'{certs_dir}/ca.crt')}",
            f"  tls_cert = {_q(f'{certs_dir}/telegraf.crt')}",
            f"  tls_key = {_q(f'{certs_dir}/telegraf.key')}",
            f"  tls_server_name = {_q(host)}",
            "  data_format = \"json_v2\"",
        ]
        if static:
            out += ["  [inputs.mqtt_consumer.tags]"] + [f"    {k} = {_q(v)}" for k, v in static.items()]
        out += [
            "  [[inputs.mqtt_consumer.topic_parsing]]",
            f"    topic = {_q(topic)}",
            f"    tags = {_q(pattern)}",
        ]
        return out + body + [""]

    lines += consumer("telemetry", "Telemetry: {\"v\",\"node\",\"boot\",\"seq\",\"ts\",\"m\":{metric: number},\"hist\"?}", [
        "  [[inputs.mqtt_consumer.json_v2]]",
        f"    measurement_name = {_q(meas)}",
        "    timestamp_path = \"ts\"",
        "    timestamp_format = \"unix_ms\"",
        "    [[inputs.mqtt_consumer.json_v2.tag]]",
        "      path = \"hist\"",
        "      type = \"string\"",
        "      optional = true",
        "    [[inputs.mqtt_consumer.json_v2.field]]",
        "      path = \"seq\"",
        "      rename = \"gt_seq\"",
        "      type = \"int\"",
        "    [[inputs.mqtt_consumer.json_v2.field]]",
        "      path = \"boot\"",
        "      rename = \"gt_boot\"",
        "      type = \"string\"",
        "    [[inputs.mqtt_consumer.json_v2.object]]",
        "      path = \"m\"",
        "      disable_prepend_keys = true",
    ])
    lines += consumer("status", "Birth and will (retained): state, heap, RSSI, uptime", [
        "  [[inputs.mqtt_consumer.json_v2]]",
        "    measurement_name = \"node_status\"",
        "    [[inputs.mqtt_consumer.json_v2.tag]]",
        "      path = \"state\"",
        "      type = \"string\"",
        *[line for f, t in (("heap", "int"), ("rssi", "int"), ("uptime", "int"), ("fw", "string"))
          for line in ("    [[inputs.mqtt_consumer.json_v2.field]]", f"      path = {_q(f)}",
                       f"      type = {_q(t)}", "      optional = true")],
    ])
    lines += [
        "[[outputs.influxdb_v2]]",
        f"  urls = {_q([st.influx_url])}",
        f"  token = \"${{{TOKEN_VAR}}}\"",
        f"  organization = {_q(st.influx_org)}",
        f"  bucket = {_q(st.influx_bucket)}",
        "  content_encoding = \"gzip\"",
        "  timeout = \"10s\"",
        "",
    ]
    return "\n".join(lines)
