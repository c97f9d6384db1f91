"""The payload contract: every rule has a case that breaks it, and a fuzz run never crashes it."""

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridtwin.daemon import validate
from gridtwin.daemon.validate import Rejected

ROOT = "gridtwin/t"
NOW = 1_800_000_000_000


def good(**over):
    msg = {
        "v": 1,
        "node": "n1",
        "boot": 7,
        "seq": 3,
        "ts": NOW - 1000,
        "m": {"t_c": 21.5, "p_w": 10},
    }
    msg.update(over)
    return {k: v for k, v in msg.items() if v is not ...}


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def compact(obj) -> bytes:
    """As nodes write JSON: no spaces."""
    return json.dumps(obj, separators=(",", ":")).encode()


def test_valid_telemetry_is_returned_typed():
    t = validate.telemetry("n1", enc(good(hist=True)), now_ms=NOW)
    assert (t.node, t.boot, t.seq, t.ts, t.hist) == ("n1", 7, 3, NOW - 1000, True)
    assert t.m == {"t_c": 21.5, "p_w": 10}
    assert json.loads(t.raw)["m"] == t.m


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"{not json", "json"),
        (b"\xff\xfe{}", "json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (enc(good(v=2)), "version"),
        (enc(good(v=True)), "version"),
        (enc(good(v=1.0)), "version"),
        (enc(good(v=...)), "version"),
        (enc(good(node="n2")), "node_mismatch"),
        (enc(good(node=...)), "node_mismatch"),
        (enc(good(boot=-1)), "field"),
        (enc(good(boot=True)), "field"),
        (enc(good(boot=1.5)), "field"),
        (enc(good(seq="3")), "field"),
        (enc(good(seq=-1)), "field"),
        (enc(good(ts=1.5)), "field"),
        (enc(good(ts=NOW + 3_600_000)), "ts_window"),
        (enc(good(ts=NOW - 30 * 86400_000)), "ts_window"),
        (enc(good(ts=0)), "ts_window"),
        (enc(good(m={})), "field"),
        (enc(good(m=[1])), "field"),
        (enc(good(m=...)), "field"),
        (enc(good(m={"t": "hot"})), "metric"),
        (enc(good(m={"t": True})), "metric"),
        (enc(good(m={"t": None})), "metric"),
        (enc(good(m={"t": 2**60})), "metric"),
        (enc(good(m={"bad name": 1})), "metric"),
        (enc(good(m={f"m{i}": i for i in range(100)})), "metric"),
        (b'{"v":1,"node":"n1","boot":1,"seq":1,"ts":%d,"m":{"t":NaN}}' % (NOW,), "json"),
        (b'{"v":1,"node":"n1","boot":1,"seq":1,"ts":%d,"m":{"t":1e999}}' % (NOW,), "metric"),
        (enc(good(hist="yes")), "field"),
        (b" " * 5000, "too_large"),
    ],
)
def test_each_broken_rule_is_rejected_with_its_reason(payload, reason):
    with pytest.raises(Rejected) as exc:
        validate.telemetry("n1", payload, now_ms=NOW)
    assert exc.value.reason == reason
    assert exc.value.detail  # says what is wrong


HEAD = b'{"v":1,"node":"n1","boot":1,"seq":1,"ts":%d,' % (NOW - 1000,)


@pytest.mark.parametrize(
    "payload, m, mtext",
    [
        (compact(good()), {"t_c": 21.5, "p_w": 10}, '{"t_c":21.5,"p_w":10}'),
        # numbers stay as written; a metric named m is not the object m
        (HEAD + b'"m":{"m":1.50,"a":2E3}}', {"m": 1.5, "a": 2000.0}, '{"m":1.50,"a":2E3}'),
        (b'{"m":{"a":1},' + HEAD[1:-1] + b"}", {"a": 1}, '{"a":1}'),
        # the parsed values are written out instead: a colon inside a string, an escape, spaces,
        # another object with keys (each could make the text say other than what was checked)
        (compact(good(boot="a:b")), {"t_c": 21.5, "p_w": 10}, None),
        (HEAD + b'"m":{"p\\u005fw":1}}', {"p_w": 1}, None),
        (enc(good()), {"t_c": 21.5, "p_w": 10}, None),
        (compact(good(x={"m": {"z": 1}})), {"t_c": 21.5, "p_w": 10}, None),
    ],
)
def test_the_payloads_own_metrics_text_is_kept_only_where_it_says_what_was_checked(
    payload, m, mtext
):
    """Telemetry.mtext, the text the store keeps: the payload's own where the fast parse vouched
    for it, else None (the store writes the parsed values out)."""
    t = validate.telemetry("n1", payload, now_ms=NOW)
    assert t.m == m and t.mtext == mtext


@pytest.mark.parametrize(
    "payload",
    [
        HEAD + b'"m":{"t":1,"t":2}}',
        HEAD + b'"v":1,"m":{"t":1}}',
        HEAD + b'"m":{"t":1},"m":{"t":2}}',
        # a duplicate next to a colon in a string: the colon count cannot vouch, the hook sees it
        b'{"v":1,"node":"n1","boot":"a:b","seq":1,"ts":%d,"m":{"t":1,"t":2}}' % (NOW,),
    ],
)
def test_a_key_twice_is_refused_whichever_parse_reads_it(payload):
    with pytest.raises(Rejected) as exc:
        validate.telemetry("n1", payload, now_ms=NOW)
    assert exc.value.reason == "duplicate_key"


@pytest.mark.parametrize(
    "topic, reason",
    [
        ("other/n1/telemetry", "topic"),
        (f"{ROOT}/n1", "topic"),
        (f"{ROOT}/n1/telemetry/x", "topic"),
        (f"{ROOT}/n1/weather", "topic"),
        (f"{ROOT}/bad id/telemetry", "topic"),
        (f"{ROOT}/_host/telemetry", "topic"),
        (f"{ROOT}/stranger/telemetry", "unknown_node"),
    ],
)
def test_topics_outside_the_contract_are_rejected(topic, reason):
    with pytest.raises(Rejected) as exc:
        validate.split_topic(topic, ROOT, known_nodes={"n1"})
    assert exc.value.reason == reason


def test_a_topic_remembered_as_known_is_not_known_to_another_node_set():
    """split_topic remembers good topics per known-nodes set; it keyed them by the set's id(), so
    a set with the same address and other nodes (a daemon made after another in one process, or
    the same set changed) took a node it lacks for known, and ingest stored a stranger's reading."""
    known = {"n1", "n3"}
    assert validate.split_topic(f"{ROOT}/n3/telemetry", ROOT, known) == ("n3", "telemetry")
    known.discard("n3")  # the same object (the same id), without n3
    with pytest.raises(Rejected) as exc:
        validate.split_topic(f"{ROOT}/n3/telemetry", ROOT, known)
    assert exc.value.reason == "unknown_node"
    fewer = frozenset({"n1"})
    with pytest.raises(Rejected):
        validate.split_topic(f"{ROOT}/n3/telemetry", ROOT, fewer)


def test_topic_split_and_other_kinds():
    assert validate.split_topic(f"{ROOT}/n1/ack", ROOT, {"n1"}) == ("n1", "ack")
    assert (
        validate.status("n1", b'{"state":"online","fw":"1.0","heap":1000,"rssi":-60}')["fw"]
        == "1.0"
    )
    # an optional field may be null (a node without Wi-Fi has no RSSI); a required one may not
    assert validate.status("n1", b'{"state":"online","rssi":null}')["rssi"] is None
    with pytest.raises(Rejected):
        validate.status("n1", b'{"state":null}')
    assert validate.ack("n1", b'{"id":"a","ok":true,"result":{"x":1}}')["ok"] is True
    for bad, fn in (
        (b'{"state":"dancing"}', validate.status),
        (b'{"state":"online","heap":"lots"}', validate.status),
        (b'{"state":"online","node":"n2"}', validate.status),
        (b'{"id":"a","ok":1}', validate.ack),
        (b'{"lvl":"info"}', validate.log),
    ):
        with pytest.raises(Rejected):
            fn("n1", bad)


def _json_values():
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=10,
    )


@settings(
    max_examples=800,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=300),
        _json_values().map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["v", "node", "boot", "seq", "ts", "m", "hist"]),
            _json_values(),
            max_size=7,
        ).map(lambda d: json.dumps(d).encode()),
        # as nodes write it (no spaces): the fast parse and the payload's own "m" text
        st.dictionaries(
            st.sampled_from(["v", "node", "boot", "seq", "ts", "m", "hist"]),
            _json_values(),
            max_size=7,
        ).map(lambda d: compact(d)),
    )
)
def test_fuzz_validator_only_ever_accepts_or_rejects(payload):
    """Any bytes: either a Rejected with a known reason, or a reading that meets the contract."""
    try:
        t = validate.telemetry("n1", payload)
    except Rejected as r:
        assert r.reason in {
            "json",
            "not_object",
            "version",
            "node_mismatch",
            "field",
            "ts_window",
            "metric",
            "too_large",
            "duplicate_key",
            "text",
        }
        return
    assert t.node == "n1" and isinstance(t.seq, int) and t.m
    assert t.mtext is None or json.loads(t.mtext) == t.m
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in t.m.values())
    assert abs(t.ts - time.time() * 1000) < 8 * 86400_000
