"""Child processes that never outlive gridtwin: the one way the host starts mosquitto and boards.

``spawn(cmd, kind=..., name=...)`` starts a child in its own process group (so a terminal's Ctrl-C
or a supervisor's signal reaches gridtwin alone, and gridtwin decides how each child stops) with
``PR_SET_PDEATHSIG``: when gridtwin dies without cleaning up (kill -9, a crash), the kernel signals
the child. ``stop(proc)`` signals the child's whole group, waits, kills the group if it does not
end, and reaps it; every stop is recorded, so the verb can say what it stopped. Children still
registered when the interpreter exits are killed (``atexit``).

``stop_on_signals()`` is the verbs' context: inside it SIGTERM and SIGHUP (a closed terminal or
SSH session, ``kill``, ``timeout``, a supervisor) end the work as Ctrl-C does, by raising
``Terminated``, a ``KeyboardInterrupt``, so the verbs' one cleanup path runs; on leaving it prints
``gridtwin: stopped mosquitto (pid N) and 12 virtual boards``.

PDEATHSIG fires when the *thread* that started the child ends, not the process: start a child from
a thread that lives as long as the child (the main thread, or a supervising thread that waits on
it, as ``VirtualBoard`` does).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import threading

_PR_SET_PDEATHSIG = 1
try:  # resolved once here: the child, between fork and exec, only makes the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
except (OSError, AttributeError):  # not Linux: the atexit sweep and the verbs' cleanup remain
    _prctl = None

# SIGINT too: while children are being stopped a second Ctrl-C must not cut the cleanup short.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclasses.dataclass
class Child:
    kind: str  # "mosquitto", "virtual board": what the user is told was stopped
    name: str | None
    proc: subprocess.Popen
    seq: int = 0  # spawn order: the closing line names kinds in the order they were started


_lock = threading.Lock()
_live: dict[int, Child] = {}  # pid -> child, until reaped
_stopped: list[Child] = []  # every child stop() found running, in order
_seq = itertools.count()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP inside ``stop_on_signals()``: the verb stops as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def python_module(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``python -m module args`` with this interpreter and
    this gridtwin (the folder holding the package first on PYTHONPATH: a checkout or an installed
    wheel alike), for the helper processes of our own (analytics, its training rounds)."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", module, *args], env


def spawn(
    cmd: list[str],
    *,
    kind: str,
    name: str | None = None,
    death_signal: int = signal.SIGTERM,
    setup=None,
    **popen_kw,
) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **popen_kw)`` in a new session (own process group) that dies with us.
    ``setup``: more to do in the child before exec (after the session and the death signal)."""
    parent = os.getpid()

    def child_setup():
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect: nobody would stop us
            os._exit(1)
        if setup is not None:
            setup()

    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=child_setup, **popen_kw)
    with _lock:
        proc.gridtwin_child = Child(kind, name, proc, next(_seq))
        _live[proc.pid] = proc.gridtwin_child
    return proc


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # spawn() made the child its group's leader: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


def stop(
    proc: subprocess.Popen | None, *, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> bool:
    """Send ``sig`` to the child's process group, wait up to ``timeout``, then SIGKILL the group;
    reap it. Returns whether it was still running (and records it for ``stop_on_signals``)."""
    if proc is None:
        return False
    was_running = proc.poll() is None
    if was_running:
        _signal_group(proc, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    with _lock:
        _live.pop(proc.pid, None)
        child = getattr(proc, "gridtwin_child", None)
        if was_running and child is not None:
            _stopped.append(child)
    return was_running


def reaped(proc: subprocess.Popen) -> None:
    """The child ended by itself and was waited for: forget it (a board's reset, a failed start)."""
    with _lock:
        _live.pop(proc.pid, None)


def describe(children: list[Child]) -> str:
    """'mosquitto (pid 12) and 12 virtual boards'; one of a kind is named with its pid."""
    kinds: dict[str, list[Child]] = {}
    for c in sorted(children, key=lambda c: c.seq):
        kinds.setdefault(c.kind, []).append(c)
    parts = []
    for kind, cs in kinds.items():
        names = {c.name for c in cs}  # a board that reset ran several processes: one board
        if len(names) == 1:
            c = cs[-1]
            parts.append(f"{kind}{' ' + c.name if c.name else ''} (pid {c.proc.pid})")
        else:
            parts.append(f"{len(names)} {kind}s")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class Session:
    """What ``stop_on_signals`` yields: ``note`` is added to its closing line."""

    note = ""


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM and SIGHUP raise ``Terminated`` in the main thread (Ctrl-C raises KeyboardInterrupt
    as always); after the first, the three are ignored until the block is left, so the cleanup
    runs to its end. On leaving, one line says what was stopped inside the block."""

    def handler(signum, _frame):
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    mark = len(_stopped)
    session = Session()
    try:
        yield session
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        with _lock:
            done = _stopped[mark:]
        if done:
            try:
                print(
                    f"gridtwin: stopped {describe(done)}{session.note}", file=sys.stderr, flush=True
                )
            except OSError:  # the terminal that was closed (SIGHUP) is not there to read it
                pass


@atexit.register
def _kill_all() -> None:
    """Whatever is still running when the interpreter exits (an error escaped every cleanup)."""
    with _lock:
        left = list(_live.values())
    for c in left:
        if c.proc.poll() is not None:  # reaped now (or before): its pid may belong to another
            continue
        _signal_group(c.proc, signal.SIGKILL)
        try:
            c.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
