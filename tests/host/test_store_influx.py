"""Line protocol and the InfluxDB writer against a real InfluxDB 1.x server (Debian influxdb)."""

import pytest

from fixtures.daemon_fleet import wait_for
from gridtwin.daemon import lineprotocol as lp
from gridtwin.daemon.store_influx import (
    InfluxConfig,
    InfluxRejected,
    InfluxUnavailable,
    InfluxWriter,
    SpoolForwarder,
)
from gridtwin.daemon.store_sqlite import SqliteStore

TS = 1_700_000_000_000
NS = 1_000_000  # the writer's precision is nanoseconds; the fixture's queries answer in ms


def v1(server, **kw):
    return InfluxWriter(InfluxConfig(url=server.url, api="v1", bucket=server.db, **kw))


def test_escaping_round_trips_through_a_real_influxdb(influxdb):
    awkward = {"site name": "a,b=c d", "node": r"n\1"}
    fields = {"val ue,x=": 1.5, "text": 'say "hi" \\ bye', "n": 3, "flag": True}
    line = lp.line("my meas,ure ment", awkward, fields, TS * NS)
    v1(influxdb).write([line])
    (series,) = influxdb.query('SELECT * FROM "my meas,ure ment"')
    row = dict(zip(series["columns"], series["values"][0]))
    assert row["time"] == TS
    assert row["site name"] == "a,b=c d" and row["node"] == r"n\1"
    assert (
        row["val ue,x="] == 1.5
        and row["text"] == 'say "hi" \\ bye'
        and row["n"] == 3
        and row["flag"] is True
    )


def test_line_protocol_refuses_what_it_cannot_carry():
    for bad in ({"tag": "two\nlines"}, {"tag": "ends\\"}):
        with pytest.raises(lp.LineProtocolError):
            lp.line("m", bad, {"x": 1.0}, TS)
    with pytest.raises(lp.LineProtocolError):
        lp.line("m", {}, {"x": float("nan")}, TS)
    with pytest.raises(lp.LineProtocolError):
        lp.line("m", {}, {}, TS)


def test_gzip_batches_and_errors(influxdb):
    w = v1(influxdb, gzip=True)
    w.write([lp.line("g", {"node": "n1"}, {"x": float(i)}, (TS + i) * NS) for i in range(2000)])
    (series,) = influxdb.query("SELECT count(x) FROM g")
    assert series["values"][0][1] == 2000
    with pytest.raises(InfluxRejected, match="HTTP 400"):
        w.write(["this is not line protocol"])
    with pytest.raises(InfluxUnavailable):
        InfluxWriter(InfluxConfig(url="http://127.0.0.1:9", api="v1", timeout=2)).write(["g x=1 1"])


def test_spool_replays_in_order_after_an_outage(influxdb, tmp_path):
    """Every line spooled while InfluxDB is down arrives, in order, once it is back.

    All lines write the same series and timestamp: InfluxDB keeps the last write, so the stored
    value proves the replay order across many small forwarder batches."""
    store = SqliteStore(tmp_path / "db")
    cfg = InfluxConfig(url=influxdb.url, api="v1", bucket=influxdb.db, batch_lines=7, timeout=2)
    fwd = SpoolForwarder(store, InfluxWriter(cfg), max_backoff=0.2)
    influxdb.stop()
    fwd.start()
    try:
        for i in range(50):
            store.write_batch(
                [],
                spool_lines=[
                    f"order,node=n1 v={i}i,k{i}=1i {TS * NS}",
                    f"points,node=n1 v={i}i {(TS + i) * NS}",
                ],
            )
            fwd.wake.set()
        wait_for(lambda: not fwd.reachable, 10, "the forwarder to notice InfluxDB is down")
        assert store.spool_depth() == 100
        influxdb.start()
        wait_for(lambda: store.spool_depth() == 0, 30, "the spool to drain")
        (last,) = influxdb.query("SELECT v FROM \"order\"")
        assert last["values"] == [[TS, 49]]
        (pts,) = influxdb.query("SELECT v FROM points")
        assert [v for _t, v in pts["values"]] == list(range(50))
        assert fwd.reachable and fwd.sent == 100
    finally:
        fwd.stop()
        store.close()


def test_daemon_with_influxdb_backend_spools_while_it_is_down(fleet_broker, influxdb, tmp_path):
    """End to end: nodes -> mosquitto -> daemon -> spool -> InfluxDB 1.x, with an outage in
    between."""
    from fixtures.daemon_fleet import FLEET, NodeClient, endpoint, telemetry_payload
    from gridtwin.daemon.service import Daemon

    cfg = InfluxConfig(url=influxdb.url, api="v1", bucket=influxdb.db, timeout=2)
    daemon = Daemon(
        endpoint=endpoint(fleet_broker), db_path=tmp_path / "db", metrics_port=None, influx=cfg
    )
    daemon.forwarder.max_backoff = 0.2
    daemon.start()
    nodes = [NodeClient(fleet_broker, n) for n in FLEET[:5]]
    base = int(__import__("time").time() * 1000) - 60_000
    # a point in InfluxDB is (series, time): here every two readings of a node share a millisecond,
    # and each must still be a point of its own (issue #19: the second overwrote the first)
    ts = lambda seq: base + (seq // 2) * 100  # noqa: E731
    try:
        assert daemon.ingest.wait_connected()
        for seq in range(20):
            for n in nodes:
                n.publish(telemetry_payload(n.node, boot=4, seq=seq, ts=ts(seq)))
        wait_for(
            lambda: daemon.metrics.stored == 100 and daemon.store.spool_depth() == 0,
            20,
            "first 100 points",
        )
        influxdb.stop()
        for seq in range(20, 60):
            for n in nodes:
                n.publish(telemetry_payload(n.node, boot=4, seq=seq, ts=ts(seq)))
        wait_for(
            lambda: daemon.metrics.stored == 300,
            20,
            "the daemon to store (and ack) during the outage",
        )
        wait_for(lambda: not daemon.forwarder.reachable, 10, "the forwarder to notice the outage")
        assert daemon.store.spool_depth() > 0
        influxdb.start()
        wait_for(lambda: daemon.store.spool_depth() == 0, 30, "the spool to replay")
        for n in nodes:
            (series,) = influxdb.query(f"SELECT gt_seq, p_w FROM telemetry WHERE node='{n.node}'")
            seqs = [row[1] for row in series["values"]]
            assert seqs == list(range(60)), f"{n.node}: {seqs}"
            assert [row[2] for row in series["values"]] == [s * 1.5 for s in range(60)]
            assert [row[0] for row in series["values"]] == [ts(s) for s in range(60)]
    finally:
        for n in nodes:
            n.close()
        daemon.stop()
