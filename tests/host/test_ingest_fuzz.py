"""Malformed input through the real broker: counted, logged, never stored, never fatal.

Topics a node could get wrong (other leaves, extra levels, other nodes' trees) are already refused
by the broker's ACL and never reach the daemon; the validator's topic rules are covered in
test_validate.py. Here every payload reaches the daemon over mutual TLS from a node certificate.
"""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.daemon_fleet import (
    FLEET,
    NodeClient,
    count_rows,
    endpoint,
    telemetry_payload,
    wait_for,
)
from gridtwin.daemon.service import Daemon

pytestmark = pytest.mark.broker

FUZZER = FLEET[0]
# wrong for every one of v, node, boot, seq, ts, m (a string is a valid boot, so none here)
BAD_VALUES = [None, True, -1, 1.5, [], {}, 2**70, {"a": "1"}, [1]]


def _now():
    return int(time.time() * 1000)


def _valid():
    return {"v": 1, "node": FUZZER, "boot": 3, "seq": 1, "ts": _now(), "m": {"t": 1.0}}


def _mutated(draw_key, draw_bad, drop):
    msg = _valid()
    if drop:
        del msg[draw_key]
    else:
        msg[draw_key] = draw_bad
    return msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)

# every strategy is malformed by construction (a random draw cannot meet the whole contract)
telemetry_junk = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(
        st.sampled_from(["v", "node", "boot", "seq", "ts", "m"]), st.sampled_from(BAD_VALUES)
    ).map(lambda kv: json.dumps(_mutated(kv[0], kv[1], False)).encode()),
    st.sampled_from(["v", "node", "boot", "seq", "ts", "m"]).map(
        lambda k: json.dumps(_mutated(k, None, True)).encode()
    ),
    st.text(max_size=10)
    .filter(lambda s: s != FUZZER)
    .map(lambda other: json.dumps({**_valid(), "node": other}).encode()),
    st.dictionaries(
        st.text(min_size=1, max_size=8), st.text(max_size=5) | st.booleans(), min_size=1, max_size=3
    ).map(lambda m: json.dumps({**_valid(), "m": m}).encode()),
    st.integers(5000, 8000).map(lambda n: b'{"pad":"' + b"x" * n + b'"}'),
)
other_junk = st.binary(max_size=100).filter(
    lambda b: not b.strip().startswith(b"{")
) | json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode())


def _generate(n_telemetry: int, n_other: int) -> list:
    cases = []

    @settings(
        max_examples=n_telemetry,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(telemetry_junk)
    def tel(payload):
        cases.append(("telemetry", payload))

    @settings(
        max_examples=n_other,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(["status", "ack", "log"]), other_junk)
    def other(leaf, payload):
        cases.append((leaf, payload))

    tel()
    other()
    return cases


def test_thousands_of_malformed_payloads_are_all_rejected_and_nothing_is_stored(
    fleet_broker, tmp_path
):
    cases = _generate(2500, 500)
    # sanity check of the generator itself: the fuzz must not be trivially one kind of junk
    assert len(cases) >= 2500 and len({p for _l, p in cases}) > 1000
    daemon = Daemon(
        endpoint=endpoint(fleet_broker),
        db_path=tmp_path / "db",
        known_nodes=FLEET,
        metrics_port=None,
    ).start()
    node = NodeClient(fleet_broker, FUZZER)
    try:
        assert daemon.ingest.wait_connected()
        for leaf, payload in cases:
            node.publish(payload, leaf)
        wait_for(
            lambda: daemon.metrics.received == len(cases), 60, "the daemon to receive every payload"
        )
        assert daemon.metrics.rejected_total == len(cases)
        assert daemon.metrics.stored == 0 and count_rows(tmp_path / "db") == 0
        assert (
            count_rows(tmp_path / "db", "SELECT count(*) FROM nodes WHERE state IS NOT NULL") == 0
        )
        assert count_rows(tmp_path / "db", "SELECT count(*) FROM logs") == 0
        assert set(daemon.metrics.rejected) <= {
            "json",
            "not_object",
            "version",
            "node_mismatch",
            "field",
            "ts_window",
            "metric",
            "too_large",
        }
        assert daemon.metrics.rejected["internal"] == 0
        # still running: the next good reading is stored
        node.publish(telemetry_payload(FUZZER, boot=3, seq=1))
        wait_for(lambda: count_rows(tmp_path / "db") == 1, 10, "a valid reading after the fuzz")
        assert daemon.ingest._writer.is_alive()
    finally:
        node.close()
        daemon.stop()


def test_a_node_cannot_write_readings_for_another_node(fleet_broker, tmp_path, caplog):
    victim, spoofer, stranger = FLEET[1], FLEET[2], FLEET[3]
    daemon = Daemon(
        endpoint=endpoint(fleet_broker),
        db_path=tmp_path / "db",
        known_nodes=[n for n in FLEET if n != stranger],
        metrics_port=None,
    ).start()
    spoof, out = NodeClient(fleet_broker, spoofer), NodeClient(fleet_broker, stranger)
    try:
        assert daemon.ingest.wait_connected()
        # under its own topic with the victim's id in the payload: the daemon's own check
        spoof.publish(telemetry_payload(victim, boot=1, seq=0))
        # under the victim's topic: the broker's ACL drops it before the daemon sees it
        spoof.publish(
            telemetry_payload(victim, boot=1, seq=1),
            topic=f"{fleet_broker.root}/{victim}/telemetry",
        )
        # a node with a certificate but no longer in the site file
        out.publish(telemetry_payload(stranger, boot=1, seq=0))
        # a sentinel after them (per-client order): once it is stored, the others were handled
        spoof.publish(telemetry_payload(spoofer, boot=1, seq=0))
        wait_for(lambda: count_rows(tmp_path / "db") == 1, 10, "the sentinel")
        wait_for(lambda: daemon.metrics.rejected_total == 2, 10, "both rejections")
        assert (
            daemon.metrics.rejected["node_mismatch"] == 1
            and daemon.metrics.rejected["unknown_node"] == 1
        )
        assert (
            count_rows(tmp_path / "db", "SELECT count(*) FROM readings WHERE node=?", (victim,))
            == 0
        )
        line = next(r.getMessage() for r in caplog.records if "node_mismatch" in r.getMessage())
        assert f"node={spoofer}" in line and f"{spoofer}/telemetry" in line and victim in line
    finally:
        spoof.close()
        out.close()
        daemon.stop()
