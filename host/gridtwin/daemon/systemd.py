"""`gridtwin daemon install`: a systemd unit that restarts the daemon and confines it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from gridtwin.errors import ToolError

UNIT_NAME = "gridtwin-daemon.service"


def unit_name(instance: int = 1) -> str:
    """Instance 1 is gridtwin-daemon.service; instance K of [daemon] instances gets its own unit."""
    return UNIT_NAME if instance == 1 else f"gridtwin-daemon-{instance}.service"


def run_flags(
    *, twin: bool = False, instance: int = 1, metrics_port: int | None = None
) -> list[str]:
    """The `gridtwin daemon run` options the unit's ExecStart passes on (what `daemon install`
    got)."""
    flags = ["--twin"] if twin else []
    if instance != 1:
        flags += ["--instance", str(instance)]
    if metrics_port is not None:
        flags += ["--metrics-port", str(metrics_port)]
    return flags


def render_unit(
    site,
    *,
    user: str = "gridtwin",
    exe: str | None = None,
    twin: bool = False,
    instance: int = 1,
    metrics_port: int | None = None,
) -> str:
    exe = exe or shutil.which("gridtwin") or str(Path(sys.executable).parent / "gridtwin")
    site_path = Path(site.path).resolve()
    var = Path(site.var_dir).resolve()
    extra = "".join(
        " " + shlex.quote(f)
        for f in run_flags(twin=twin, instance=instance, metrics_port=metrics_port)
    )
    what = "ingest, storage, registry, commands" + (", digital twin" if twin else "")
    name = site.id if instance == 1 else f"{site.id} (instance {instance})"
    exec_start = f"{shlex.quote(exe)} --site {shlex.quote(str(site_path))} daemon run"
    exec_start += f" --log-format json{extra}"
    return f"""# Rendered by `gridtwin daemon install` for site '{site.id}': render, do not edit.
[Unit]
Description=GridTwin daemon for site {name}: {what}
# the broker on this host first; the daemon reconnects by itself if it starts later or restarts
After=network-online.target mosquitto.service
Wants=network-online.target
# more than 5 failures in a minute means something is wrong that a restart will not fix
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
Type=simple
User={user}
WorkingDirectory={site_path.parent}
ExecStart={exec_start}
# SIGTERM stores what was received and disconnects; unacknowledged messages stay with the broker
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=always
RestartSec=2
# the nodes' time: the daemon's SNTP responder (gridtwin.daemon.sntp) binds udp/123, and only that
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={var}
MemoryMax=400M

[Install]
WantedBy=multi-user.target
"""


def install(
    site, *, user: str, unit_dir: Path = Path("/etc/systemd/system"), start: bool = True, **run
) -> Path:
    """Write the unit (``run``: twin, instance, metrics_port as `render_unit` takes them) and start
    it."""
    unit = Path(unit_dir) / unit_name(run.get("instance", 1))
    try:
        unit.write_text(render_unit(site, user=user, **run))
    except OSError as exc:
        raise ToolError(
            f"cannot write {unit}: {exc}", hint="run with sudo, or use --dry-run to see the unit"
        ) from None
    if start:
        for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", unit.name]):
            try:
                subprocess.run(cmd, check=True, capture_output=True, text=True)
            except FileNotFoundError:
                raise ToolError(
                    "systemctl not found: this system does not run systemd",
                    hint=f"the unit is at {unit}; start `gridtwin daemon` another way",
                ) from None
            except subprocess.CalledProcessError as exc:
                raise ToolError(
                    f"{' '.join(cmd)} failed: {exc.stderr.strip()}",
                    hint=f"see `journalctl -u {unit.name}`",
                ) from None
    return unit
