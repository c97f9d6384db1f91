"""The nodes' time source (issue 12 item 5): the daemon answers SNTP (RFC 4330) with the host's
clock, and a virtual node whose only time source is the host gets its readings stored."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import subprocess
import sys
import time

import pytest

from fixtures.broker import wait_until
from gridtwin.daemon.sntp import FALLBACK_PORT, NTP_EPOCH, SntpServer
from gridtwin.errors import GridTwinError

NOW = 1_780_000_000.25


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(version: int = 4, mode: int = 3, stamp: bytes = b"CLIENTTX", size: int = 48) -> bytes:
    q = bytearray(size)
    q[0] = (version << 3) | mode
    q[2] = 6  # poll 2^6 s
    q[40:48] = stamp
    return bytes(q)


def ask(sock: socket.socket, port: int, payload: bytes) -> bytes:
    sock.sendto(payload, ("127.0.0.1", port))
    return sock.recv(512)


def test_the_reply_is_rfc4330_server_mode_with_the_host_clock():
    srv = SntpServer("127.0.0.1", udp_port(), clock=lambda: NOW, synchronised=lambda: True).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            r = ask(c, srv.port, request())
            assert len(r) == 48
            assert (
                r[0] >> 6 == 0 and (r[0] >> 3) & 7 == 4 and r[0] & 7 == 4
            )  # LI 0, version 4, server
            assert r[1] == 3 and r[2] == 6  # synchronised host: stratum 3; the client's poll
            assert r[24:32] == b"CLIENTTX"  # originate = the client's transmit time
            sec, frac = struct.unpack("!II", r[40:48])
            assert sec - NTP_EPOCH == int(NOW) and abs(frac / 2**32 - 0.25) < 1e-6
            assert struct.unpack("!II", r[32:40]) == (
                sec,
                frac,
            )  # received at the same (fake) instant
            # what is not an SNTP client request gets nothing: the next reply answers the sentinel
            c.sendto(request(mode=4), ("127.0.0.1", srv.port))  # a server packet (reflection)
            c.sendto(request()[:47], ("127.0.0.1", srv.port))  # too short
            assert ask(c, srv.port, request(version=3, stamp=b"SENTINEL"))[24:32] == b"SENTINEL"
            assert (
                ask(c, srv.port, request(version=3))[0] >> 3
            ) & 7 == 3  # answers in the client's version
            # an unsynchronised host still serves its clock (the daemon judges readings by it), as a
            # local clock: stratum 10, reference id LOCL
            srv.synchronised = lambda: False
            r = ask(c, srv.port, request())
            assert r[1] == 10 and r[12:16] == b"LOCL" and r[0] >> 6 == 0
        assert srv.served == 4
    finally:
        srv.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the port is free again
        s.bind(("127.0.0.1", udp_port()))


def test_a_port_in_use_is_one_clear_error_and_udp_123_taken_is_left_to_its_server():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(
            GridTwinError, match=rf"cannot serve SNTP on udp/{port} \(127.0.0.1\): .*in use"
        ) as e:
            SntpServer("127.0.0.1", port).start()
        assert "ntp_port" in e.value.hint


def test_without_the_right_to_bind_123_it_serves_on_the_fallback_port_and_says_so():
    """As an unprivileged user (nobody: the process drops root after its imports), ntp_port
    unset."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    code = (
        "import logging, os, socket; logging.basicConfig(level=logging.INFO, "
        "format='%(message)s')\nfrom gridtwin.daemon.sntp import SntpServer\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "s = SntpServer('127.0.0.1').start(); print('PORT', s.port, flush=True)\n"
        "c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)\n"
        "q = bytearray(48); q[0] = 0x23; c.sendto(q, ('127.0.0.1', s.port)); print('MODE', "
        "c.recv(48)[0] & 7)\ns.stop()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert f"PORT {FALLBACK_PORT}" in run.stdout and "MODE 4" in run.stdout
    assert (
        "needs root or CAP_NET_BIND_SERVICE" in run.stderr
        and "real boards ask port 123" in run.stderr
    )


# --- a virtual node whose only time source is the host -----------------------------------------


@pytest.mark.micropython
def test_a_virtual_node_whose_only_time_source_is_the_host_gets_its_readings_stored(
    site_pki_copy, broker_factory, net_build, capsys
):
    """Both boards' world clocks are a day ahead of the host (what a shim NTP server would tell).
    srv_a asks the host (the daemon's responder): its readings are stored, stamped on the host's
    clock. pdu_a, the control, takes the world's time: every reading is rejected (ts_window), and
    `gridtwin nodes` says so and why."""
    from gridtwin import cli
    from gridtwin.daemon.connection import endpoint_from_site
    from gridtwin.daemon.service import Daemon
    from gridtwin.fleet import VirtualNode

    sp = site_pki_copy
    brk = broker_factory(sp)
    sntp = SntpServer("127.0.0.1", udp_port())
    ep = dataclasses.replace(endpoint_from_site(sp.site), host="127.0.0.1", port=brk.port)
    daemon = Daemon.from_site(sp.site, endpoint=ep, metrics_port=None, sntp=sntp).start()
    # the world's true time (what the shim's own NTP server tells) runs a day ahead of the host's;
    # no RTC: a board knows the time only from NTP
    ahead = {"clock": {"mode": "real", "speed": 1, "rtc": None, "true": time.time() + 86400}}
    nodes = {
        n: VirtualNode(
            sp.site,
            sp.pki,
            n,
            sp.dir / "boards" / n,
            broker=("127.0.0.1", brk.port),
            firmware_dir=net_build,
            world_extra=dict(ahead, ntp={"port": sntp.port}) if n == "srv_a" else ahead,
        )
        for n in ("srv_a", "pdu_a")
    }
    try:
        assert (
            nodes["srv_a"].config["ntp"] == ""
        )  # the site's default: the broker host, 127.0.0.1 here
        for v in nodes.values():
            v.start()
        store = daemon.store
        wait_until(lambda: store.count_readings("srv_a") >= 3, 60, "srv_a's readings stored", 0.1)
        ts, _ = store.latest("srv_a")
        assert abs(ts / 1000 - time.time()) < 30, "srv_a's readings are stamped on the host's clock"
        assert sntp.served >= 1
        assert any("clock: set by NTP" in ln for ln in nodes["srv_a"].board.lines)

        def pdu_rejects():
            return next(
                (r for r in store.nodes() if r["id"] == "pdu_a" and r.get("rejected")), None
            )

        try:
            row = wait_until(pdu_rejects, 60, "pdu_a's readings rejected", 0.1)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: {store.nodes()}\n" + "\n".join(nodes["pdu_a"].board.lines[-30:])
            ) from None
        assert store.count_readings("pdu_a") == 0 and row["last_reject"].startswith("ts_window: ")
    finally:
        for v in nodes.values():
            v.stop()
        daemon.stop()
    assert sntp.port is None  # the daemon stopped its responder
    assert cli.main(["--site", str(sp.path), "nodes", "--json"]) == 0
    views = {v["id"]: v for v in map(json.loads, capsys.readouterr().out.splitlines())}
    assert views["pdu_a"]["rejected"] >= 1 and views["pdu_a"]["last_reject"].startswith("ts_window")
    assert not views["srv_a"]["rejected"]
    assert cli.main(["--site", str(sp.path), "nodes"]) == 0
    out = capsys.readouterr()
    line = next(ln for ln in out.err.splitlines() if ln.startswith("gridtwin: pdu_a:"))
    assert "readings are being rejected" in line and "ts_window" in line and "ntp" in line, out.err


def test_the_daemon_unit_may_bind_udp_123_and_nothing_more(tmp_path):
    from gridtwin.daemon.systemd import render_unit

    class S:
        id, path, var_dir = "demo", tmp_path / "site.toml", tmp_path / "var"

    service = dict(
        ln.split("=", 1)
        for ln in render_unit(S(), user="gridtwin", exe="/opt/gt/bin/gridtwin")
        .split("[Service]")[1]
        .split("[Install]")[0]
        .splitlines()
        if "=" in ln and not ln.startswith("#")
    )
    assert service["User"] == "gridtwin" and service["NoNewPrivileges"] == "yes"
    assert (
        service["AmbientCapabilities"] == service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    )


@pytest.mark.broker
def test_deploy_wait_says_at_once_that_the_daemon_rejects_the_nodes_readings_and_why(
    site_pki_copy, broker, mqtt_client, tmp_path
):
    import re
    import signal
    import urllib.request

    from fixtures.broker import free_port
    from fixtures.daemon_fleet import telemetry_payload
    from gridtwin import deploy as gdeploy
    from gridtwin.errors import ToolError
    from gridtwin.site import load_site

    site_path = site_pki_copy.path
    port = free_port()
    text = re.sub(r"(?m)^port = \d+", f"port = {broker.port}", site_path.read_text())
    # this test is about deploy: its daemon leaves udp/123 alone
    site_path.write_text(
        text + f"\n[daemon]\nmetrics_port = {port}\n[network]\nntp_serve = false\n"
    )
    site = load_site(site_path)
    with open(tmp_path / "daemon.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridtwin", "--site", str(site_path), "daemon"],
            stdout=log,
            stderr=log,
        )

    def healthy():
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        try:
            return (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
            )
        except OSError:
            return False

    try:
        wait_until(healthy, 20, "the daemon to be healthy")
        w = gdeploy.DaemonWatcher(site, "pdu_a").start(60)
        try:
            node = mqtt_client("pdu_a")  # a board whose clock is a day ahead
            node.publish(
                broker.topic("pdu_a", "telemetry"),
                telemetry_payload("pdu_a", boot=6, seq=0, ts=int((time.time() + 86400) * 1000)),
            )
            t0 = time.monotonic()
            with pytest.raises(ToolError) as info:
                w.wait(60)
            took = time.monotonic() - t0
        finally:
            w.stop()
        assert (
            "pdu_a: the daemon rejects its readings (1 rejected so far; the last: ts_window: "
            in info.value.message
        )
        assert "clock" in info.value.hint and "[network] ntp" in info.value.hint
        assert took < 10, f"deploy --wait took {took:.1f} s to say so"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
