"""`gridtwin ota` and the OTA topics on the real broker (issue #17; protocol: docs/ota.md).

Virtual boards run the real compiled firmware at 96 KB; Mosquitto runs the rendered ACL; the host
side is gridtwin.ota's Updater (the OTA identity's session) or the `gridtwin ota` CLI itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import threading

from fixtures.netnode import crashed
from gridtwin.micropython import compile_firmware
from gridtwin.ota import Updater, release_from_files
from gridtwin.resources import FIRMWARE_DIR

SRC = pathlib.Path(os.environ.get("GT_FIRMWARE_SRC") or FIRMWARE_DIR)


def firmware(tmp: pathlib.Path, version: str) -> dict[str, pathlib.Path]:
    import shutil

    src = tmp / f"src-{version}"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "gt" / "__init__.py"
    init.write_text(re.sub(r'VERSION = "[^"]+"', f'VERSION = "{version}"', init.read_text()))
    out = tmp / f"mpy-{version}"
    compile_firmware(out, src)
    return {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}


def release(board, tmp, files=None, version="0.1.0", config=None, **kw):
    cfg = json.loads(board.read_flash("config.json"))
    cfg.update(config or {})
    path = tmp / f"config-{cfg['node']}-{len(list(tmp.glob('config-*')))}.json"
    path.write_text(json.dumps(cfg))
    return release_from_files(
        cfg["node"], dict(files or {}, **{"config.json": path}), fw_version=version, **kw
    )


def updater_for(broker, **kw) -> Updater:
    return Updater.connect(broker.pki, broker.host, broker.port, broker.site.topic_root, **kw)


def connected(board):
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    return board


def acks(client, broker, node="pv1"):
    return [json.loads(m.payload) for m in client.received(broker.topic(node, "ota/ack"))]


def test_only_the_ota_identity_writes_a_nodes_ota_topic(net_node, broker, mqtt_client):
    """Another node and the host daemon can neither read pv1's update topic nor write it: what
    they publish never reaches pv1, what the OTA identity publishes never reaches them."""
    connected(net_node())
    topic = broker.topic("pv1", "ota")
    ota = mqtt_client("gridtwin-ota")
    ota.subscribe(broker.topic("pv1", "ota/ack"), qos=0)
    others = {"srv_a": mqtt_client("srv_a"), "gridtwin-host": mqtt_client("gridtwin-host")}
    for c in others.values():
        c.subscribe(topic)  # granted by Mosquitto, but the ACL delivers nothing
        c.publish(topic, b'{"op":"status"}', qos=1)  # accepted, and dropped by the ACL
    ota.publish(topic, b'{"op":"status"}', qos=1)
    ota.wait_for(broker.topic("pv1", "ota/ack"), timeout=10)
    # the node answers in order: had a forged request reached it, its answer would be here too
    assert [a["st"] for a in acks(ota, broker)] == ["idle"]
    for who, c in others.items():
        # a round trip on each session (its SUBACK follows whatever the broker sent it before):
        # the OTA identity's request, delivered to pv1 by now, never reached them
        c.subscribe(broker.topic("srv_a", "cmd") if who == "srv_a" else f"{topic}/x")
        assert c.received(topic) == [], who
    assert len(acks(ota, broker)) == 1


def test_link_loss_mid_transfer_resumes_without_starting_over(
    net_node, broker, mqtt_client, tmp_path
):
    files = firmware(tmp_path, "0.9.7")
    board = connected(net_node())
    rel = release(board, tmp_path, files, "0.9.7")
    up = updater_for(broker, trial_s=30)
    up.window = 1
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", up.update([rel], expire_s=90)))
    t.start()
    try:
        board.wait_for(r"ota: receiving", timeout=30)
        slot = board.flash / "ota" / "0"
        from fixtures.broker import wait_until

        wait_until(
            lambda: sum(f.stat().st_size for f in slot.rglob("*") if f.is_file()) > 20_000,
            30,
            "20 KB received",
        )
        # a client with pv1's certificate takes its session over: the broker drops pv1's link
        thief = mqtt_client("pv1")
        board.wait_for(r"mqtt: lost", timeout=30)
        thief.close()
        t.join(90)
    finally:
        up.close()
    [res] = out["r"]
    assert res.ok and res.state == "confirmed", res.line()
    assert res.resumes >= 1
    # one transfer, resumed where the node's flash was: received once, not started over
    assert len(board.grep(r"ota: receiving")) == 1
    assert res.bytes_sent < 1.5 * rel.size, (res.bytes_sent, rel.size)
    assert not crashed(board), crashed(board)


def test_config_only_update_changes_the_sampling_interval(net_node, broker, mqtt_client, tmp_path):
    board = connected(net_node())
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "status"))
    cfg = json.loads(board.read_flash("config.json"))
    assert cfg["sample_ms"] == 1000
    rel = release(board, tmp_path, None, "0.1.0", {"sample_ms": 700}, config_only=True)
    assert [n for n, _ in rel.files] == ["config.json"] and rel.kind == "config"
    up = updater_for(broker, trial_s=30)
    try:
        [res] = up.update([rel], expire_s=60)
    finally:
        up.close()
    assert res.ok and res.state == "confirmed", res.line()
    board.wait_for(r"app: running node=pv1 .* interval=700ms", timeout=30)
    p = json.loads(board.read_flash("ota.json"))
    # the firmware stays where it was (the flash root's): only the config moved
    assert p["cur"]["code"] == "" and p["cur"]["cfg"].startswith("ota/")
    assert json.loads(board.read_flash("config.json"))["sample_ms"] == 1000  # not touched
    from fixtures.broker import wait_until

    def confirmed_birth():
        # (the updater saw it on its own session: this subscriber may see it a moment later)
        births = [json.loads(m.payload) for m in host.received(broker.topic("pv1", "status"))]
        return any(b.get("interval") == 700 and b["ota"]["st"] == "confirmed" for b in births)

    wait_until(confirmed_birth, 10, "the confirmed birth with the new interval")


def test_offline_node_gets_its_update_when_back_or_it_expires(net_node, broker, tmp_path):
    board = connected(net_node())
    board.stop()  # offline: its session (clean session off) keeps what the broker queues
    rel = release(board, tmp_path, None, "0.1.0", {"sample_ms": 900}, config_only=True)
    up = updater_for(broker, trial_s=30)
    try:
        [res] = up.update([rel], expire_s=1)
        assert res.state == "failed" and "offline? The update expired" in res.why, res.line()
        from gridtwin.vboard import VirtualBoard

        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", up.update([rel], expire_s=90)))
        t.start()
        b2 = VirtualBoard(board.root, firmware=board.firmware, heap=board.heap, name="pv1")
        b2.start()
        t.join(90)
        b2.stop()
    finally:
        up.close()
    [res] = out["r"]
    assert res.ok, res.line()
    assert b2.grep(r"interval=900ms")


def test_canary_rolled_back_stops_the_rest(net_node, broker, tmp_path):
    from gridtwin.ota import staged

    files = firmware(tmp_path, "0.9.8")
    bad = dict(files)
    # a version whose app cannot import
    src = tmp_path / "crash-src"
    import shutil

    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    app = src / "gt" / "app.py"
    app.write_text('raise RuntimeError("canary boom")\n' + app.read_text())
    compile_firmware(tmp_path / "crash-mpy", src)
    bad["gt/app.mpy"] = tmp_path / "crash-mpy" / "gt" / "app.mpy"
    canary = connected(net_node("pv1"))
    rest = connected(net_node("srv_a"))
    rels = [
        release(canary, tmp_path, bad, "0.9.8"),
        release(rest, tmp_path, files, "0.9.8"),
    ]
    up = updater_for(broker, trial_s=30)
    lines = []
    try:
        results = staged(up, rels, 1, out=lines.append, expire_s=90)
    finally:
        up.close()
    assert results[0].state == "rolled_back" and "canary boom" in results[0].why
    assert results[1].state == "stopped" and not results[1].ok
    assert not rest.grep(r"ota: receiving")  # nothing was sent to the rest
    assert lines and lines[0].startswith("pv1: rolled_back")


def test_cli_config_only_and_status(site_pki_copy, broker_factory, net_build, tmp_path, capsys):
    """`gridtwin ota srv_a --config-only` with a new interval in site.toml, then `ota status`."""
    from gridtwin.cli import main
    from gridtwin.fleet import VirtualNode
    from gridtwin.site import load_site

    sp = site_pki_copy
    brk = broker_factory(sp)
    text = sp.path.read_text().replace("port = 8883", f"port = {brk.port}", 1)
    sp.path.write_text(text)
    node = VirtualNode(
        load_site(sp.path),
        sp.pki,
        "srv_a",
        tmp_path / "srv_a",
        broker=("localhost", brk.port),
        firmware_dir=net_build,
        heap="96k",
    )
    node.start()
    try:
        node.board.wait_for(r"mqtt: connected", timeout=60)
        node.board.wait_for(r"interval=500ms", timeout=10)
        sp.path.write_text(text.replace("interval_ms = 500", "interval_ms = 700", 1))
        args = ["--site", str(sp.path), "ota", "srv_a", "--config-only", "--firmware", str(SRC)]
        assert main(args) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert re.search(r"srv_a: confirmed 0\.\S+\+[0-9a-f]{8} \(\d+ bytes", out), out
        node.board.wait_for(r"app: running node=srv_a .* interval=700ms", timeout=30)
        assert main(["--site", str(sp.path), "ota", "status"]) == 0
        out = capsys.readouterr().out
        row = next(ln for ln in out.splitlines() if ln.startswith("srv_a "))
        assert "online" in row and "confirmed" in row, out
        # a user mistake is one line naming it, exit 2
        assert main(["--site", str(sp.path), "ota", "srv_a", "--all"]) == 2
        assert capsys.readouterr().err.startswith("gridtwin: name the nodes to update, or --all")
    finally:
        node.stop()


def test_cli_second_run_refused_while_one_runs(site_pki_copy, broker_factory, capsys):
    """Two `gridtwin ota` would share the one gridtwin-ota session and kick each other off: the
    second is refused up front naming the first; the lock goes with the first however it ends
    (SIGTERM, SIGHUP, SIGINT: its cleanup; kill -9: the kernel's, a stale file taken over)."""
    import signal
    import subprocess
    import sys

    from fixtures.broker import wait_until
    from gridtwin.cli import main
    from gridtwin.ota import LOCK_FILE

    sp = site_pki_copy
    brk = broker_factory(sp)
    sp.path.write_text(sp.path.read_text().replace("port = 8883", f"port = {brk.port}", 1))
    lock = sp.site.var_dir / LOCK_FILE
    site = ["--site", str(sp.path)]

    def first() -> subprocess.Popen:
        # srv_a is not running: the update waits for its first answer, holding the session
        cmd = [sys.executable, "-m", "gridtwin.cli", *site, "ota", "srv_a", "--config-only"]
        proc = subprocess.Popen(
            cmd + ["--firmware", str(SRC), "--timeout", "120"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: lock.exists() and lock.read_text().startswith(f"{proc.pid} "),
            30,
            "the first gridtwin ota's lock",
        )
        return proc

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        proc = first()
        try:
            for second in (["ota", "srv_a"], ["ota", "status"]):
                assert main(site + second) == 1
                err = capsys.readouterr().err
                assert err.startswith(f"gridtwin: another gridtwin ota is running (pid {proc.pid},")
                assert len(err.splitlines()) == 1, err
            assert proc.poll() is None  # the first goes on
            proc.send_signal(sig)
            _out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 130, (sig, err)
        assert "Traceback" not in err, err
        assert lock.read_text() == ""  # released
    # kill -9: nothing of its own cleanup runs; the file still names the dead pid: taken over
    proc = first()
    proc.kill()
    proc.communicate(timeout=30)
    assert lock.read_text().startswith(f"{proc.pid} ")
    assert main(site + ["ota", "status"]) == 0, capsys.readouterr()
    assert lock.read_text() == ""


def test_cli_retries_a_busy_node_then_names_it_and_the_fix(
    site_pki_copy, broker_factory, mqtt_client, capsys, monkeypatch
):
    """A node with no RAM for a transfer just now answers "busy" (gt/ota.py: a MemoryError, or
    less free heap than a transfer needs at begin): `gridtwin ota` asks again after a growing
    pause, says so, and gives up after a bounded number of tries with one line naming the node and
    the fix. pv1 here is a client with pv1's certificate on the real broker, answering as the
    firmware's busy path does (a real node cannot be made short of RAM on cue)."""
    from gridtwin import ota
    from gridtwin.cli import main

    sp = site_pki_copy
    brk = broker_factory(sp)
    sp.path.write_text(sp.path.read_text().replace("port = 8883", f"port = {brk.port}", 1))
    monkeypatch.setattr(ota, "BUSY_BACKOFF", 0.05)
    node = mqtt_client("pv1", broker=brk)
    topic = brk.topic("pv1", "ota")
    begins = []

    def answer(client, userdata, msg):
        op = json.loads(msg.payload).get("op")
        st = {"status": "idle", "begin": "busy"}[op]
        begins.append(op)
        why = "out of RAM" if st == "busy" else None
        a = {"id": None, "st": st, "off": 0, "chunk": 221, "fw": "0.1.0", "why": why}
        client.publish(brk.topic("pv1", "ota/ack"), json.dumps(a).encode(), 0)

    node.subscribe(topic)
    node.client.on_message = answer
    args = ["--site", str(sp.path), "ota", "pv1", "--config-only", "--firmware", str(SRC)]
    assert main(args) == 1
    err = capsys.readouterr().err
    tries = ota.BUSY_TRIES
    assert begins.count("begin") == tries + 1, begins
    said = [ln for ln in err.splitlines() if ln.startswith("pv1: busy (out of RAM): trying again")]
    assert len(said) == tries, err
    assert said[0].endswith(f"in 0.05 s (1 of {tries})") and said[-1].endswith(
        f"({tries} of {tries})"
    )
    last = err.strip().splitlines()[-1]
    assert last.startswith("gridtwin: 1 of 1 node(s) not updated: pv1 (busy); pv1 had no RAM"), err
    assert "run `gridtwin ota pv1` again" in last, last
