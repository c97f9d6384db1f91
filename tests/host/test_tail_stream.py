"""`gridtwin tail`'s stream (GET /tail on the daemon's local API, issue #20): ingest hands each
committed batch to every reader at once; the reader gets every reading in commit order, filtered by
node, and a reader too far behind loses lines without ever holding ingest up."""

import json
import socket
import threading
import time

import pytest

from gridtwin.daemon import api as api_mod
from gridtwin.daemon import validate
from gridtwin.daemon.api import LocalApi
from gridtwin.daemon.metrics import Metrics, MetricsServer


def _tel(node: str, seq: int):
    doc = {"v": 1, "node": node, "boot": 1, "seq": seq, "ts": 1_700_000_000_000 + seq}
    doc["m"] = {"p_w": seq * 0.5}
    return validate.telemetry(node, json.dumps(doc).encode(), now_ms=1_700_000_000_000)


@pytest.fixture
def local_api(tmp_path):
    stop = threading.Event()
    api = LocalApi(None, tmp_path / "daemon.json", stop.is_set)
    srv = MetricsServer(
        Metrics(), "127.0.0.1", 0, routes=api.routes(), token=api.token, private=api.PRIVATE
    )
    srv.start()
    yield api, srv
    stop.set()
    srv.stop()


def _open_tail(api, srv, query: str = "") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    auth = f"Authorization: Bearer {api.token}\r\n"
    s.sendall(f"GET /tail{query} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.split(b" ", 2)[1] == b"200", head
    # the handler registered the reader's backlog before it sent these headers: what is fed from
    # now on reaches this reader
    return s


def _read_lines(s: socket.socket, n: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        assert chunk, buf[-200:]
        buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_every_reading_in_commit_order_and_filtered_by_node(local_api):
    api, srv = local_api
    everything = _open_tail(api, srv)
    one = _open_tail(api, srv, "?node=n1")
    batches = [[_tel(f"n{k % 3}", b * 100 + k) for k in range(100)] for b in range(30)]
    before = int(time.time() * 1000)
    for batch in batches:
        api.feed(batch)  # the ingest writer's call after each commit
    after = int(time.time() * 1000)
    got = _read_lines(everything, 3000)
    assert [(d["node"], d["seq"]) for d in got] == [(t.node, t.seq) for b in batches for t in b]
    # when its batch was committed (handed over): how long a reading took to the database
    stored = got[0].pop("stored")
    assert got[0] == {
        "v": 1,
        "node": "n0",
        "boot": 1,
        "seq": 0,
        "ts": 1_700_000_000_000,
        "m": {"p_w": 0.0},
    }
    assert before <= stored <= after
    assert [d["stored"] for d in got[1:]] == sorted(d["stored"] for d in got[1:])
    n1 = [t.seq for b in batches for t in b if t.node == "n1"]
    assert [d["seq"] for d in _read_lines(one, len(n1))] == n1
    everything.close()
    one.close()


def test_a_reader_far_behind_loses_lines_and_never_holds_ingest(local_api):
    api, srv = local_api
    s = _open_tail(api, srv)
    # the reader does not read: its socket buffers fill, then its backlog; feed must return at once
    # every time (it runs on the ingest writer's thread)
    fed = [[_tel("n0", b * 2000 + k) for k in range(2000)] for b in range(60)]
    finished = threading.Event()

    def writer():
        for batch in fed:
            api.feed(batch)
        finished.set()

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    assert finished.wait(30), "feed waited for a reader that does not read"
    s.close()


def test_a_full_backlog_keeps_the_oldest_readings_whole():
    backlog = api_mod._Backlog(250)
    first = [_tel("n0", k) for k in range(100)]
    second = [_tel("n0", 100 + k) for k in range(200)]  # only 150 fit
    backlog.offer(first)
    backlog.offer(second)
    backlog.offer([_tel("n0", 999)])  # full: lost
    taken = backlog.take(0)
    assert [t.seq for _at, t in taken] == list(range(250))
    assert backlog.take(0) == []
    backlog.offer([_tel("n0", 1000)])  # room again once the reader took what waited
    assert [t.seq for _at, t in backlog.take(0)] == [1000]
