"""One shared firmware build: `gridtwin.micropython.build_firmware` (issue #19, item 10).

Five `gridtwin vnode` started at once each deleted and rebuilt one shared firmware folder, so a
board could start from a folder another had just emptied (1 of 5 failed). A build is now keyed by
its content and made once: the first caller compiles into a temporary folder and renames it into
place under a file lock; the others wait for it and use the same files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

from gridtwin.micropython import FIRMWARE_DIR, build_firmware, compile_firmware

BUILD = "import sys; from gridtwin.micropython import build_firmware; print(build_firmware(sys.argv[1]))"


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_five_builds_started_at_once_by_processes_all_succeed_with_identical_output(tmp_path, micropython):
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    built = Path(paths.pop())
    ref = tmp_path / "ref"
    compile_firmware(ref)
    assert tree(built) == tree(ref) and len(tree(ref)) >= 15
    # the build and its lock file, nothing half-built left beside them
    assert sorted(p.name for p in cache.iterdir()) == sorted([built.name, built.name + ".lock"])
    # a later call reuses it as it is (same files, not rebuilt)
    ino = (built / "gt" / "app.mpy").stat().st_ino
    assert build_firmware(cache) == built and (built / "gt" / "app.mpy").stat().st_ino == ino


def test_five_builds_started_at_once_by_threads_share_one(tmp_path, micropython):
    cache = tmp_path / "cache"
    got, errors = [], []
    start = threading.Barrier(5)

    def build():
        start.wait()
        try:
            got.append(build_firmware(cache))
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(got) == 5 and len(set(got)) == 1
    assert tree(got[0]) == tree(build_firmware(cache))


def test_a_source_change_is_a_new_build_and_the_old_one_stays(tmp_path, micropython):
    cache = tmp_path / "cache"
    first = build_firmware(cache)
    src = tmp_path / "src"
    shutil.copytree(FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "gt" / "extra.py").write_text("X = 1\n")
    second = build_firmware(cache, src)
    assert second != first and (second / "gt" / "extra.mpy").is_file()
    assert first.is_dir() and not (first / "gt" / "extra.mpy").exists()  # a board running from it keeps it
