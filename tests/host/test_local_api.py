"""The daemon's local HTTP API under abuse from any local user (issue #19 item 5): the token is
checked before the body is read, bodies are capped, stalled clients are cut off, connections are
bounded, and /healthz keeps answering throughout."""

import json
import socket
import time
import urllib.request

import pytest

from gridtwin.daemon.metrics import Metrics, MetricsServer

TOKEN = "t0ken"


@pytest.fixture
def server():
    calls = []

    def cmd(handler, query, body):
        calls.append(body)
        return 200, "application/json", b"{}"

    srv = MetricsServer(
        Metrics(),
        "127.0.0.1",
        0,
        routes={("POST", "/cmd"): cmd},
        token=TOKEN,
        private={"/cmd"},
        timeout=1.0,
        max_connections=20,
    )
    srv.calls = calls
    srv.start()
    yield srv
    srv.stop()


def _raw(srv, data: bytes, read=True) -> bytes:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(data)
    if not read:
        return s
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def _healthz_status(srv) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_no_token_is_refused_before_the_body_is_read(server):
    t0 = time.monotonic()
    # announces 48 MB and sends none of it: the answer comes at once, nothing is read or kept
    reply = _raw(server, b"POST /cmd HTTP/1.1\r\nHost: x\r\nContent-Length: 50331648\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 401") and time.monotonic() - t0 < 0.9
    assert server.calls == []


def test_bad_or_huge_content_length_is_a_clear_4xx(server):
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    assert _raw(
        server, b"POST /cmd HTTP/1.1\r\n" + auth + b"Content-Length: -1\r\n\r\n"
    ).startswith(b"HTTP/1.1 400")
    assert _raw(
        server, b"POST /cmd HTTP/1.1\r\n" + auth + b"Content-Length: 99999999\r\n\r\n"
    ).startswith(b"HTTP/1.1 413")
    ok = _raw(server, b"POST /cmd HTTP/1.1\r\n" + auth + b"Content-Length: 2\r\n\r\n{}")
    assert ok.startswith(b"HTTP/1.1 200") and server.calls == [b"{}"]


def test_half_sent_requests_time_out_and_connections_are_bounded(server):
    half = [_raw(server, b"POST /cmd HTTP/1.1\r\nContent-Le", read=False) for _ in range(200)]
    try:
        # over the bound, the server closes new connections at once instead of holding a thread
        # (at most 20 at a time hold a thread; slots free up as the 1 s timeout cuts stalled ones
        # off)
        deadline = time.monotonic() + 5
        while server.refused < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.refused >= 100
        # the stalled ones are cut off by the timeout (1 s here, 10 s by default)...
        deadline = time.monotonic() + 10
        closed = 0
        for s in half:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if s.recv(1) == b"":
                    closed += 1
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == 200
        # ...and the daemon answers again
        assert _healthz_status(server) == 503  # not subscribed (no broker here), but answering
        body = _raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(body.split(b"\r\n\r\n", 1)[1])["ok"] is False
    finally:
        for s in half:
            s.close()
