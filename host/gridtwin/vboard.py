"""Virtual boards: the real firmware on the MicroPython unix port, with the fake-hardware shim.

A virtual board is a folder. ``flash/`` is its filesystem (config.json, boot.json, the outbox
spill, and the firmware when deployed); ``state/`` is what survives a reset outside the flash (the
reset cause, RTC memory, world time); ``world.json`` describes the fake world (see
``gridtwin/virtual/shim/_world.py``). The runner starts the interpreter on ``_boot_board.py``
(boot.py then main.py, as the ESP32 does) and starts it again whenever the chip "resets" (exit
status RESET_EXIT), so watchdog resets and reboots behave as on hardware.

Two ways to run one:
- ``VirtualBoard.start()``: stdout captured line by line for tests and the demo (``wait_for``).
- ``VirtualBoard.serve_pty()``: behind a pseudo-terminal, the REPL and raw REPL as on a USB serial
  port, for mpremote (deploy, repl).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import select
import signal
import subprocess
import threading
import time

from gridtwin import procs
from gridtwin.errors import GridTwinError
from gridtwin.micropython import find_micropython
from gridtwin.resources import FIRMWARE_DIR, shim_dir

RESET_EXIT = 75  # virtual/shim/_world.py: the chip reset, start it again
# The firmware's GC heap: ESP32-like, and stricter, since the unix port's objects are 64-bit.
DEFAULT_HEAP = "96k"
# What a node gets in the demo and `gridtwin vnode`: issue #20's 96 KB. On this 64-bit port a GC
# block is 32 bytes and a pointer 8 (16 and 4 on the ESP32), so the same objects take 1.3-2x the
# room. Every example node connects over TLS with 12 KB or more free after the CONNACK, no crash
# boot (tests/firmware/test_fleet_heap.py), five vnodes started at once too (pv1 ~12.7 KB,
# tests/host/test_firmware_build.py); pv1's failed connects there came from the shim's absolute
# path moving the heap's layout (see boot_args()).
NODE_HEAP = "96k"
# Room in the interpreter's heap for the shim itself (its modules, and the chip models with their
# instances). The shim fills what it does not use with ballast, so the firmware sees exactly its
# budget.
SHIM_ALLOWANCE = 80 * 1024


LOCK_FILE = "board.lock"
# re-entrant: release_folder also runs from a board's weakref finalizer, which the garbage collector
# may call on this very thread while hold_folder holds the lock (a plain Lock deadlocked there)
_held_lock = threading.RLock()
_held: dict[
    pathlib.Path, list
] = {}  # board folder -> [its open lock file, boards of ours using it]


def hold_folder(root: os.PathLike | str, name: str | None = None) -> pathlib.Path:
    """Take a board folder for this process, or fail naming who has it.

    One folder is one board: two interpreters on it would share its flash and, with the same
    certificate, take the MQTT session from each other in a loop. The lock is an flock on
    ``board.lock`` (the kernel drops it when the holder dies, however it dies), and the file says
    who holds it. Boards of this process may share a folder (a test that builds a board again on
    the same flash): the lock is counted, and dropped with the last (``release_folder``)."""
    import fcntl

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    with _held_lock:
        if key in _held:
            _held[key][1] += 1
            return key
        f = open(key / LOCK_FILE, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid, _, started = f.read().strip().partition(" ")
            f.close()
            raise GridTwinError(
                f"virtual board {name or root.name} is already running "
                f"(pid {pid or 'unknown'}, started {started or 'at an unknown time'}); "
                f"stop it first"
            ) from None
        f.truncate(0)
        f.write(f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        _held[key] = [f, 1]
        return key


def release_folder(key: pathlib.Path) -> None:
    with _held_lock:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _held[key]
            entry[0].close()  # closing the file drops the flock


def heap_bytes(size: str | int) -> int:
    """'96k' -> 98304 (k, m suffixes as micropython's -X heapsize takes them)."""
    if isinstance(size, int):
        return size
    s = size.strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(s[-1:], 1)
    return int(s.rstrip("km")) * mult


@contextlib.contextmanager
def _waiting(cond: threading.Condition):
    """``with cond:`` for a wait on the main thread, where Ctrl-C raises KeyboardInterrupt between
    any two bytecodes. One that lands inside ``cond.wait()`` after it let go of the lock, before it
    took it back, made ``with``'s release fail (RuntimeError: cannot release un-acquired lock), and
    that error hid the KeyboardInterrupt: `gridtwin vnode` ended in a traceback, exit 1, where
    Ctrl-C stops the board (seen once in CI). The condition's lock is an RLock, so a release that
    is not ours fails instead of freeing another thread's hold; it is ignored only on the way out
    of an exception."""
    cond.acquire()
    try:
        yield
    except BaseException:
        with contextlib.suppress(RuntimeError):
            cond.release()
        raise
    cond.release()


class VirtualBoard:
    def __init__(
        self,
        root: os.PathLike | str,
        *,
        config: dict | None = None,
        world: dict | None = None,
        heap: str = DEFAULT_HEAP,
        firmware: pathlib.Path | None = FIRMWARE_DIR,
        env: dict | None = None,
        max_resets: int = 20,
        name: str | None = None,
    ):
        """``heap``: the firmware's GC heap budget (the shim's own share comes on top of it).
        ``firmware``: a folder put on the board's import path (source or compiled .mpy), or
        None when the firmware has been deployed into flash/ itself. ``name``: what messages call
        the board (default: its folder's name). The folder is this board's while the object lives
        (``hold_folder``): a second process running it is refused before anything is written."""
        self.root = pathlib.Path(root)
        self.name = name or self.root.name
        import weakref

        weakref.finalize(self, release_folder, hold_folder(self.root, self.name))
        self.flash = self.root / "flash"
        self.state = self.root / "state"
        self.world_path = self.root / "world.json"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        self.firmware = pathlib.Path(firmware) if firmware else None
        self.extra_env = env or {}
        self.max_resets = max_resets
        self.lines: list[str] = []
        self.boots = 0
        self.exit_code: int | None = None
        self._cond = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        # len(lines) when stop() was asked: what the board printed after it is its answer to our
        # Ctrl-C, not news about the firmware (one landing inside a garbage collection leaves the
        # unix port's heap locked and prints a "heap is locked" MemoryError)
        self.stopped_at: int | None = None
        self._console = None
        # called with each console line as it arrives (gridtwin vnode prints them)
        self.on_line = None
        if config is not None:
            self.write_config(config)
        if world is not None:
            self.write_world(world)
        elif not self.world_path.exists():
            self.write_world({})

    # --- the board's files ---
    def write_config(self, cfg: dict | str) -> None:
        text = cfg if isinstance(cfg, str) else json.dumps(cfg)
        (self.flash / "config.json").write_text(text)

    def write_world(self, world: dict) -> None:
        self.world_path.write_text(json.dumps(world))

    def install_identity(self, pki, node: str) -> None:
        """The node's DER certificate and key and the site CA onto the flash, under the names the
        rendered config gives them (ca.der, cert.der, key.der), as `gridtwin deploy` puts them."""
        import shutil

        for src, name in (
            (pki.ca_der_path, "ca.der"),
            (pki.der_cert_path(node), "cert.der"),
            (pki.der_key_path(node), "key.der"),
        ):
            shutil.copyfile(src, self.flash / name)
        os.chmod(self.flash / "key.der", 0o600)

    def read_flash(self, name: str) -> str:
        return (self.flash / name).read_text()

    # --- the interpreter ---
    def command(self, script: str | None = "_boot_board.py") -> list[str]:
        cmd = [find_micropython(), "-X", f"heapsize={heap_bytes(self.heap) + SHIM_ALLOWANCE}"]
        return cmd + self.boot_args(script) if script else cmd

    def boot_args(self, script: str = "_boot_board.py") -> list[str]:
        """The interpreter's arguments that run the shim's ``script``: imported by name from the
        short link on MICROPYPATH (see _link), not run by path. For a script the interpreter puts
        the realpath of its folder first on sys.path, so every shim module got the package's
        absolute path as an interned string, and the strings' lengths moved the heap's layout with
        the checkout's folder: pv1 failed every TLS connect at 96 KB from /tmp/ci/main (5 runs of
        5), never from /work/main."""
        self._link("shim", shim_dir())
        return ["-c", f"import {script.removesuffix('.py')}"]

    def _link(self, name: str, target: pathlib.Path) -> str:
        """A link beside the flash to ``target``, as a path relative to the board's working folder
        (the flash). MicroPython keeps each imported module's path as an interned string on the
        heap: a firmware under a long folder (a deep checkout, pytest's temporary folders) cost
        the node up to 3 KB more than the short "gt/app.mpy" of a real board, enough to crash the
        fullest nodes at 96 KB depending on where they were run from."""
        link = self.root / name
        want = str(pathlib.Path(target).resolve())
        if not (link.is_symlink() and os.readlink(link) == want):
            tmp = self.root / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(want)
            os.replace(tmp, link)
        return "../" + name

    def environ(self) -> dict[str, str]:
        # "" is the flash, first as on the ESP32; every folder by a short path (see _link)
        path = [self._link("shim", shim_dir()), "", ".frozen"]
        fw = self._link("fw", self.firmware) if self.firmware else ""
        if fw:
            path.append(fw)
        env = dict(os.environ)
        env.update(
            {
                "MICROPYPATH": ":".join(path),
                # relative to the flash (the interpreter's working folder): the heap's layout, and
                # so what fits in it, is the same wherever the board's folder is
                "GT_WORLD": "../" + self.world_path.name,
                "GT_BOARD_STATE": "../" + self.state.name,
                "GT_FIRMWARE": fw,
                "GT_FW_HEAP": str(heap_bytes(self.heap)),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> "VirtualBoard":
        self._console = open(self.root / "console.log", "a")
        self._thread = threading.Thread(
            target=self._supervise, name=f"vboard-{self.root.name}", daemon=True
        )
        self._thread.start()
        return self

    def _supervise(self) -> None:
        # This thread starts each interpreter and outlives it, as procs.spawn's death signal needs.
        rc = -signal.SIGINT  # stopped before it started
        while True:
            with self._cond:  # stop() either sees this interpreter or keeps the next from starting
                if self._stopping:
                    break
                self.boots += 1
                self._proc = procs.spawn(
                    self.command(),
                    kind="virtual board",
                    name=self.name,
                    cwd=self.flash,
                    env=self.environ(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    bufsize=1,
                )
            for line in self._proc.stdout:
                self._add(line.rstrip("\n"))
            rc = self._proc.wait()
            procs.reaped(self._proc)
            if rc != RESET_EXIT or self._stopping or self.boots > self.max_resets:
                break
        with self._cond:
            self.exit_code = rc
            self._cond.notify_all()

    def _add(self, line: str) -> None:
        if self._console:
            self._console.write(line + "\n")
            self._console.flush()
        if self.on_line is not None:
            self.on_line(line)
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_for(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        """Wait until an output line (from index ``start`` on) matches the regex; return the match.
        Raises TimeoutError with the last lines of output when it does not come."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with _waiting(self._cond):
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.exit_code is not None and i >= len(self.lines)):
                    tail = "\n".join(self.lines[-25:])
                    why = "exited" if self.exit_code is not None else "timed out"
                    raise TimeoutError(f"{why} waiting for /{pattern}/; last output:\n{tail}")
                self._cond.wait(left)

    def wait_exit(self, timeout: float | None = 60.0) -> int:
        with _waiting(self._cond):
            if not self._cond.wait_for(lambda: self.exit_code is not None, timeout):
                raise TimeoutError(
                    "board still running; last output:\n" + "\n".join(self.lines[-25:])
                )
            return self.exit_code

    def run(self, timeout: float = 120.0) -> int:
        """Start and wait until the board stops by itself (the world's clock.stop_at_ms)."""
        self.start()
        try:
            return self.wait_exit(timeout)
        finally:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Ctrl-C, as on the REPL; then kill if it does not end."""
        with self._cond:
            self._stopping = True
            p = self._proc
        if self.stopped_at is None:
            self.stopped_at = len(self.lines)
        procs.stop(p, sig=signal.SIGINT, timeout=timeout)
        if self._thread:
            self._thread.join(timeout)
        if self._console:
            self._console.close()
            self._console = None

    def grep(self, pattern: str) -> list[re.Match]:
        rx = re.compile(pattern)
        return [m for m in map(rx.search, self.lines) if m]

    # --- behind a pseudo-terminal, for mpremote ---
    def serve_pty(self) -> "PtyBoard":
        return PtyBoard(self).start()


_RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"


class PtyBoard:
    """The board's REPL on a pseudo-terminal, like a USB serial port: ``.port`` is the path for
    mpremote. MicroPython itself runs on a second pty; a thread copies bytes between the two (so
    the interpreter sees a terminal, and the port can be opened and closed like a serial device).
    When the interpreter exits (a reset, Ctrl-D on the REPL) it is started again."""

    def __init__(self, board: VirtualBoard):
        self.board = board
        self.port = ""
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self.boots = 0

    def start(self) -> "PtyBoard":
        import tty

        self._user_master, user_slave = os.openpty()
        tty.setraw(user_slave)
        self.port = os.ttyname(user_slave)
        self._user_slave = user_slave  # kept open so the port exists while nobody has it open
        self._spawn()
        self._thread = threading.Thread(target=self._pump, daemon=True, name="vboard-pty")
        self._thread.start()
        return self

    def _spawn(self, raw: bool = False) -> None:
        import termios

        self.boots += 1
        mp_master, mp_slave = os.openpty()
        self._mp_master = mp_master
        # No output processing: MicroPython's REPL writes "\r\n" itself, as a board does on UART.
        attrs = termios.tcgetattr(mp_slave)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(mp_slave, termios.TCSANOW, attrs)

        def controlling_tty():
            # the pty becomes the interpreter's terminal (in the session procs.spawn made), so
            # Ctrl-C arrives as SIGINT as on a board
            import fcntl

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = self.board.environ()
        if raw:
            env["GT_SKIP_MAIN"] = "1"  # a soft reset into the raw REPL runs boot.py only
        self._hidden = b"" if raw else None
        self._proc = procs.spawn(
            self.board.command(script=None) + ["-i"] + self.board.boot_args(),
            kind="virtual board",
            name=self.board.name,
            setup=controlling_tty,
            cwd=self.board.flash,
            env=env,
            stdin=mp_slave,
            stdout=mp_slave,
            stderr=mp_slave,
        )
        os.close(mp_slave)

    def _restart(self, raw: bool) -> None:
        procs.stop(self._proc, sig=signal.SIGKILL)
        os.close(self._mp_master)
        self._spawn(raw)

    def _pump(self) -> None:
        tail = b""  # the last output bytes, to know when the raw REPL prompt is showing
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._user_master, self._mp_master], [], [], 0.1)
            except (OSError, ValueError):
                return
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if fd == self._mp_master:
                    if not data:  # the interpreter ended: the board resets and comes back
                        if self._stop.is_set():
                            return
                        self._restart(raw=False)
                        break
                    if self._hidden is not None:
                        # coming up after a soft reset: take it into the raw REPL unseen
                        sent = self._hidden.find(b">>> ") >= 0
                        self._hidden += data
                        if not sent and self._hidden.find(b">>> ") >= 0:
                            os.write(self._mp_master, b"\x01")
                        if self._hidden.endswith(_RAW_PROMPT):
                            self._hidden = None
                            os.write(self._user_master, b"raw REPL; CTRL-B to exit\r\n>")
                            tail = _RAW_PROMPT
                        continue
                    tail = (tail + data)[-64:]
                    os.write(self._user_master, data)
                else:
                    if data == b"\x04" and tail.endswith(_RAW_PROMPT):
                        # Ctrl-D on an empty raw REPL: a soft reset, as mpremote expects it
                        os.write(self._user_master, b"\r\nMPY: soft reboot\r\n")
                        tail = b""
                        self._restart(raw=True)
                        break
                    tail = b""
                    os.write(self._mp_master, data)

    def stop(self) -> None:
        self._stop.set()
        procs.stop(self._proc, sig=signal.SIGKILL)
        self._thread.join(2)
        for fd in (self._user_master, self._user_slave):
            try:
                os.close(fd)
            except OSError:
                pass
