"""Telegraf's configuration: one MQTT connection (mTLS, its own certificate) in, InfluxDB 2 out.

One ``[[inputs.mqtt_consumer]]`` subscribes to every contract topic Telegraf stores, on one
persistent session: the broker makes the client id the certificate CN, so a second input on the
``telegraf`` certificate would take the first one's session over, and back, forever. An MQTT input
has one data format for all its topics, and the payloads differ, so the input keeps each payload
as a string (``data_format = "value"``, the topic in tag ``topic``) and one ``processors.starlark``
script (``STARLARK``, run by Telegraf's embedded Go Starlark) turns each message into points:

- ``<root>/<node>/telemetry`` -> ``[storage] influx_measurement`` (default "telemetry"): tags node,
  site, hist (replayed readings); fields: each key of ``m`` (float), gt_seq (int), gt_boot (string);
  time ``ts`` (ms) plus ``seq`` in the sub-millisecond digits (ns), as the daemon's writer.
- ``<root>/<node>/status`` (birth, will) -> ``node_status``: tags node, site, state; fields online
  (1/0), every number (float: heap, heap_min, rssi, uptime, outbox, drops, ...), every string (fw,
  board, role, reset, cfg), gt_boot; time ``ts``, else arrival (the will has none).
- ``<root>/<node>/log`` -> ``node_log``: tags node, site, lvl, mod (when sent); field msg; time
``ts``.
- ``<root>/_host/twin`` -> ``twin``, a point per component: tags component, kind, site; fields each
  number of its ``m`` (float), status (string), twin_t; arrival time (the twin's t is simulated).
- ``<root>/_host/alerts/<key>`` -> ``alerts`` (key: ``<node>/<kind>[/<metric>]``): tags alert (the
key),
  site, severity, kind (kind or type), source (node or component), metric (analytics); fields active
  1, message, alert_id, value (analytics: the reading); time ``ts``, else arrival.
  The empty retained message that clears an alert becomes active 0 (tags alert, site): a dashboard
  tells active alerts by the last point per alert.

Telemetry lands exactly as the daemon's InfluxDB writer stores it (gridtwin.daemon.lineprotocol),
plus the tag ``site``, so the dashboards read either writer. An unknown topic or payload shape makes
no point (a payload that is not JSON is logged by Telegraf and dropped); the output drops whatever
the script did not convert.
"""

from __future__ import annotations

import json

from gridtwin.identities import TELEGRAF_IDENTITY
from gridtwin.stack.config import broker_host

ETC = "/etc/telegraf"
CONF = f"{ETC}/telegraf.d/gridtwin.conf"
CERTS = f"{ETC}/gridtwin"
ENV_FILE = "/etc/default/telegraf"  # Debian's telegraf.service reads it (EnvironmentFile=-)
TOKEN_VAR = "INFLUX_TOKEN"
# the broker sets the client id to the certificate CN anyway (use_username_as_clientid)
CLIENT_ID = TELEGRAF_IDENTITY
RAW = "gridtwin_mqtt"  # the input's metric name: a message not yet turned into points
NODE_LEAVES = ("telemetry", "status", "log")  # <root>/<node>/<leaf> topics Telegraf stores
STATUS, LOG, TWIN, ALERTS = "node_status", "node_log", "twin", "alerts"  # measurements

# Go Starlark (Telegraf's processors.starlark), not Python: type() gives a string, no try/except,
# no classes. `points` is pure (topic, decoded JSON or None) -> point dicts, so the tests run it
# in the same interpreter; `apply` is Telegraf's entry point. starlark_source() prepends ROOT,
# SITE and the measurement names. Numbers become floats: InfluxDB fixes a field's type at its
# first write, and a value sent once as 21 and later as 21.5 must not be refused (the daemon's
# writer does the same).
STARLARK = """
def _num(v):
    if type(v) == "int" or type(v) == "float":
        return float(v)
    if type(v) == "bool":
        return 1.0 if v else 0.0
    return None


def _ns(ms):
    # a payload's ts (Unix ms) as the point's time in ns; None: the time it arrived
    if type(ms) == "int" or type(ms) == "float":
        return int(ms) * 1000000
    return None


def _numbers(d):
    out = {}
    for k, v in d.items():
        x = _num(v)
        if x != None:
            out[k] = x
    return out


def _point(name, tags, fields, time_ns):
    return {"name": name, "tags": tags, "fields": fields, "time": time_ns}


def _telemetry(node, doc):
    m = doc.get("m")
    ts = _ns(doc.get("ts"))
    if type(m) != "dict" or ts == None:
        return []
    fields = _numbers(m)
    if not fields:
        return []
    if type(doc.get("seq")) == "int":
        fields["gt_seq"] = doc["seq"]
        # as the daemon's writer (gridtwin.daemon.lineprotocol.point_time_ns): seq in the
        # sub-millisecond digits, so two readings stamped in one millisecond stay two points
        ts += doc["seq"] % 1000000
    if doc.get("boot") != None:
        fields["gt_boot"] = str(doc["boot"])
    tags = {"node": node, "site": SITE}
    if doc.get("hist") == True:
        tags["hist"] = "true"
    return [_point(TELEMETRY, tags, fields, ts)]


def _status(node, doc):
    state = doc.get("state")
    if type(state) != "string":
        return []
    fields = {"online": 1.0 if state == "online" else 0.0}
    for k, v in doc.items():
        if k in ("ts", "boot", "state", "node"):
            continue
        if type(v) == "string":
            fields[k] = v
        elif _num(v) != None:
            fields[k] = _num(v)
    if doc.get("boot") != None:
        fields["gt_boot"] = str(doc["boot"])
    tags = {"node": node, "site": SITE, "state": state}
    return [_point(STATUS, tags, fields, _ns(doc.get("ts")))]


def _log(node, doc):
    msg = doc.get("msg")
    if type(msg) != "string":
        return []
    tags = {"node": node, "site": SITE, "lvl": str(doc.get("lvl", "?"))}
    if type(doc.get("mod")) == "string" and doc["mod"]:
        tags["mod"] = doc["mod"]
    return [_point(LOG, tags, {"msg": msg}, _ns(doc.get("ts")))]


def _twin(doc):
    comps = doc.get("components")
    if type(comps) != "dict":
        return []
    t = _num(doc.get("t"))
    out = []
    for cid, c in comps.items():
        if type(c) != "dict":
            continue
        fields = _numbers(c["m"]) if type(c.get("m")) == "dict" else {}
        if type(c.get("status")) == "string":
            fields["status"] = c["status"]
        if t != None:
            fields["twin_t"] = t
        if fields:
            tags = {"component": cid, "kind": str(c.get("kind", "")), "site": SITE}
            out.append(_point(TWIN, tags, fields, None))
    return out


def _alert(key, doc):
    if doc == None:  # an empty retained message: the alert is cleared
        return [_point(ALERTS, {"alert": key, "site": SITE}, {"active": 0.0}, None)]
    if type(doc) != "dict":
        return []
    tags = {"alert": key, "site": SITE}
    sources = (
        ("severity", ("severity",)),
        ("kind", ("kind", "type")),
        ("source", ("node", "component")),
        ("metric", ("metric",)),
    )
    for tag, paths in sources:
        for p in paths:
            if type(doc.get(p)) == "string" and doc[p] and tag not in tags:
                tags[tag] = doc[p]
    fields = {"active": 1.0}
    if type(doc.get("message")) == "string":
        fields["message"] = doc["message"]
    if _num(doc.get("id")) != None:
        fields["alert_id"] = _num(doc["id"])
    if _num(doc.get("value")) != None:
        fields["value"] = _num(doc["value"])
    return [_point(ALERTS, tags, fields, _ns(doc.get("ts")))]


def points(topic, doc):
    # topic: the MQTT topic; doc: its payload decoded from JSON, None when the payload was empty
    if not topic.startswith(ROOT + "/"):
        return []
    parts = topic[len(ROOT) + 1:].split("/")
    if len(parts) > 2 and parts[0] == "_host" and parts[1] == "alerts":
        return _alert("/".join(parts[2:]), doc)
    if type(doc) != "dict" or len(parts) != 2:
        return []
    if parts == ["_host", "twin"]:
        return _twin(doc)
    if parts[1] == "telemetry":
        return _telemetry(parts[0], doc)
    if parts[1] == "status" and parts[0] != "_host":
        return _status(parts[0], doc)
    if parts[1] == "log" and parts[0] != "_host":
        return _log(parts[0], doc)
    return []


def apply(metric):
    raw = metric.fields.get("value", "")
    doc = None
    if type(raw) == "string" and raw.strip():
        doc = json.decode(raw)
    out = []
    for p in points(metric.tags.get("topic", ""), doc):
        m = Metric(p["name"])
        for k, v in p["tags"].items():
            m.tags[k] = v
        for k, v in p["fields"].items():
            m.fields[k] = v
        m.time = p["time"] if p["time"] != None else metric.time
        out.append(m)
    return out if out else None
"""


def _q(value) -> str:
    """A TOML value: JSON's string escapes are valid TOML basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_q(v) for v in value) + "]"
    return json.dumps(str(value))


def topics(site) -> list[str]:
    """Every topic filter Telegraf subscribes to, all on its one connection."""
    root = site.topic_root
    return [f"{root}/+/{leaf}" for leaf in NODE_LEAVES] + [
        f"{root}/_host/twin",
        f"{root}/_host/alerts/#",
    ]


def starlark_source(site) -> str:
    """The processor's script for this site: its constants, then STARLARK."""
    return (
        f"# GridTwin site '{site.id}': MQTT messages -> InfluxDB points (gridtwin.stack.telegraf)\n"
        'load("json.star", "json")\n\n'
        f"ROOT = {json.dumps(site.topic_root)}\n"
        f"SITE = {json.dumps(site.id)}\n"
        f"TELEMETRY = {json.dumps(site.storage.influx_measurement)}\n"
        f"STATUS, LOG, TWIN, ALERTS = {json.dumps(STATUS)}, {json.dumps(LOG)}, {json.dumps(TWIN)}, "
        f"{json.dumps(ALERTS)}\n" + STARLARK
    )


def render(site, *, certs_dir: str = CERTS) -> str:
    st, stack = site.storage, site.stack
    host, port = broker_host(site), site.broker.port
    script = starlark_source(site)
    if "'''" in script:  # it goes into a TOML multi-line literal string
        raise ValueError("the Starlark script must not contain three single quotes")
    lines = [
        f"# GridTwin site '{site.id}': Telegraf reads the contract topics and writes InfluxDB 2.",
        "# Rendered by `gridtwin stack render|install`; change site.toml and render again instead "
        "of this file.",
        f"# The InfluxDB token comes from ${{{TOKEN_VAR}}}, set in {ENV_FILE} (root-only)"
        " by `gridtwin stack provision`.",
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
        "# ONE input, so ONE connection: the broker makes the client id the certificate CN, and a "
        "second",
        "# input on this certificate would take this session over (and back) forever.",
        "[[inputs.mqtt_consumer]]",
        f"  servers = {_q([f'ssl://{host}:{port}'])}",
        f"  topics = {_q(topics(site))}",
        "  qos = 1",
        "  persistent_session = true",
        f"  client_id = {_q(CLIENT_ID)}",
        "  connection_timeout = \"30s\"",
        "  max_undelivered_messages = 1000",
        f"  tls_ca = {_q(f'{certs_dir}/ca.crt')}",
        f"  tls_cert = {_q(f'{certs_dir}/telegraf.crt')}",
        f"  tls_key = {_q(f'{certs_dir}/telegraf.key')}",
        f"  tls_server_name = {_q(host)}",
        "  # the payloads differ per topic: each is kept as a string; the Starlark processor "
        "parses it",
        "  topic_tag = \"topic\"",
        f"  name_override = {_q(RAW)}",
        "  data_format = \"value\"",
        "  data_type = \"string\"",
        "",
        "[[processors.starlark]]",
        f"  namepass = {_q([RAW])}",
        "  source = '''",
        script.rstrip("\n"),
        "'''",
        "",
        "[[outputs.influxdb_v2]]",
        f"  urls = {_q([st.influx_url])}",
        f"  token = \"${{{TOKEN_VAR}}}\"",
        f"  organization = {_q(st.influx_org)}",
        f"  bucket = {_q(st.influx_bucket)}",
        f"  namedrop = {_q([RAW])}  # a message the script made no point of is never written raw",
        "  content_encoding = \"gzip\"",
        "  timeout = \"10s\"",
        "",
    ]
    return "\n".join(lines)
