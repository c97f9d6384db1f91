"""A virtual board behind a pseudo-terminal answers mpremote like a board on USB serial."""

import subprocess
import sys
import pathlib

MPREMOTE = str(pathlib.Path(sys.executable).parent / "mpremote")


def mpremote(port, *args, timeout=30):
    return subprocess.run(
        [MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=timeout
    )


def test_mpremote_runs_code_and_manages_files_on_a_pty_board(vboard, node_config):
    b = vboard(config=node_config(), world={"clock": {"mode": "real"}})
    pty = b.serve_pty()
    try:
        # the firmware is running; mpremote interrupts it and takes the raw REPL
        r = mpremote(pty.port, "exec", "import sys; print(sys.platform, 6 * 7)")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("linux 42")
        r = mpremote(pty.port, "fs", "cp", str(pathlib.Path(__file__)), ":copied.py")
        assert r.returncode == 0, r.stderr
        assert (b.flash / "copied.py").read_bytes() == pathlib.Path(__file__).read_bytes()
        r = mpremote(pty.port, "fs", "ls", ":")
        assert "config.json" in r.stdout and "copied.py" in r.stdout
    finally:
        pty.stop()
