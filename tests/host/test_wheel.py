"""gridtwin runs from its wheel, away from the checkout (issue #14 item 1).

The wheel is built from the sources without the network, installed into a fresh venv in a
temporary folder (its dependencies from a wheelhouse made of this venv's installed distributions,
no index), and from a folder holding only a copy of the example site that venv's `gridtwin` runs
`doctor`, `pki init --nodes`, `broker run`, `daemon` and `vnode pdu_a`, whose readings reach the
store (`query`). The firmware, the board files and the virtual-board shim all come from the
installed package: the test checks that every path it uses lies in the new venv.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from fixtures.broker import free_port, healthz_ok, port_open
from fixtures.daemon_fleet import wait_for
from gridtwin.micropython import find_micropython, find_mpy_cross

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

ROOT = Path(__file__).resolve().parents[2]
# what the build reads: the package (with its symlinks to firmware/ and boards/) and the metadata
SOURCES = ("pyproject.toml", "README.md", "host", "firmware", "boards")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def repack(name: str, out: Path) -> Path:
    """A wheel of an installed distribution, from its RECORD: what pip unpacked, packed back (the
    scripts pip wrote into bin/ are left out, pip writes them again from entry_points.txt)."""
    dist = distribution(name)
    # every Tag line, as one compressed tag set (pytz has py2-none-any and py3-none-any:
    # py2.py3-none-any)
    tags = [
        ln.split(":", 1)[1].strip().split("-")
        for ln in dist.read_text("WHEEL").splitlines()
        if ln.startswith("Tag:")
    ]
    tag = "-".join(".".join(dict.fromkeys(t[i] for t in tags)) for i in range(3))
    info = next(
        f.parts[0] for f in dist.files if f.name == "METADATA" and f.parts[0].endswith(".dist-info")
    )
    whl = out / f"{_norm(dist.metadata['Name']).replace('-', '_')}-{dist.version}-{tag}.whl"
    record = []
    with zipfile.ZipFile(whl, "w") as z:
        for f in dist.files:
            rel = str(f)
            if (
                rel.startswith("..")
                or "__pycache__" in rel
                or rel.startswith(f"{info}/")
                and rel.rsplit("/", 1)[1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
            ):
                continue
            data = Path(f.locate()).read_bytes()
            z.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return whl


def wheelhouse(wheel: Path) -> list[str]:
    """The run-time dependencies the built wheel declares, transitively, as wheels beside it, made
    from this venv's installed distributions (`make setup` installs them)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        todo = (
            email.parser.HeaderParser().parsestr(z.read(meta).decode()).get_all("Requires-Dist")
            or []
        )
    seen = set()
    while todo:
        req = Requirement(todo.pop())
        if _norm(req.name) in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(_norm(req.name))
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            pytest.fail(f"gridtwin needs {req} and this venv lacks it: run `make setup`")
        repack(req.name, wheel.parent)
        todo.extend(dist.requires or [])
    return sorted(seen)


class Installed:
    """gridtwin in a venv of its own; commands run in ``site`` with that venv first on PATH and the
    project's venv nowhere on it (MicroPython and mpy-cross are named by MICROPYTHON, MPY_CROSS)."""

    def __init__(self, venv: Path, site: Path):
        self.venv, self.site, self.procs = venv, site, []
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "GT_", "MICROPY"))
        }
        path = [
            p
            for p in os.environ["PATH"].split(os.pathsep)
            if Path(p) != Path(sys.executable).parent
        ]
        self.env = {
            **keep,
            "PATH": os.pathsep.join([str(venv / "bin"), *path]),
            "PYTHONUNBUFFERED": "1",
            "PYTHONNOUSERSITE": "1",
            "PIP_CONFIG_FILE": os.devnull,
            "MICROPYTHON": find_micropython(),
            "MPY_CROSS": find_mpy_cross(),
        }

    def run(self, *args: str, timeout: float = 60, ok: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run(
            args, cwd=self.site, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert "Traceback" not in cp.stdout + cp.stderr, (
            f"{args}:\n{cp.stdout[-1500:]}\n{cp.stderr[-2000:]}"
        )
        assert (cp.returncode == 0) == ok, (
            f"{args} exited {cp.returncode}:\n{cp.stdout[-1500:]}\n{cp.stderr[-1500:]}"
        )
        return cp

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.site / f"{name}.log"
        p = subprocess.Popen(
            args,
            cwd=self.site,
            env=self.env,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        p.log = log
        self.procs.append(p)
        return p

    def died(self, p: subprocess.Popen) -> bool:
        if p.poll() is not None:
            raise AssertionError(f"{p.args} exited {p.returncode}: {p.log.read_text()[-2000:]}")
        return False

    def stop_all(self):
        import signal

        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


@pytest.fixture
def installed(tmp_path):
    src, wheels, venv, site = (tmp_path / n for n in ("src", "wheels", "venv", "site"))
    src.mkdir()
    for name in SOURCES:  # a clean copy: no build/ or egg-info of the checkout gets into the wheel
        s = ROOT / name
        if s.is_dir():
            shutil.copytree(
                s,
                src / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
            )
        else:
            shutil.copy2(s, src / name)
    wheels.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--isolated"]
    # the venv's own setuptools builds it (pinned in the dev extras), so no index is asked for one
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, src],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, f"pip wheel failed (run `make setup`?):\n{built.stderr[-3000:]}"
    [wheel] = wheels.glob("gridtwin-*.whl")
    deps = wheelhouse(wheel)
    assert {"cryptography", "paho-mqtt", "rich", "numpy"} <= set(deps)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    inst = subprocess.run(
        [
            venv / "bin/python",
            "-m",
            "pip",
            "--disable-pip-version-check",
            "--isolated",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            wheels,
            "gridtwin",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inst.returncode == 0, f"pip install from the wheelhouse failed:\n{inst.stderr[-3000:]}"
    site.mkdir()
    sys_ = Installed(venv, site)
    yield sys_
    sys_.stop_all()


def test_the_wheel_runs_away_from_the_checkout(installed):
    where = json.loads(
        installed.run(
            "python",
            "-c",
            "import json, gridtwin, gridtwin.resources as r, gridtwin.site as s; print(json.dumps("
            "[gridtwin.__file__, str(r.firmware_dir()), str(r.boards_dir()), str(r.shim_dir()), "
            "str(s.example_site_path())]))",
        ).stdout
    )
    for (
        path
    ) in where:  # the package and every file it runs come from the new venv, none from the checkout
        assert Path(path).resolve().is_relative_to(installed.venv.resolve()), where
    from gridtwin.micropython import firmware_sources
    from gridtwin.resources import FIRMWARE_DIR, SHIM_DIR

    shipped = sorted(p.relative_to(where[1]).as_posix() for p in firmware_sources(Path(where[1])))
    assert shipped == sorted(
        p.relative_to(FIRMWARE_DIR).as_posix() for p in firmware_sources(FIRMWARE_DIR)
    )
    assert sorted(
        p.relative_to(where[3]).as_posix()
        for p in Path(where[3]).rglob("*.py")
        if "__pycache__" not in p.parts
    ) == sorted(
        p.relative_to(SHIM_DIR).as_posix()
        for p in SHIM_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    )

    # the example site, on ports of its own
    text = Path(where[4]).read_text()
    broker_port, metrics_port = free_port(), free_port()
    text = re.sub(r"(?m)^port = 8883$", f"port = {broker_port}", text)
    (installed.site / "site.toml").write_text(text + f"\n[daemon]\nmetrics_port = {metrics_port}\n")

    doctor = installed.run("gridtwin", "doctor").stdout
    assert re.search(r"(?m)^ok\s+install\s+firmware \d+ files", doctor), doctor
    installed.run("gridtwin", "pki", "init", "--nodes")
    broker = installed.start("broker", "gridtwin", "broker", "run")
    wait_for(lambda: port_open(broker_port) or installed.died(broker), 20, "the broker to listen")
    daemon = installed.start("daemon", "gridtwin", "daemon")
    wait_for(
        lambda: healthz_ok(metrics_port) or installed.died(daemon), 30, "the daemon to be healthy"
    )
    node = installed.start("vnode", "gridtwin", "vnode", "pdu_a")

    def stored() -> int:
        out = installed.run(
            "gridtwin", "query", "pdu_a", "load_kw", "--since", "1h", "--csv"
        ).stdout
        return len(out.strip().splitlines()) - 1  # the header

    wait_for(lambda: stored() >= 1 or installed.died(node), 60, "a reading of pdu_a in the store")
    installed.stop_all()
    for p in installed.procs:
        assert "Traceback" not in p.log.read_text(), p.log.read_text()[-2000:]

    # an installation that lost its files says what is missing and where it looked (it used to blame
    # the site's board name, and to build 0 firmware files without a word)
    from gridtwin.resources import REINSTALL

    firmware, boards = Path(where[1]), Path(where[2])
    boards.rename(boards.with_name("boards.gone"))
    cp = installed.run("gridtwin", "vnode", "pdu_a", ok=False)
    assert (
        cp.stderr.strip()
        == f"gridtwin: this gridtwin has no board files (*.json): looked in {boards} ({REINSTALL})"
    )
    boards.with_name("boards.gone").rename(boards)
    shutil.rmtree(firmware)
    cp = installed.run("gridtwin", "vnode", "pdu_a", ok=False)
    assert (
        cp.stderr.strip()
        == f"gridtwin: this gridtwin has no firmware (main.py and gt/): looked in {firmware} "
        f"({REINSTALL})"
    )
    assert re.search(
        r"(?m)^FAIL install\s+this gridtwin has no firmware .*: looked in "
        rf"{re.escape(str(firmware))}$",
        installed.run("gridtwin", "doctor", ok=False).stdout,
    )
