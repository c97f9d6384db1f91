"""The payload contract of DESIGN.md, checked on every message before anything is stored.

A node is never trusted: the topic, the size, the JSON, every field and every number is checked
here, and the node named in the payload must be the node named in the topic (the broker's ACL
already ties the topic to the certificate; checking again means a misconfigured or permissive
broker cannot let one node write another node's readings).

Each check raises :class:`Rejected` with a short machine *reason* (a label of the
``gridtwin_rejected_total`` metric) and a human *detail*. The daemon counts, logs one line and
goes on; it never lets a bad payload stop ingest.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass

NODE_ID = re.compile(r"(?!_)[A-Za-z0-9_-]{1,32}\Z")  # as gridtwin.site; "_" starts host topics
METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}\Z")
KINDS = ("telemetry", "status", "ack", "log")
SCHEMA_VERSION = 1


class Rejected(Exception):
    """A message that breaks the contract; ``reason`` is a metric label, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Limits:
    """What a sane message looks like. Defaults suit ESP32 nodes; the site may tighten them."""

    max_bytes: int = 4096  # an ESP32 telemetry message is ~100-400 bytes
    max_metrics: int = 64
    max_past_ms: int = 7 * 86400_000  # outbox replays after a week offline are still accepted
    max_future_ms: int = 300_000  # clock skew a node without NTP lock may show
    max_str: int = 512


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Telemetry:
    node: str
    boot: int | str
    seq: int
    ts: int
    m: dict
    hist: bool
    raw: str  # the payload text, stored as received once validated
    # the text of the "m" object in the payload, when it can be taken as is (_metrics_text): the
    # store keeps it instead of writing the parsed values out again (3.7 of ~23 us a message)
    mtext: str | None = None


_TOPICS: dict = {}


def split_topic(topic: str, root: str, known_nodes=None) -> tuple[str, str]:
    """``<root>/<node>/<kind>`` -> (node, kind), or Rejected. Good topics are remembered (a fleet
    has a few thousand), so the checks run once per topic, not once per message: per known-nodes
    set, keyed by the set itself (a frozenset hashes once; ingest passes the same one every time).
    It was keyed by the set's id(), and a daemon made after another in the same process could get
    the old set's address: a node the new site file no longer has was taken for known (a test
    saw it store a stranger's reading)."""
    if known_nodes is not None and type(known_nodes) is not frozenset:
        known_nodes = frozenset(known_nodes)
    key = (topic, root, known_nodes)
    hit = _TOPICS.get(key)
    if hit is not None:
        return hit
    node_kind = _split_topic(topic, root, known_nodes)
    if len(_TOPICS) > 100_000:
        _TOPICS.clear()
    _TOPICS[key] = node_kind
    return node_kind


def _split_topic(topic: str, root: str, known_nodes=None) -> tuple[str, str]:
    prefix = root + "/"
    if not topic.startswith(prefix):
        raise Rejected("topic", f"topic {topic!r} is outside the root {root!r}")
    rest = topic[len(prefix) :].split("/")
    if len(rest) != 2 or rest[1] not in KINDS:
        raise Rejected("topic", f"topic {topic!r} is not <root>/<node>/{{{'|'.join(KINDS)}}}")
    node, kind = rest
    if not NODE_ID.match(node):
        raise Rejected("topic", f"node id {node!r} in topic {topic!r} is not a valid node id")
    if known_nodes is not None and node not in known_nodes:
        raise Rejected("unknown_node", f"node {node!r} is not in the site file")
    return node, kind


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list) -> dict:
    """JSON allows a key twice and parsers disagree on which one wins (Python: the last, SQLite's
    json_extract: the first); a payload that says two things is refused, not guessed at."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        raise _DuplicateKey(next(k for k, _v in pairs if k in seen or seen.add(k)))
    return obj


# one decoder for all messages: json.loads(text, parse_constant=...) would build one per call
_DECODER = json.JSONDecoder(parse_constant=_no_constants, object_pairs_hook=_unique_pairs)
_DECODE = _DECODER.decode
# the scanner under decode(): a payload that is one object from its first to its last byte (what
# nodes send) is parsed by it alone; anything else (whitespace around it, an error) goes through
# decode(), whose answer (and error text) is the one that counts
_SCAN = _DECODER.scan_once
# The same without the hook, for payloads _fast_object can vouch for: the hook is a Python call per
# object, and the C scanner builds dicts itself (2.2 against 4.3 us a telemetry payload)
_FAST_SCAN = json.JSONDecoder(parse_constant=_no_constants).scan_once
# a \uD800-\uDFFF escape: the only way a string decoded from UTF-8 can hold a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_text(obj, text: str) -> None:
    """Refuse strings that are not Unicode text (a lone surrogate from a \\ud800 escape): they
    cannot be written as UTF-8, so SQLite, a log line or line protocol would fail on them later."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return  # the common case: one regex scan, no walk
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        raise Rejected(
            "text", "a string holds a lone surrogate escape (\\ud800-\\udfff), not text"
        ) from None


def decode(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    if len(payload) > limits.max_bytes:
        raise Rejected("too_large", f"payload of {len(payload)} bytes exceeds {limits.max_bytes}")
    try:
        # strictly UTF-8: json.loads(bytes) would also guess UTF-16/32, which no node sends
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("json", f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None


def parse_object(payload: bytes | str, limits: Limits = DEFAULT_LIMITS) -> dict:
    text = decode(payload, limits) if isinstance(payload, (bytes, bytearray)) else payload
    return _parse_text(text)


def _parse_text(text: str) -> dict:
    try:
        obj, end = _SCAN(text, 0)
    except Exception:  # noqa: BLE001 - decode() below says what is wrong, as it always did
        obj, end = None, -1
    if end != len(text) or type(obj) is not dict:
        try:
            obj = _DECODE(text)
        except _DuplicateKey as exc:
            raise Rejected(
                "duplicate_key", f"key {str(exc)[:40]!r} appears twice in one object"
            ) from None
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise Rejected("json", f"not JSON ({str(exc)[:80]})") from None
        if not isinstance(obj, dict):
            raise Rejected("not_object", f"payload is a JSON {type(obj).__name__}, not an object")
    _check_text(obj, text)
    return obj


def _fast_object(text: str) -> dict | None:
    """The telemetry payload as nodes send it, parsed without the duplicate-key hook, or None
    (then _parse_text decides). Safe because of what the text cannot hold: no backslash means no
    escape (so no lone surrogate, and every quote delimits a string), and every key of every
    object is followed by exactly one colon outside strings, so a text with as many colons as the
    top object and its "m" have keys has no key twice, no other object with keys, and no colon
    inside a string."""
    if "\\" in text:
        return None
    try:
        obj, end = _FAST_SCAN(text, 0)
    except Exception:  # noqa: BLE001 - the full parse says what is wrong
        return None
    if end != len(text) or type(obj) is not dict:
        return None
    m = obj.get("m")
    if text.count(":") != len(obj) + (len(m) if type(m) is dict else 0):
        return None
    return obj


def _metrics_text(text: str) -> str | None:
    """The "m" object's text in a payload _fast_object vouched for and validated (an object of
    numbers: no brace inside it), for the store to keep as written. Its colons are all structural,
    so '"m":' is a key named m: the object's own, or a metric named m (followed by a number)."""
    at = text.find('"m":{')
    if at < 0:
        return None  # whitespace after the colon: the store writes the values out
    end = text.find("}", at)
    return text[at + 4 : end + 1]


def _short(value, n: int = 40) -> str:
    """A value for a log line: a 400-digit number or a long string must not make the line long."""
    text = repr(value)
    return text if len(text) <= n else text[:n] + f"...({len(text)} chars)"


_METRIC_NAMES: set = set()  # names already checked against METRIC (a fleet has a few hundred)
_MAX_INT = 2**53  # exactly representable in a double, as SQLite and InfluxDB read it
_MAX_ID = 2**63


def telemetry(
    node: str, payload: bytes, limits: Limits = DEFAULT_LIMITS, now_ms: int | None = None
) -> Telemetry:
    """Check one telemetry payload of *node* (from its topic) and return it typed.

    This runs for every message (tens of thousands a second), so it tests exact types
    (``type(x) is int`` also refuses ``True``) rather than calling helpers per field."""
    text = decode(payload, limits)
    obj = _fast_object(text)
    fast = obj is not None
    if not fast:
        obj = _parse_text(text)
    v = obj.get("v")
    if v != SCHEMA_VERSION or type(v) is not int:
        raise Rejected("version", f"schema version {_short(v)}, this host reads v={SCHEMA_VERSION}")
    if obj.get("node") != node:
        raise Rejected(
            "node_mismatch",
            f"payload names node {_short(obj.get('node'))} but was published under {node!r}",
        )
    boot, seq, ts = obj.get("boot"), obj.get("seq"), obj.get("ts")
    tb = type(boot)
    if not ((tb is int and 0 <= boot < _MAX_ID) or (tb is str and 0 < len(boot) <= 64)):
        raise Rejected(
            "field", f"boot {_short(boot)} is not a non-negative integer or short string"
        )
    if type(seq) is not int or not 0 <= seq < _MAX_ID:
        raise Rejected("field", f"seq {_short(seq)} is not a non-negative integer")
    if type(ts) is not int or not 0 <= ts < _MAX_INT:
        raise Rejected("field", f"ts {_short(ts)} is not an integer of Unix milliseconds")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if not now - limits.max_past_ms <= ts <= now + limits.max_future_ms:
        raise Rejected(
            "ts_window", f"ts {ts} is {(ts - now) / 1000:+.0f} s from now; is the node's clock set?"
        )
    m = obj.get("m")
    if type(m) is not dict or not m:
        raise Rejected("field", "m is missing or not a non-empty object of metric: number")
    if len(m) > limits.max_metrics:
        raise Rejected("metric", f"{len(m)} metrics, more than {limits.max_metrics}")
    names = _METRIC_NAMES
    for key, value in m.items():
        if key not in names:
            if not METRIC.match(key):
                raise Rejected("metric", f"metric name {key[:70]!r} is not [A-Za-z_][A-Za-z0-9_.]*")
            if len(names) < 10_000:
                names.add(key)
        tv = type(value)
        if tv is float:
            if value - value != 0.0:  # inf - inf and nan - nan are nan (a JSON 1e999 parses to inf)
                raise Rejected("metric", f"metric {key} is not a finite number")
        elif tv is int:
            if not -_MAX_INT <= value <= _MAX_INT:
                raise Rejected("metric", f"metric {key} is an integer too large to store exactly")
        else:
            raise Rejected("metric", f"metric {key} is {tv.__name__}, not a number")
    hist = obj.get("hist", False)
    if hist is not False and hist is not True:
        raise Rejected("field", f"hist {_short(hist)} is not true/false")
    return Telemetry(node, boot, seq, ts, m, hist, text, _metrics_text(text) if fast else None)


# status/ack/log: declarative field tables, (name, types, required)
_NUM = (int, float)
STATUS_FIELDS = {
    "state": (str, True),
    "fw": (str, False),
    "board": (str, False),
    "reset": (str, False),
    "boot": ((int, str), False),
    "heap": (_NUM, False),
    "rssi": (_NUM, False),
    "uptime": (_NUM, False),
    "cfg": (str, False),
    "sensors": ((list, dict), False),
    "outbox": (_NUM, False),
    "drops": (_NUM, False),
    "interval": (_NUM, False),
    "ts": (int, False),
    "heap_min": (_NUM, False),
}
ACK_FIELDS = {"id": (str, True), "ok": (bool, True), "ts": (int, False), "err": (str, False)}
LOG_FIELDS = {"lvl": (str, True), "msg": (str, True), "mod": (str, False), "ts": (int, False)}


def _fields(obj: dict, table: dict, kind: str, limits: Limits) -> dict:
    for name, (types, required) in table.items():
        if name not in obj:
            if required:
                raise Rejected("field", f"{kind} has no {name!r}")
            continue
        value = obj[name]
        if value is None and not required:
            continue  # null: not known (e.g. no RSSI on a node without Wi-Fi)
        if types is not bool and isinstance(value, bool):
            raise Rejected("field", f"{kind} {name} is a boolean")
        if not isinstance(value, types):
            raise Rejected("field", f"{kind} {name} is {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise Rejected("field", f"{kind} {name} is not finite")
        if type(value) is int and not -_MAX_INT <= value <= _MAX_INT:
            raise Rejected("field", f"{kind} {name} is an integer too large to store exactly")
        if isinstance(value, str) and len(value) > limits.max_str:
            raise Rejected("field", f"{kind} {name} is longer than {limits.max_str} characters")
    return obj


def status(node: str, payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict:
    obj = _fields(parse_object(payload, limits), STATUS_FIELDS, "status", limits)
    if obj["state"] not in ("online", "offline"):
        raise Rejected("field", f"status state {obj['state']!r} is not online/offline")
    if "node" in obj and obj["node"] != node:
        raise Rejected(
            "node_mismatch", f"status names node {obj['node']!r} but was published under {node!r}"
        )
    return obj


def ack(node: str, payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict:
    return _fields(parse_object(payload, limits), ACK_FIELDS, "ack", limits)


def log(node: str, payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict:
    return _fields(parse_object(payload, limits), LOG_FIELDS, "log", limits)
