"""Every command line in README.md and docs/ runs in a test (issue #11: README examples that
failed).

The command lines are taken from the ```sh blocks of the documents themselves, so a doc edit is
tested as it is written. Each line is either run here, verbatim, in a shell in a copy of the example
site against a running virtual system (broker, daemon, a virtual node running the real firmware),
or it needs something this machine cannot give (a board on a serial port, root on a Pi, the
network) and ``ELSEWHERE`` names the test that runs what it does: a line in neither fails the test,
and so does an ``ELSEWHERE`` entry whose test is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.broker import free_port, healthz_ok, port_open
from fixtures.daemon_fleet import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# command (without its comment) -> the test that runs what it does, where it cannot run here as is
ELSEWHERE = {
    # over the air: the same verb against virtual boards on the test's broker
    "gridtwin ota --all --canary 2": (
        "tests/host/test_ota_bus.py::test_canary_rolled_back_stops_the_rest"
    ),
    "gridtwin ota status": "tests/host/test_ota_bus.py::test_cli_config_only_and_status",
    "make demo": "tests/host/test_demo.py::test_demo_scenario_end_to_end",
    "make test": "CI runs it (.ci/run is `make test`)",
    # building MicroPython for a Pi needs the network and an aarch64 machine
    "sudo apt-get install -y build-essential libffi-dev pkg-config git": "network",
    "git clone --depth 1 -b v1.28.0 https://github.com/micropython/micropython": "network",
    "make -C micropython/mpy-cross && make -C micropython/ports/unix": "network",
    "export MICROPYTHON=$PWD/micropython/ports/unix/build-standard/micropython": (
        "tests/firmware/test_compile.py::test_every_firmware_file_compiles"
    ),
    # root on a Pi: the same code runs against a folder of the test's own
    "sudo gridtwin broker install": (
        "tests/host/test_broker_config.py::test_install_plan_modes_and_owners"
    ),
    "sudo gridtwin daemon install --user pi": (
        "tests/host/test_cli_flags.py::test_daemon_install_passes_the_run_flags_to_the_units_execstart"
    ),
    "sudo gridtwin stack install": (
        "tests/host/test_stack.py::test_install_plan_gives_each_service_its_own_certificate"
    ),
    "sudo gridtwin stack doctor": (
        "tests/host/test_stack.py::test_doctor_follows_the_probe_and_says_what_to_fix"
    ),
    # a board on a serial port: the same verbs against a virtual board on a pseudo-terminal
    "make flash BOARD=esp32s3 PORT=/dev/ttyACM0": "tests/host/test_flash.py",
    "make deploy NODE=pdu_a PORT=/dev/ttyACM0": (
        "tests/host/test_deploy.py::test_deploy_lands_files_then_uploads_only_changes_and_the_board_boots_it"
    ),
    "make repl PORT=/dev/ttyACM0": "tests/firmware/test_pty_board.py",
    # docs/scaling.md: a site with [daemon] instances = 2
    "gridtwin pki issue --all": "tests/host/test_pki.py",
    "gridtwin daemon --instance 2": (
        "tests/host/test_ingest_durability.py::test_two_daemons_on_a_shared_subscription_split_the_stream"
    ),
    # docs/opcua.md: a site with the energy assets (the example site has none), server and collector
    **dict.fromkeys(
        [
            "gridtwin opcua serve",
            "gridtwin opcua collect --for 60",
            "gridtwin opcua browse",
            "gridtwin opcua points --machine inv1 --tag Power_Active",
        ],
        "tests/host/test_opcua_cli.py::test_serve_then_collect_then_points_and_signals_stop_serve",
    ),
    **dict.fromkeys(
        ["gridtwin pki issue --opcua collector", "gridtwin pki revoke opcua/collector"],
        "tests/host/test_opcua_cli.py::"
        "test_pki_issue_opcua_issues_keeps_and_revokes_the_rsa_application_certificate",
    ),
    **dict.fromkeys(
        ["gridtwin query inv1 Power_Active --since 15m", "gridtwin tail inv1"],
        "tests/host/test_opcua_daemon.py::test_the_daemon_collects_analyses_and_names_opcua_points",
    ),
}

# long-running commands: started, held until they show they work, then stopped with Ctrl-C
LONG_RUNNING = {
    "gridtwin broker run",
    "gridtwin daemon",
    "gridtwin vnode pdu_a",
    "gridtwin tail pdu_a",
    "gridtwin logs pdu_a --follow",
}


def command_lines() -> list[tuple[str, str]]:
    """(document, command) for every line of every ```sh block, comments and `&` dropped."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", doc.read_text(), re.S):
            for line in block.splitlines():
                cmd = re.sub(r"\s+#.*$", "", line).strip()
                cmd = re.sub(r"\s*&$", "", cmd)
                if cmd and not cmd.startswith("#"):
                    out.append((doc.name, re.sub(r"\s+", " ", cmd)))
    return out


def _test_exists(ref: str) -> bool:
    if not ref.startswith("tests/"):
        return True  # a reason, not a test
    path, _, name = ref.partition("::")
    f = ROOT / path
    return f.exists() and (
        not name or re.search(rf"(?m)^(async )?def {re.escape(name)}\(", f.read_text()) is not None
    )


def test_every_documented_command_is_run_here_or_by_a_named_test():
    lines = command_lines()
    assert len(lines) > 20
    missing = [
        (doc, c)
        for doc, c in lines
        if c not in ELSEWHERE and c not in RUN_HERE and c not in LONG_RUNNING
    ]
    assert not missing, f"documented commands no test runs: {missing}"
    gone = {c: ref for c, ref in ELSEWHERE.items() if not _test_exists(ref)}
    assert not gone, f"ELSEWHERE names tests that do not exist: {gone}"


# the short commands run verbatim against the running system, each must exit 0 and print no
# traceback
RUN_HERE = [
    "gridtwin pki init --nodes",
    "gridtwin nodes",
    "gridtwin nodes pdu_a",
    "gridtwin cmd pdu_a set_fault on=true",
    "gridtwin query pdu_a load_kw --since 1h --csv",
    "gridtwin query pdu_a load_kw --since 1h --every 1m --json",
    # docs/analytics.md
    "gridtwin alerts",
    "gridtwin alerts --active",
    "gridtwin alerts --since 1h --json",
    "gridtwin kpi",
    "gridtwin kpi --since 1h --json",
]


class System:
    """The example site in a folder of its own, its CLI on PATH, its processes started as the
    README starts them and all stopped at the end."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.procs: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONUNBUFFERED": "1",
        }

    def run(self, cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", cmd],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, cmd: str, log: str) -> subprocess.Popen:
        out = open(self.dir / log, "wb")
        p = subprocess.Popen(
            ["bash", "-c", f"exec {cmd}"],
            cwd=self.dir,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        p.log = self.dir / log
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 20) -> int:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise AssertionError(
                    f"{p.args} did not stop on Ctrl-C: {p.log.read_text()[-1500:]}"
                ) from None
        return p.returncode

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


@pytest.fixture
def system(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    text = (ROOT / "site.toml").read_text()
    # the same site on ports of its own (tests run side by side); nothing else changes
    text = re.sub(r"(?m)^port = 8883$", f"port = {free_port()}", text)
    text += f"\n[daemon]\nmetrics_port = {free_port()}\n"
    (folder / "site.toml").write_text(text)
    s = System(folder)
    yield s
    s.close()
    shutil.rmtree(folder / "var" / "vnodes", ignore_errors=True)


def _clean(cp, cmd):
    assert "Traceback" not in cp.stdout + cp.stderr, f"{cmd}:\n{cp.stderr[-2000:]}"
    assert cp.returncode == 0, (
        f"{cmd} exited {cp.returncode}:\n{cp.stdout[-1500:]}\n{cp.stderr[-1500:]}"
    )
    return cp


def test_the_documented_commands_run_against_a_virtual_system(system):
    _clean(system.run("gridtwin pki init --nodes"), "pki init")

    broker = system.start("gridtwin broker run", "broker.log")
    port = int(re.search(r"(?m)^port = (\d+)$", (system.dir / "site.toml").read_text()).group(1))
    wait_for(lambda: port_open(port) or _died(broker), 20, "the broker to listen")
    daemon = system.start("gridtwin daemon", "daemon.log")
    metrics = int(
        re.search(r"(?m)^metrics_port = (\d+)$", (system.dir / "site.toml").read_text()).group(1)
    )
    wait_for(lambda: healthz_ok(metrics) or _died(daemon), 30, "the daemon to be healthy")
    node = system.start("gridtwin vnode pdu_a", "vnode.log")
    wait_for(
        lambda: "online" in _line_of(system.run("gridtwin nodes").stdout, "pdu_a") or _died(node),
        60,
        "pdu_a online in `gridtwin nodes`",
    )
    wait_for(
        lambda: (
            system.run("gridtwin query pdu_a load_kw --since 1h --csv").stdout.count("\n") >= 3
            or _died(node)
        ),
        60,
        "three readings of pdu_a",
    )

    tail = system.start("gridtwin tail pdu_a", "tail.log")
    wait_for(
        lambda: re.search(r"\bpdu_a\b.*#\d+", tail.log.read_text()) or _died(tail),
        30,
        "a live reading in `gridtwin tail`",
    )
    logs = system.start("gridtwin logs pdu_a --follow", "logs.log")

    for cmd in RUN_HERE[1:]:
        _clean(system.run(cmd), cmd)

    for p, what in (
        (logs, "logs --follow"),
        (tail, "tail"),
        (node, "vnode"),
        (daemon, "daemon"),
        (broker, "broker"),
    ):
        code = system.stop(p)
        text = p.log.read_text()
        assert "Traceback" not in text, f"{what}: {text[-2000:]}"
        assert code in (0, 130, -signal.SIGINT), f"{what} exited {code}: {text[-1500:]}"


def _died(p) -> bool:
    if p.poll() is not None:
        raise AssertionError(f"{p.args} exited {p.returncode}: {p.log.read_text()[-2000:]}")
    return False


def _line_of(text: str, word: str) -> str:
    return next((ln for ln in text.splitlines() if word in ln.split()), "")
