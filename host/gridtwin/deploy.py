"""Put a node's firmware, config and certificate on its board, uploading only what changed.

What goes on the board (paths relative to the board's filesystem root)::

    boot.py main.py            source: the board runs them by name
    gt/**/*.mpy                the firmware package, mpy-cross compiled for the board's "arch"
    config.json                rendered from site.toml + the board file (gridtwin.nodeconfig)
    ca.der cert.der key.der    the site CA and the node's certificate and SEC1 key (DER, as mbedTLS
                               takes them); the node's pair is issued first when the PKI lacks it

The board is asked for the SHA-256 of each of these files (and of everything under ``gt/``) by a
tiny script run through the transport; only files whose hash differs are sent, and files under
``gt/`` that are no longer part of the firmware are removed (a stale ``gt/x.py`` would shadow the
new ``gt/x.mpy``). Then the board is hard-reset, and with ``wait`` deploy waits for the node's
birth message (retained, state "online") on the broker.

Transports: mpremote (default) and adafruit-ampy (``tool="ampy"``); both talk to the REPL on the
serial port, so they work the same on a real board and on a virtual board's pseudo-terminal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from gridtwin.errors import PKIError, ToolError
from gridtwin.micropython import compile_firmware
from gridtwin.nodeconfig import load_board, render
from gridtwin.resources import BOARDS_DIR, FIRMWARE_DIR

CERT_FILES = {"ca.der": "ca", "cert.der": "cert", "key.der": "key"}
# a version sent over the air points boot.py at its folder (docs/ota.md): what deploy puts on the
# board runs only once that pointer is gone
OTA_POINTER = "ota.json"
MARK = "GTHASH "

# Runs on the board: make the folders, then print the SHA-256 of the named files and of every file
# under gt/ (None for a missing file) as one JSON line. Works on the ESP32 port and the unix port.
_HASH_SCRIPT = """\
import os, hashlib, binascii, json
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    d = hashlib.sha256()
    b = bytearray(1024)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        d.update(m[:n])
    f.close()
    return binascii.hexlify(d.digest()).decode()
def _walk(d, out):
    try:
        it = os.ilistdir(d)
    except OSError:
        return
    for e in it:
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _walk(p, out)
        else:
            out.append(p)
for _d in DIRS:
    try:
        os.mkdir(_d)
    except OSError:
        pass
_all = list(PATHS)
_walk('gt', _all)
_r = {}
for _p in _all:
    _r[_p] = _h(_p)
print('MARK' + json.dumps(_r))
"""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class DeployResult:
    node: str
    port: str
    files: dict[str, pathlib.Path] = field(default_factory=dict)  # board path -> local file
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    birth: dict | None = None
    seconds: float = 0.0

    @property
    def bytes_sent(self) -> int:
        return sum(self.files[p].stat().st_size for p in self.uploaded)


# --- what goes on the board -----------------------------------------------------------------------


def _merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def build(
    site,
    node_id: str,
    out_dir: pathlib.Path,
    *,
    pki=None,
    boards_dir: pathlib.Path = BOARDS_DIR,
    arch: str | None = None,
    config_overrides: dict | None = None,
    firmware_dir: pathlib.Path = FIRMWARE_DIR,
    out=print,
) -> dict[str, pathlib.Path]:
    """Prepare every file for the node's board in out_dir. Returns {board path: local file}."""
    from gridtwin.pki import PKI

    node = site.node(node_id)  # ConfigError for an unknown node
    board = load_board(node.board, boards_dir)
    out_dir = pathlib.Path(out_dir)
    fw = out_dir / "fw"
    if fw.exists():
        shutil.rmtree(fw)
    fw.mkdir(parents=True)
    compile_firmware(fw, root=pathlib.Path(firmware_dir), arch=arch or board.get("arch"))
    files = {p.relative_to(fw).as_posix(): p for p in sorted(fw.rglob("*")) if p.is_file()}
    cfg = render(site, node_id, boards_dir)
    if config_overrides:
        _merge(cfg, config_overrides)
    cfg_path = out_dir / "config.json"
    cfg_path.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    files["config.json"] = cfg_path
    pki = pki or PKI.for_site(site)
    if not pki.exists():
        raise PKIError(f"the site has no CA yet ({pki.dir})", hint="run `gridtwin pki init` first")
    if not pki.has(node_id):
        pki.issue(node_id)
        out(f"issued a certificate for {node_id} ({pki.identity_dir(node_id)})")
    sources = {
        "ca": pki.ca_der_path,
        "cert": pki.der_cert_path(node_id),
        "key": pki.der_key_path(node_id),
    }
    for name, kind in CERT_FILES.items():
        files[name] = sources[kind]
    return files


# --- transports -----------------------------------------------------------------------------------


def _exe(name: str) -> str:
    beside = pathlib.Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        pip = {"mpremote": "mpremote", "ampy": "adafruit-ampy"}[name]
        raise ToolError(f"{name} not found", hint=f"run `make setup` or `pip install {pip}`")
    return found


def _explain(tool: str, port: str, text: str) -> str:
    low = text.lower()
    if "in use" in low or "busy" in low or "could not exclusively lock" in low:
        return f"{port} is busy: close the REPL, screen or IDE that has it open"
    if "no such file" in low or "could not open" in low or "failed to access" in low:
        return f"cannot open {port}: is the board plugged in?"
    if "could not enter raw repl" in low or "timeout" in low:
        return (
            f"the board on {port} does not answer its REPL: press RESET, or flash MicroPython "
            "(make flash)"
        )
    last = text.strip().splitlines()[-1] if text.strip() else "no output"
    return f"{tool} failed on {port}: {last}"


class Mpremote:
    name = "mpremote"

    def __init__(self, port: str, timeout: float = 120.0):
        self.port, self.timeout = port, timeout
        self.exe = _exe("mpremote")

    def _run(self, args: list[str]) -> str:
        cmd = [self.exe, "connect", self.port, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise ToolError(
                f"mpremote on {self.port} did not finish in {self.timeout:.0f}s",
                hint="press RESET on the board and try again",
            ) from None
        if proc.returncode != 0:
            raise ToolError(_explain("mpremote", self.port, proc.stderr + proc.stdout))
        return proc.stdout

    def exec(self, script: str) -> str:
        return self._run(["exec", script])

    def put(self, pairs: list[tuple[pathlib.Path, str]], remove: list[str]) -> None:
        args: list[str] = []
        for local, remote in pairs:
            args += ["fs", "cp", "-f", str(local), ":" + remote, "+"]
        for remote in remove:
            args += ["fs", "rm", ":" + remote, "+"]
        if args:
            self._run(args[:-1])

    def reset(self) -> None:
        self._run(["reset"])


class Ampy:
    name = "ampy"

    def __init__(self, port: str, timeout: float = 120.0):
        self.port, self.timeout = port, timeout
        self.exe = _exe("ampy")

    def _run(self, args: list[str]) -> str:
        cmd = [self.exe, "--port", self.port, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise ToolError(f"ampy on {self.port} did not finish in {self.timeout:.0f}s") from None
        if proc.returncode != 0:
            raise ToolError(_explain("ampy", self.port, proc.stderr + proc.stdout))
        return proc.stdout

    def exec(self, script: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(script)
        try:
            return self._run(["run", f.name])
        finally:
            os.unlink(f.name)

    def put(self, pairs: list[tuple[pathlib.Path, str]], remove: list[str]) -> None:
        for local, remote in pairs:
            self._run(["put", str(local), remote])
        for remote in remove:
            self._run(["rm", remote])

    def reset(self) -> None:
        self._run(["reset", "--hard"])


TRANSPORTS = {"mpremote": Mpremote, "ampy": Ampy}


def board_hashes(transport, paths: list[str]) -> dict[str, str | None]:
    dirs = sorted(
        {str(pathlib.PurePosixPath(p).parent) for p in paths} - {"."},
        key=lambda d: (d.count("/"), d),
    )
    script = (
        _HASH_SCRIPT.replace("MARK", MARK)
        .replace("DIRS", json.dumps(dirs))
        .replace("PATHS", json.dumps(paths))
    )
    out = transport.exec(script)
    for line in out.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise ToolError(
        f"the board on {transport.port} did not report its file hashes",
        hint="is MicroPython (with hashlib) on it? output was: " + (out.strip()[-200:] or "empty"),
    )


# --- waiting for the birth ------------------------------------------------------------------------


class BirthWatcher:
    """Subscribes to <root>/<node>/status before the reset, when no daemon runs; `wait()` returns
    the first *live* birth (a retained copy from before the reset does not count).

    It listens as the OTA identity (which may read the nodes' status), holding the OTA lock as
    `gridtwin ota` does, never as the daemon: the broker makes the CN the client id, so a clean
    session of ``gridtwin-host`` would discard the stopped daemon's session and every reading the
    broker queued for it (acked to the nodes already)."""

    def __init__(
        self,
        site,
        node_id: str,
        pki,
        *,
        host: str | None = None,
        port: int | None = None,
    ):
        from gridtwin.ota import ota_client, single_run

        self.topic = site.topic(node_id, "status")
        self.host = host or (site.broker.hosts[0] if site.broker.hosts else "localhost")
        self.port = int(port or site.broker.port)
        self.cond = threading.Condition()
        self.birth: dict | None = None
        self.subscribed = False
        self.error: str | None = None
        self.seen: list = []  # every message received: (retained?, payload bytes)
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(single_run(site, "gridtwin deploy --wait"))
        try:
            # PKIError naming the file if the CA is missing
            c = ota_client(pki, self.host, self.port, site.topic_root)
        except BaseException:
            self._lock.close()
            raise
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client, userdata, flags, rc, props):
        if rc.is_failure:
            with self.cond:
                self.error = f"the broker refused the OTA identity: {rc}"
                self.cond.notify_all()
            return
        client.subscribe(self.topic, 1)

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        with self.cond:
            self.subscribed = True
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.seen.append((msg.retain, msg.payload))
            self.cond.notify_all()
        if msg.retain:  # stored before we subscribed: the previous boot's birth or will
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("state") == "online":
            with self.cond:
                self.birth = doc
                self.cond.notify_all()

    def start(self, timeout: float = 10.0) -> "BirthWatcher":
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            self._lock.close()
            raise ToolError(
                f"cannot reach the broker at {self.host}:{self.port}: {exc}",
                hint="start it (`gridtwin broker run`) or deploy without --wait",
            ) from None
        self.client.loop_start()
        with self.cond:
            self.cond.wait_for(lambda: self.subscribed or self.error, timeout)
        if not self.subscribed:
            self.stop()
            raise ToolError(
                self.error or f"no subscription on {self.host}:{self.port} within {timeout:.0f}s"
            )
        return self

    def wait(self, timeout: float) -> dict:
        with self.cond:
            self.cond.wait_for(lambda: self.birth is not None, timeout)
            birth = self.birth
        if birth is None:
            raise ToolError(
                f"no birth message on {self.topic} within {timeout:.0f}s after the reset",
                hint="watch the board's console (`make repl PORT=...`): Wi-Fi, broker address, "
                "clock",
            )
        return birth

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self._lock.close()


class DaemonWatcher:
    """When the daemon runs, it holds the host identity's MQTT session (the broker makes the client
    id the certificate CN): a second connection with that identity would take its session over.
    So deploy waits through the daemon's local API instead: the node's first live (not replayed)
    reading after the reset, which by the contract follows its birth. While it waits it looks, once
    a second, at whether the daemon is rejecting the node's readings (a clock not set, ...): then it
    says so and why at once instead of waiting for the timeout."""

    def __init__(self, site, node_id: str):
        from gridtwin.daemon.client import DaemonClient

        self.site, self.node = site, node_id
        self.client = DaemonClient.for_site(site)
        self.resp = None
        self.started_ms = int(time.time() * 1000)
        self._got: dict | None = None
        self._done = threading.Event()

    def start(self, timeout: float = 60.0) -> "DaemonWatcher":
        self.started_ms = int(time.time() * 1000)
        self.resp = self.client._open("GET", f"/tail?node={self.node}", timeout=timeout)
        threading.Thread(target=self._read, name="deploy-wait", daemon=True).start()
        return self

    def _read(self) -> None:
        try:
            for line in self.resp:
                if not line.strip():
                    continue
                doc = json.loads(line)
                if doc.get("node") == self.node and not doc.get("hist"):
                    self._got = {
                        "state": "online",
                        "via": "daemon",
                        "boot": doc.get("boot"),
                        "seq": doc.get("seq"),
                    }
                    return
        except (OSError, ValueError):
            pass
        finally:
            self._done.set()

    def rejects(self) -> tuple[int, str] | None:
        """(count, "reason: detail") when the daemon rejected the node's messages since start(),
        else None. Reads the store's nodes.rejected / last_reject / last_reject_at (absent in old
        databases)."""
        import sqlite3

        from gridtwin.daemon.config import db_path

        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{db_path(self.site)}?mode=ro", uri=True, timeout=1)
            ) as db:
                db.row_factory = sqlite3.Row
                row = db.execute("SELECT * FROM nodes WHERE id = ?", (self.node,)).fetchone()
        except sqlite3.Error:
            return None
        row = dict(row) if row is not None else {}
        if not row.get("rejected") or (row.get("last_reject_at") or 0) < self.started_ms:
            return None
        return row["rejected"], row.get("last_reject") or "?"

    def _rejected_error(self, rejects: tuple[int, str]) -> ToolError:
        from gridtwin.daemon.registry import REJECT_FIXES

        n, last = rejects
        return ToolError(
            f"{self.node}: the daemon rejects its readings ({n} rejected so far; the last: {last})",
            hint=REJECT_FIXES.get(
                last.split(":", 1)[0], "the daemon's log has one line per rejection"
            ),
        )

    def wait(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while not self._done.wait(max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
            rejects = self.rejects()
            if rejects:
                raise self._rejected_error(rejects)
        if self._got is not None:
            return self._got
        rejects = self.rejects()
        if rejects:
            raise self._rejected_error(rejects)
        raise ToolError(
            f"no reading from {self.node} reached the daemon within {timeout:.0f}s after the reset",
            hint="watch the board's console (`make repl PORT=...`): Wi-Fi, broker address, clock",
        )

    def stop(self) -> None:
        if self.resp is not None:
            # the reader thread may be blocked in readline, holding the stream: end the connection
            # under it first, or close() would wait for the daemon's next line
            sock = getattr(getattr(getattr(self.resp, "fp", None), "raw", None), "_sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._done.wait(5)  # the reader sees the end and lets go (two closers would race)
            self.resp.close()


def daemon_running(site) -> bool:
    try:
        from gridtwin.daemon.client import DaemonClient

        return bool(DaemonClient.for_site(site).health().get("ok", True))
    except Exception:  # no state file, not reachable: not running
        return False


# --- the whole thing ------------------------------------------------------------------------------


def deploy(
    site,
    node_id: str,
    port: str,
    *,
    tool: str = "mpremote",
    wait: bool = False,
    wait_timeout: float = 60.0,
    broker_host: str | None = None,
    broker_port: int | None = None,
    pki=None,
    boards_dir: pathlib.Path = BOARDS_DIR,
    arch: str | None = None,
    config_overrides: dict | None = None,
    build_dir: pathlib.Path | None = None,
    check_serial: bool = True,
    via_daemon: bool | None = None,
    firmware_dir: pathlib.Path = FIRMWARE_DIR,
    out=print,
) -> DeployResult:
    from gridtwin.flash import check_port
    from gridtwin.pki import PKI

    t0 = time.monotonic()
    if tool not in TRANSPORTS:
        raise ToolError(f"unknown transport '{tool}'", hint="use --tool mpremote or --tool ampy")
    pki = pki or PKI.for_site(site)
    if check_serial:
        check_port(port)
    transport = TRANSPORTS[tool](port)
    tmp = None
    if build_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gridtwin-deploy-")
        build_dir = pathlib.Path(tmp.name)
    try:
        files = build(
            site,
            node_id,
            build_dir,
            pki=pki,
            boards_dir=boards_dir,
            arch=arch,
            config_overrides=config_overrides,
            firmware_dir=firmware_dir,
            out=out,
        )
        result = DeployResult(node_id, port, files)
        # each step says what it is doing before it does it: the serial link is slow
        out(f"{node_id}: comparing {len(files)} file(s) with what {port} holds ...")
        on_board = board_hashes(transport, [*files, OTA_POINTER])
        for path, local in files.items():
            if on_board.get(path) == sha256_bytes(local.read_bytes()):
                result.unchanged.append(path)
            else:
                result.uploaded.append(path)
        result.removed = sorted(
            p
            for p, h in on_board.items()
            if p not in files and (p.startswith("gt/") or p == OTA_POINTER) and h is not None
        )
        if result.uploaded or result.removed:
            out(
                f"{node_id}: uploading {len(result.uploaded)} file(s)"
                + (f", removing {len(result.removed)}" if result.removed else "")
                + " ..."
            )
        transport.put([(files[p], p) for p in result.uploaded], result.removed)
        out(
            f"{node_id} on {port}: {len(result.uploaded)} file(s) uploaded ({result.bytes_sent} "
            f"bytes), {len(result.unchanged)} unchanged, {len(result.removed)} removed"
        )
        watcher = None
        if wait:
            if via_daemon is None:
                via_daemon = daemon_running(site)
            watcher = (
                DaemonWatcher(site, node_id).start(wait_timeout)
                if via_daemon
                else BirthWatcher(site, node_id, pki, host=broker_host, port=broker_port).start()
            )
        try:
            transport.reset()
            if watcher:
                out(
                    f"{node_id}: reset; waiting up to {wait_timeout:.0f} s for its birth message "
                    "..."
                )
                result.birth = watcher.wait(wait_timeout)
                fw = result.birth.get("fw", result.birth.get("version", "?"))
                via = result.birth.get("via") == "daemon"
                out(
                    f"{node_id} is online: boot {result.birth.get('boot', '?')}"
                    + (" (seen by the daemon)" if via else f", firmware {fw}")
                )
        finally:
            if watcher:
                watcher.stop()
        result.seconds = time.monotonic() - t0
        return result
    finally:
        if tmp:
            tmp.cleanup()
