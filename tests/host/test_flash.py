"""`gridtwin flash`: esptool invocation per board, image download + SHA-256, port messages.

No chip is reachable here, so esptool's argv is built by a function and asserted, and then handed
to the real esptool, which must parse it and get as far as opening the (missing) port.
"""

import fcntl
import hashlib
import http.server
import os
import subprocess
import threading

import pytest

from gridtwin import flash
from gridtwin.cli import main
from gridtwin.errors import ToolError
from gridtwin.nodeconfig import load_board

IMAGE = os.urandom(4096) + b"MicroPython test image"
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDTWIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


@pytest.fixture
def image_server():
    """A loopback HTTP server holding one image; counts GETs."""
    hits = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path != "/fw/ESP32_GENERIC_S3-test.bin":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(IMAGE)))
            self.end_headers()
            self.wfile.write(IMAGE)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/fw/ESP32_GENERIC_S3-test.bin"
    srv.hits = hits
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(
    "name,chip,offset", [("esp32", "esp32", "0x1000"), ("esp32s3", "esp32s3", "0x0")]
)
def test_esptool_invocation_per_board(name, chip, offset, tmp_path):
    board = load_board(name)
    image = tmp_path / "fw.bin"
    image.write_bytes(IMAGE)
    erase, write = flash.esptool_commands(board, "/dev/ttyGT_MISSING0", image)
    common = [
        "--chip",
        chip,
        "--port",
        "/dev/ttyGT_MISSING0",
        "--baud",
        "460800",
        "--before",
        "default-reset",
        "--after",
        "hard-reset",
    ]
    assert erase[:3] == flash.esptool_base() and erase[3:] == common + ["erase-flash"]
    assert write[3:] == common + ["write-flash", "--compress", offset, str(image)]
    # --no-erase writes only; --baud overrides the board file
    (only,) = flash.esptool_commands(board, "/dev/x", image, baud=115200, erase=False)
    assert only[only.index("--baud") + 1] == "115200" and "erase-flash" not in only
    # the real esptool accepts this argv: it parses it and stops only at the missing port
    proc = subprocess.run(write, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert "Could not open /dev/ttyGT_MISSING0" in out, out
    assert "Usage:" not in out and "No such option" not in out


def test_board_files_name_an_official_image():
    for name in ("esp32", "esp32s3"):
        url, sha = flash.board_image(load_board(name))
        assert url.startswith("https://micropython.org/resources/firmware/ESP32_GENERIC")
        assert url.endswith(".bin")


def test_download_verifies_and_caches(image_server, cache):
    path = flash.fetch_image(image_server.url, IMAGE_SHA)
    assert path.read_bytes() == IMAGE and path.parent == cache
    again = flash.fetch_image(image_server.url, IMAGE_SHA.upper())
    assert again == path and len(image_server.hits) == 1  # second use comes from the cache


def test_checksum_mismatch_is_refused_and_nothing_is_kept(image_server, cache):
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(
        ToolError, match=f"has SHA-256 {IMAGE_SHA}, but .* expects {wrong}; not flashing"
    ):
        flash.fetch_image(image_server.url, wrong)
    assert not any(cache.iterdir())


def test_tampered_cache_is_refused_and_removed(image_server, cache):
    path = flash.fetch_image(image_server.url, IMAGE_SHA)
    path.write_bytes(IMAGE[:-1] + b"X")
    with pytest.raises(ToolError, match="cached image .* was removed"):
        flash.fetch_image(image_server.url, IMAGE_SHA)
    assert not path.exists()
    assert flash.fetch_image(image_server.url, IMAGE_SHA).read_bytes() == IMAGE  # fetched afresh


def test_unknown_checksum_is_an_error_with_instructions(cache, capsys):
    # the shipped board files carry no SHA-256 (micropython.org publishes none): flash refuses
    rc = main(["flash", "--board", "esp32s3", "--port", "/dev/ttyACM0", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith(
        "gridtwin: no valid SHA-256 for the MicroPython image https://micropython.org/"
    )
    assert "sha256sum" in err and "image.sha256" in err


def test_image_without_sha256_is_refused(tmp_path, cache, capsys):
    img = tmp_path / "fw.bin"
    img.write_bytes(IMAGE)
    assert main(["flash", "--port", "/dev/x", "--image", str(img), "--dry-run"]) == 1
    assert "needs --sha256" in capsys.readouterr().err


def test_dry_run_prints_the_commands(tmp_path, cache, capsys):
    img = tmp_path / "fw.bin"
    img.write_bytes(IMAGE)
    rc = main(
        [
            "flash",
            "--board",
            "esp32",
            "--port",
            "/dev/ttyUSB7",
            "--image",
            img.as_uri(),
            "--sha256",
            IMAGE_SHA,
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 2
    assert out[0].endswith(
        "--port /dev/ttyUSB7 --baud 460800 --before default-reset --after hard-reset erase-flash"
    )
    assert " write-flash --compress 0x1000 " in out[1] and str(cache) in out[1]


def test_missing_port_message(tmp_path, cache, capsys):
    img = tmp_path / "fw.bin"
    img.write_bytes(IMAGE)
    rc = main(["flash", "--port", "/dev/ttyGT_NOPE9", "--image", str(img), "--sha256", IMAGE_SHA])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("gridtwin: no serial port /dev/ttyGT_NOPE9: is the board plugged in")


def test_busy_port_message():
    master, slave = os.openpty()
    port = os.ttyname(slave)
    holder = os.open(port, os.O_RDWR | os.O_NOCTTY)
    try:
        flash.check_port(port)  # free: opens and closes
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what pyserial/esptool/mpremote do
        with pytest.raises(ToolError, match=f"{port} is busy: another program has it open"):
            flash.check_port(port)
    finally:
        for fd in (holder, slave, master):
            os.close(fd)


def test_wrong_chip_message_from_esptools_own_error():
    from esptool.targets import ESP32ROM, ESP32S3ROM

    # the exact text esptool's loader raises when --chip does not match the chip it finds
    text = (
        f"A fatal error occurred: This chip is {ESP32ROM.CHIP_NAME}, not {ESP32S3ROM.CHIP_NAME}. "
        "Wrong chip argument?\n"
    )
    msg = flash.explain_esptool(text, load_board("esp32s3"), "/dev/ttyUSB0")
    assert (
        msg == "the chip on /dev/ttyUSB0 is an ESP32, but board 'esp32s3' is an ESP32S3: use "
        "BOARD=esp32"
    )
    text = f"This chip is {ESP32S3ROM.CHIP_NAME}, not {ESP32ROM.CHIP_NAME}. Wrong chip argument?"
    assert flash.explain_esptool(text, load_board("esp32"), "/dev/x").endswith("use BOARD=esp32s3")
    assert flash.explain_esptool("all fine", load_board("esp32"), "/dev/x") is None
