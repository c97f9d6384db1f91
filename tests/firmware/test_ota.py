"""Over-the-air updates on a virtual board (issue #17; protocol: docs/ota.md).

Real firmware (compiled, as deploy puts it on a board) under the MicroPython unix port at 96 KB,
real Mosquitto with the rendered ACL, the host's real sender (gridtwin.ota.Updater with the OTA
identity). The "new version" is the same firmware with another VERSION (or a fault put into it),
compiled by mpy-cross like any release.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import pytest

from fixtures.broker import wait_until
from fixtures.netnode import crashed, telemetry
from gridtwin.micropython import compile_firmware
from gridtwin.ota import Updater, release_from_files
from gridtwin.resources import FIRMWARE_DIR
from gridtwin.vboard import VirtualBoard

SRC = pathlib.Path(os.environ.get("GT_FIRMWARE_SRC") or FIRMWARE_DIR)


def new_firmware(tmp: pathlib.Path, version: str, edit=None) -> dict[str, pathlib.Path]:
    """The firmware with another VERSION (and edit(src folder) applied), compiled: {path: file}."""
    src = tmp / f"src-{version}"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "gt" / "__init__.py"
    init.write_text(re.sub(r'VERSION = "[^"]+"', f'VERSION = "{version}"', init.read_text()))
    if edit:
        edit(src)
    out = tmp / f"mpy-{version}"
    compile_firmware(out, src)
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    return dict(files, version=version)


def release(board, files, tmp, config=None, **kw):
    cfg = json.loads(board.read_flash(cfg_path(board)))
    cfg.update(config or {})
    path = tmp / f"config-{len(list(tmp.glob('config-*')))}.json"
    path.write_text(json.dumps(cfg))
    kw.setdefault("fw_version", files.get("version", "0.1.0"))
    files = {k: v for k, v in files.items() if k != "version"}
    return release_from_files(cfg["node"], dict(files, **{"config.json": path}), **kw)


@pytest.fixture
def updater(broker):
    pki = broker.pki
    up = Updater.connect(pki, broker.host, broker.port, broker.site.topic_root, trial_s=20)
    yield up
    up.close()


def ota_state(board):
    try:
        return json.loads(board.read_flash("ota.json"))
    except FileNotFoundError:
        return {}


def cfg_path(board) -> str:
    """The running version's config on the board's flash (the pointer's, as gt/otastate.py)."""
    c = (ota_state(board).get("cur") or {}).get("cfg")
    return f"{c}/config.json" if c else "config.json"


def test_update_switches_in_trial_and_confirms(net_node, updater, tmp_path, mqtt_client, broker):
    files = new_firmware(tmp_path, "0.9.1")
    board = net_node(sample_ms=200)  # sampling on meanwhile, five readings a second
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "status"))
    host.subscribe(broker.topic("pv1", "telemetry"))
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    rel = release(board, files, tmp_path)
    [res] = updater.update([rel], expire_s=60)
    assert res.ok, res.line()
    assert res.state == "confirmed"
    assert rel.version.startswith("0.9.1+")
    # the new version booted from its slot, on trial, and confirmed itself
    board.wait_for(r"ota: confirmed 0\.9\.1\+", timeout=30)
    assert board.grep(r"boot: GridTwin 0\.9\.1 ")
    p = ota_state(board)
    assert p["st"] == "confirmed" and p["cur"]["v"] == rel.version
    assert p["prev"]["code"] == ""  # the version deploy installed is the one kept to go back to

    def confirmed_birth():
        # (the updater saw it on its own session: this subscriber may see it a moment later)
        births = [json.loads(m.payload) for m in host.received(broker.topic("pv1", "status"))]
        return any(b.get("ota", {}).get("st") == "confirmed" and b["fw"] == "0.9.1" for b in births)

    wait_until(confirmed_birth, 10, "the confirmed birth")
    assert not crashed(board), crashed(board)
    # every reading the old version took, up to its reset, reached the broker: those of the
    # transfer live, the last ones from flash after the new version came up
    last = int(board.wait_for(r"ota: resetting after reading (\d+)", timeout=5)[1])
    first_boot = telemetry(host.messages)[0]["boot"]  # (telemetry is never retained)

    def old_seqs():
        return sorted({d["seq"] for d in telemetry(host.messages) if d["boot"] == first_boot})

    wait_until(lambda: len(old_seqs()) >= last, 30, "the old boot's readings")
    assert old_seqs() == list(range(1, last + 1))
    print(f"\nota pv1: {res.line()}, {res.messages} chunks, release {rel.size} bytes")


def test_corrupted_chunk_refused_old_version_keeps_running(net_node, updater, tmp_path):
    files = new_firmware(tmp_path, "0.9.2")
    board = net_node()
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    rel = release(board, files, tmp_path)
    # one byte of the first file arrives damaged every time it is sent: the chunks are tampered
    # with on their way out of the real sender (its one publish call), so neither the sender nor
    # the node has a switch for it
    bad = len(rel.manifest) + 10  # a stream offset
    publish = updater._pub

    def tampered(node, payload, qos):
        if payload[:1] == b"\0":  # a chunk: 0x00, id (4 bytes), stream offset (4 bytes), data
            k = bad - int.from_bytes(payload[5:9], "big") + 9
            if 9 <= k < len(payload):
                payload = payload[:k] + bytes([payload[k] ^ 0xFF]) + payload[k + 1 :]
        publish(node, payload, qos)

    updater._pub = tampered
    [res] = updater.update([rel], expire_s=60)
    assert not res.ok and res.state == "failed", res.line()
    assert "SHA-256" in res.why, res.why
    # nothing was switched: no pointer, no reset, and the old version keeps sampling and sending
    assert ota_state(board) == {}
    n = len(board.lines)
    board.wait_for(r"mqtt: .*|^T ", timeout=5, start=0)
    assert len(board.grep(r"boot: GridTwin")) == 1
    assert board.grep(r"boot: GridTwin 0\.1\.0 ")
    assert not board.grep(r"ota: switched")
    assert n >= 1 and not crashed(board), crashed(board)


def power_cut(board) -> None:
    """kill -9 of the board's interpreter: no Ctrl-C, no `finally`, nothing flushed."""
    board._stopping = True
    board._proc.kill()
    board.wait_exit(60)
    board.stop()


def again(board) -> VirtualBoard:
    """The power back: the same flash, a new interpreter."""
    b = VirtualBoard(board.root, firmware=board.firmware, heap=board.heap, name=board.name)
    return b.start()


def in_thread(fn):
    import threading

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn()), daemon=True)
    t.start()
    return t, out


def test_power_cut_during_transfer_boots_old_version_and_resumes(net_node, updater, tmp_path):
    files = new_firmware(tmp_path, "0.9.3")
    board = net_node()
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    rel = release(board, files, tmp_path)
    updater.window = 1  # one chunk at a time: the cut lands mid-stream
    t, out = in_thread(lambda: updater.update([rel], expire_s=90))
    board.wait_for(r"ota: receiving", timeout=30)
    slot = board.flash / "ota" / "0"
    wait_until(
        lambda: sum(f.stat().st_size for f in slot.rglob("*") if f.is_file()) >= 20_000,
        30,
        "20 KB of the release on the board's flash",
    )
    power_cut(board)
    b2 = again(board)
    # the old version boots (nothing of it was touched) and the transfer resumes from the flash
    b2.wait_for(r"boot: GridTwin 0\.1\.0 ", timeout=30)
    m = b2.wait_for(r"ota: receiving \S+ \(\d+ bytes\) into ota/0 from (\d+)", timeout=60)
    assert int(m[1]) >= 20_000
    t.join(90)
    [res] = out["r"]
    assert res.ok and res.state == "confirmed", res.line()
    b2.wait_for(r"boot: GridTwin 0\.9\.3 ", timeout=30)
    assert res.bytes_sent < 2 * rel.size  # resumed, not started over
    b2.stop()
    assert not crashed(b2), crashed(b2)


def test_power_cut_during_switch_boots_a_whole_version(net_node, updater, tmp_path):
    files = new_firmware(tmp_path, "0.9.4")
    board = net_node()
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    rel = release(board, files, tmp_path)
    t, out = in_thread(lambda: updater.update([rel], expire_s=90))
    board.wait_for(r"ota: verifying", timeout=60)
    power_cut(board)
    # what a cut mid-way through writing the pointer leaves: a torn ota.tmp (never read)
    if not (board.flash / "ota.json").exists():
        (board.flash / "ota.tmp").write_text('{"cur": {"v": "0.9.4+x", "co')
    b2 = again(board)
    # either the old version (the cut came before the rename) or the new one on trial: a whole one
    m = b2.wait_for(r"boot: GridTwin (0\.1\.0|0\.9\.4) ", timeout=30)
    print(f"\nafter the cut in the switch: {m[1]} booted")
    t.join(90)
    [res] = out["r"]
    assert res.ok and res.state == "confirmed", res.line()
    b2.stop()
    assert not crashed(b2), crashed(b2)


def test_version_crashing_at_import_is_rolled_back(net_node, updater, tmp_path):
    def boom(src):
        app = src / "gt" / "app.py"
        app.write_text('raise RuntimeError("boom at import")\n' + app.read_text())

    files = new_firmware(tmp_path, "0.9.5", boom)
    board = net_node()
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    rel = release(board, files, tmp_path)
    [res] = updater.update([rel], expire_s=60)
    assert res.state == "rolled_back" and not res.ok, res.line()
    assert "boom at import" in res.why
    # the trial booted once, crashed, and the next boot ran the old version again
    assert board.grep(r"boot: GridTwin 0\.9\.5 ")
    board.wait_for(r"boot: GridTwin 0\.1\.0 boot=3", timeout=30)
    p = ota_state(board)
    assert p["st"] == "rolled_back" and p["bad"] == rel.version and p["cur"]["code"] == ""


def test_version_that_never_reaches_the_broker_is_rolled_back(net_node, updater, tmp_path):
    files = new_firmware(tmp_path, "0.9.6")
    board = net_node()
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    cfg = json.loads(board.read_flash("config.json"))
    rel = release(board, files, tmp_path, config={"mqtt": dict(cfg["mqtt"], port=1)})
    updater.trial_s = 5
    [res] = updater.update([rel], expire_s=60)
    assert res.state == "rolled_back", res.line()
    assert "not healthy within 5 s: no broker connection" in res.why
    assert json.loads(board.read_flash("config.json"))["mqtt"]["port"] != 1  # never touched


def test_refused_up_front_without_room_on_flash(net_node, updater, tmp_path, mqtt_client, broker):
    board = net_node()
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    ota = mqtt_client("gridtwin-ota")
    ota.subscribe(broker.topic("pv1", "ota/ack"), qos=0)
    begin = {"op": "begin", "id": 7, "v": "9", "mlen": 10, "msha": "0" * 64, "size": 1 << 50}
    ota.publish(broker.topic("pv1", "ota"), json.dumps(begin).encode(), qos=1)
    m = ota.wait_for(broker.topic("pv1", "ota/ack"), timeout=10)
    a = json.loads(m.payload)
    assert a["st"] == "refused" and a["why"].startswith("not enough flash: the release needs")
    assert not (board.flash / "ota" / "stage.json").exists()


def test_config_that_does_not_validate_is_rolled_back(net_node, updater, tmp_path):
    # on trial, a config that would send the node into safe mode resets it instead: rolled back
    board = net_node()
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    rel = release(board, {}, tmp_path, config={"sample_ms": "fast"}, config_only=True)
    [res] = updater.update([rel], expire_s=60)
    assert res.state == "rolled_back", res.line()
    assert "sample_ms" in res.why, res.why
    assert not board.grep(r"SAFE MODE")
    # back on the firmware and config deploy installed (the flash root's)
    assert ota_state(board)["cur"] == {"v": "0.1.0", "code": "", "cfg": ""}


def test_exactly_two_versions_are_kept(net_node, updater, tmp_path, net_build):
    board = net_node()
    # the firmware in the flash root, as `gridtwin deploy` puts it there over USB
    shutil.copytree(net_build / "gt", board.flash / "gt")
    board.start()
    board.wait_for(r"mqtt: connected", timeout=60)
    kept = {"ca.der", "cert.der", "key.der"}
    for i, v in enumerate(("0.9.21", "0.9.22", "0.9.23")):
        rel = release(board, new_firmware(tmp_path, v), tmp_path)
        [res] = updater.update([rel], expire_s=60)
        assert res.ok, res.line()
        board.wait_for(r"ota: confirmed %s" % re.escape(rel.version), timeout=30)
        slots = sorted(d.name for d in (board.flash / "ota").iterdir())
        root = {f.name for f in board.flash.iterdir()}
        if i == 0:  # the deployed version is the one to go back to: it stays
            assert slots == ["0"] and {"gt", "config.json"} <= root, (slots, root)
        else:  # two slots hold the two versions: the root's copy is no rollback target, it goes
            assert slots == [str(i - 1), str(i)], slots
            assert not {"gt", "config.json"} & root, root
        assert kept <= root, root  # the identity stays
    p = ota_state(board)
    assert (p["cur"]["code"], p["prev"]["code"]) == ("ota/2", "ota/1")
    assert (p["cur"]["cfg"], p["prev"]["cfg"]) == ("ota/2", "ota/1")
    # the last version booted from its slot, with the root's copy gone
    assert board.grep(r"boot: GridTwin 0\.9\.23 ")
    assert not crashed(board), crashed(board)


# What a transfer leaves free on the fullest node that runs at 96 KB (the demo's EL1: INA226, ADC,
# DS18B20, OLED, TLS), at its fullest moment after a collection (the node's own figure: low= in
# its "switched" line). docs/ota.md's target is 8 KB (measured 8.2-8.3 KB at begin, 8.9 KB while
# the chunks come); the test holds a floor under it, as test_fleet_heap does for the connect.
MIN_FREE_IN_TRANSFER = 7 * 1024


def test_fullest_node_takes_an_update_in_96k(broker, updater, tmp_path):
    """EL1 as the demo renders it: the whole update (the chunks while it samples and sends) in its
    96 KB heap. Before the receiver was split per phase, its ~11 KB of code did not load beside
    EL1's firmware: every OTA message ended the link with a MemoryError."""
    from gridtwin.fleet import VirtualFleet

    fleet = VirtualFleet(
        broker.site,
        broker.pki,
        tmp_path / "fleet",
        broker=(broker.host, broker.port),
        nodes=["EL1"],
        heap="96k",
    )
    board = fleet.nodes["EL1"].board
    fleet.start()
    try:
        board.wait_for(r"mqtt: connected", timeout=90)
        rel = release(board, new_firmware(tmp_path, "0.9.8"), tmp_path)
        [res] = updater.update([rel], expire_s=90)
        assert res.ok and res.state == "confirmed", res.line()
        low = int(board.wait_for(r"ota: switched .* low=(\d+) ", timeout=5)[1])
    finally:
        fleet.stop()
    print(f"\nEL1 at 96 KB: {low} B free at the transfer's fullest moment")
    assert not crashed(board), crashed(board)
    assert low >= MIN_FREE_IN_TRANSFER, low
