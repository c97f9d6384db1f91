"""Put MicroPython on a board: fetch the image its board file names, verify it, run esptool.

The board file (``boards/<name>.json``) says what goes where::

    "chip": "esp32s3", "flash_offset": "0x0", "flash_baud": 460800,
    "image": {"version": "v1.25.0", "url": "https://micropython.org/resources/firmware/...bin",
              "sha256": "<64 hex digits>"}

The image is downloaded once into a cache (``$GRIDTWIN_CACHE`` or ``~/.cache/gridtwin/images``)
and its SHA-256 is checked on every use: a mismatch, or a board file that names no SHA-256, is an
error (never a warning), because esptool would write whatever it is given onto the chip.

esptool cannot be tried without a chip, so everything it is told is built by ``esptool_commands``
(tests assert it per board) and its failures are turned into messages by ``explain_esptool``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from gridtwin.errors import ConfigError, ToolError
from gridtwin.nodeconfig import load_board
from gridtwin.resources import BOARDS_DIR, known_boards

DEFAULT_BAUD = 460800
HEX64 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 16


def cache_dir() -> pathlib.Path:
    explicit = os.environ.get("GRIDTWIN_CACHE")
    if explicit:
        return pathlib.Path(explicit) / "images"
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "gridtwin" / "images"


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def board_image(board: dict, boards_dir: pathlib.Path = BOARDS_DIR) -> tuple[str, str]:
    """(url, sha256) of the board's MicroPython image; ConfigError when the board file lacks
    them."""
    path = pathlib.Path(boards_dir) / f"{board.get('name', '?')}.json"
    image = board.get("image")
    if not isinstance(image, dict) or not image.get("url"):
        raise ConfigError(
            path,
            "image.url",
            "missing: the board file names no MicroPython image",
            "add \"image\": {\"url\": ..., \"sha256\": ...} or pass --image FILE --sha256 HEX",
        )
    return str(image["url"]), str(image.get("sha256") or "").lower()


def _name_from_url(url: str) -> str:
    name = pathlib.PurePosixPath(urllib.parse.urlparse(url).path).name
    return name or "image.bin"


def fetch_image(
    url: str,
    sha256: str,
    *,
    cache: pathlib.Path | None = None,
    source_hint: str = "the board file",
    timeout: float = 60.0,
) -> pathlib.Path:
    """The verified image file for url: from the cache, or downloaded into it (http, https, file,
    or a plain path). Raises ToolError when the expected SHA-256 is unknown or does not match; a
    mismatching download is deleted, a mismatching cached copy too (it is fetched again next
    time)."""
    expected = (sha256 or "").strip().lower()
    if not HEX64.match(expected):
        raise ToolError(
            f"no valid SHA-256 for the MicroPython image {url} in {source_hint}; refusing to "
            "flash an unverified image",
            hint=(
                "download it once from a source you trust, check it, then put `sha256sum FILE` "
                "into the board file's image.sha256 (or pass --sha256 HEX); micropython.org "
                "publishes no checksums"
            ),
        )
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{expected[:12]}-{_name_from_url(url)}"
    if target.exists():
        got = sha256_file(target)
        if got == expected:
            return target
        target.unlink()
        raise ToolError(
            f"the cached image {target} has SHA-256 {got}, expected {expected}; it was removed",
            hint="run the command again to download it afresh",
        )
    parsed = urllib.parse.urlparse(url)
    tmp = target.with_name(target.name + ".part")
    try:
        if parsed.scheme in ("", "file"):
            src = urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else url
            try:
                fin = open(src, "rb")
            except OSError as exc:
                raise ToolError(f"cannot read the image {src}: {exc.strerror}") from None
        else:
            try:
                fin = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ToolError(
                    f"cannot download {url}: {reason}",
                    hint="check the network, or download it by hand and pass --image FILE",
                ) from None
        h = hashlib.sha256()
        with fin, open(tmp, "wb") as fout:
            for block in iter(lambda: fin.read(CHUNK), b""):
                h.update(block)
                fout.write(block)
        got = h.hexdigest()
        if got != expected:
            raise ToolError(
                f"the image from {url} has SHA-256 {got}, but {source_hint} expects {expected}; "
                "not flashing it",
                hint="the download is corrupt or not the image the board file names; "
                "fix the URL or the checksum, never skip the check",
            )
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def esptool_base() -> list[str]:
    return [sys.executable, "-m", "esptool"]


def esptool_commands(
    board: dict, port: str, image: os.PathLike | str, *, baud: int | None = None, erase: bool = True
) -> list[list[str]]:
    """The esptool runs that flash `image` onto the board: erase the whole flash, then write the
    image at the board file's offset (ESP32: 0x1000 after the ROM's reserved area; ESP32-S3:
    0x0)."""
    baud = int(baud or board.get("flash_baud") or DEFAULT_BAUD)
    offset = str(board["flash_offset"])
    if not re.fullmatch(r"0x[0-9a-fA-F]+", offset):
        raise ConfigError(
            BOARDS_DIR / f"{board.get('name', '?')}.json",
            "flash_offset",
            f"{offset!r} is not a hex offset",
            "write it like \"0x1000\"",
        )
    common = esptool_base() + [
        "--chip",
        board["chip"],
        "--port",
        port,
        "--baud",
        str(baud),
        "--before",
        "default-reset",
        "--after",
        "hard-reset",
    ]
    cmds = []
    if erase:
        cmds.append(common + ["erase-flash"])
    cmds.append(common + ["write-flash", "--compress", offset, str(image)])
    return cmds


def check_port(port: str) -> None:
    """Fail early and clearly when the serial port is missing, not ours to open, or busy."""
    if not port:
        raise ToolError(
            "no serial port given",
            hint="e.g. PORT=/dev/ttyACM0 (ESP32-S3 native USB) or /dev/ttyUSB0",
        )
    if not os.path.exists(port):
        near = sorted(
            str(p) for pat in ("ttyACM*", "ttyUSB*") for p in pathlib.Path("/dev").glob(pat)
        )
        seen = (
            f"serial ports here: {', '.join(near)}"
            if near
            else "no /dev/ttyACM* or /dev/ttyUSB* is present"
        )
        raise ToolError(
            f"no serial port {port}: is the board plugged in (with a data cable)?", hint=seen
        )
    if not os.access(port, os.R_OK | os.W_OK):
        raise ToolError(
            f"no permission to open {port}",
            hint="add yourself to the 'dialout' group (sudo usermod -aG dialout $USER), then log "
            "in again",
        )
    import serial  # pyserial, installed with esptool

    try:
        s = serial.Serial(port, exclusive=True, timeout=0)
    except serial.SerialException as exc:
        text = str(exc)
        if (
            "lock" in text.lower()
            or "busy" in text.lower()
            or "Resource temporarily unavailable" in text
        ):
            raise ToolError(
                f"{port} is busy: another program has it open",
                hint="close the REPL, mpremote, screen or the IDE using it (see `fuser -v "
                + port
                + "`)",
            ) from None
        raise ToolError(f"cannot open {port}: {text}") from None
    s.close()


_WRONG_CHIP = re.compile(r"This chip is (\S+?),? not (\S+?)\.? ")


def explain_esptool(output: str, board: dict, port: str) -> str | None:
    """A clear message for an esptool failure (its combined output), or None when unknown."""
    m = _WRONG_CHIP.search(output)
    if m:
        found = m.group(1)
        want = board.get("chip")
        known = known_boards()
        guess = next(
            (b for b in known if b.replace("-", "").lower() == found.replace("-", "").lower()), None
        )
        fix = (
            f"use BOARD={guess}"
            if guess
            else f"add a board file for {found} (known boards: {', '.join(known)})"
        )
        return (
            f"the chip on {port} is an {found}, but board '{board.get('name')}' is an "
            f"{want.upper()}: {fix}"
        )
    if "port is busy" in output or "Could not exclusively lock" in output:
        return (
            f"{port} is busy or gone: close whatever holds it (REPL, mpremote, IDE) and try again"
        )
    if "Failed to connect" in output or "No serial data received" in output:
        return (
            f"no answer from a bootloader on {port}: hold BOOT (GPIO0), press and release RESET, "
            "release BOOT, then run the command again"
        )
    return None


def flash(
    board_name: str,
    port: str,
    *,
    image: str | None = None,
    sha256: str | None = None,
    baud: int | None = None,
    erase: bool = True,
    dry_run: bool = False,
    out=print,
    boards_dir: pathlib.Path = BOARDS_DIR,
) -> list[list[str]]:
    """Flash MicroPython onto the board at port. Returns the esptool commands (run unless
    dry_run)."""
    board = load_board(board_name, boards_dir)
    board.setdefault("name", board_name)
    if image:
        url, expected = image, (sha256 or "")
        hint = "--sha256"
        if not sha256:
            raise ToolError(
                f"--image {image} needs --sha256: an image is never flashed unverified",
                hint="run `sha256sum` on a copy you trust and pass the digest",
            )
    else:
        url, expected = board_image(board, boards_dir)
        if sha256:
            expected = sha256
        hint = f"boards/{board_name}.json"
    path = fetch_image(url, expected, source_hint=hint)
    cmds = esptool_commands(board, port, path, baud=baud, erase=erase)
    if dry_run:
        return cmds
    check_port(port)
    for cmd in cmds:
        out("$ " + " ".join(cmd[2:] if cmd[:3] == esptool_base() else cmd))
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        lines = []
        for line in proc.stdout:
            lines.append(line)
            out(line.rstrip("\n"))
        rc = proc.wait()
        text = "".join(lines)
        # esptool 5 may print a fatal error and still exit 0 when run as a module; trust the text
        # too
        if rc != 0 or "A fatal error occurred" in text:
            why = explain_esptool(text, board, port)
            raise ToolError(why or f"esptool failed (exit {rc}); its output is above")
    return cmds
