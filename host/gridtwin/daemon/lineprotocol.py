"""InfluxDB line protocol, written by hand because the escaping rules differ per element.

measurement: escape ``,`` and space; tag keys, tag values, field keys: escape ``,``, ``=`` and
space; string field values: escape ``"`` and ``\\``. A newline cannot be escaped anywhere, so a
value containing one is refused (validation keeps node ids and metric names free of them).
Metrics are always written as floats: InfluxDB fixes a field's type at first write, and a sensor
that reports ``21`` once and ``21.5`` later must not hit a type conflict.
"""

from __future__ import annotations

import math

_MEAS = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STR = str.maketrans({'"': r'\"', "\\": r"\\"})


class LineProtocolError(ValueError):
    pass


def _clean(text: str, what: str) -> str:
    if "\n" in text or "\r" in text:
        raise LineProtocolError(
            f"{what} {text!r} contains a newline, which line protocol cannot carry"
        )
    if text.endswith("\\"):
        raise LineProtocolError(
            f"{what} {text!r} ends with a backslash, which would escape the separator"
        )
    return text


def escape_measurement(name: str) -> str:
    return _clean(name, "measurement").translate(_MEAS)


def escape_key(key: str) -> str:
    return _clean(key, "key").translate(_KEY)


def field_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"field value {value} is not finite")
        return repr(value)
    return '"' + _clean(str(value), "string field").translate(_STR) + '"'


def line(measurement: str, tags: dict, fields: dict, ts: int) -> str:
    """One point; tags are sorted (InfluxDB's fastest path); ``ts`` in the writer's precision
    (the daemon's writer: nanoseconds, see telemetry_line)."""
    if not fields:
        raise LineProtocolError("a point needs at least one field")
    head = escape_measurement(measurement)
    for k in sorted(tags):
        v = tags[k]
        if v is None or v == "":
            continue  # an empty tag value is invalid line protocol; omitting it means "no tag"
        head += f",{escape_key(k)}={escape_key(str(v))}"
    body = ",".join(f"{escape_key(k)}={field_value(v)}" for k, v in fields.items())
    return f"{head} {body} {int(ts)}"


NS_PER_MS = 1_000_000


def point_time_ns(ts_ms: int, seq: int) -> int:
    """The point's time in nanoseconds: the node's millisecond plus its seq in the sub-millisecond
    digits. InfluxDB keeps one point per series and time, so two readings of one node stamped in
    the same millisecond would otherwise merge (the second overwriting the first); within a boot
    seq differs, and a million readings in one millisecond cannot happen."""
    return ts_ms * NS_PER_MS + seq % NS_PER_MS


def telemetry_line(t, measurement: str = "telemetry") -> str:
    """A validated Telemetry message as one point: tag node, a float field per metric, time in
    ns."""
    fields = {k: float(v) for k, v in t.m.items()}
    fields["gt_seq"] = t.seq  # prefixed: a metric may itself be called "seq"
    fields["gt_boot"] = str(t.boot)
    return line(
        measurement,
        {"node": t.node, "hist": "true" if t.hist else None},
        fields,
        point_time_ns(t.ts, t.seq),
    )
