"""`gridtwin stack render|install`: every file of the stack, with its mode and owner, under a root.

Services read only their own copies: Telegraf gets the ``telegraf`` identity's certificate and key
(key 0640 root:telegraf), Grafana the ``grafana`` identity's (0640 root:grafana); the site's certs/
folder stays private. Tokens are not in any of these files (see gridtwin.stack.influx).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gridtwin.errors import PKIError, ToolError
from gridtwin.pki import GRAFANA_IDENTITY, TELEGRAF_IDENTITY
from gridtwin.stack import grafana, influx, telegraf

SERVICES = ("influxdb", "telegraf", "grafana-server")


@dataclass
class PlannedFile:
    path: str  # absolute, as on the Pi
    content: bytes | None  # None: a directory
    mode: int
    owner: str = "root"
    group: str = "root"


def plan(site, pki) -> list[PlannedFile]:
    def read(p: Path) -> bytes:
        try:
            return Path(p).read_bytes()
        except FileNotFoundError:
            raise PKIError(
                f"{p} is missing",
                hint="run `gridtwin pki init` (it issues the telegraf and grafana certificates)",
            ) from None

    files = [
        PlannedFile(str(Path(telegraf.CONF).parent), None, 0o755),
        PlannedFile(telegraf.CONF, telegraf.render(site).encode(), 0o640, "root", "telegraf"),
        PlannedFile(telegraf.CERTS, None, 0o750, "root", "telegraf"),
        PlannedFile(f"{telegraf.CERTS}/ca.crt", read(pki.ca_cert_path), 0o644),
        PlannedFile(
            f"{telegraf.CERTS}/telegraf.crt", read(pki.cert_path(TELEGRAF_IDENTITY)), 0o644
        ),
        PlannedFile(
            f"{telegraf.CERTS}/telegraf.key",
            read(pki.key_path(TELEGRAF_IDENTITY)),
            0o640,
            "root",
            "telegraf",
        ),
        PlannedFile("/etc/influxdb", None, 0o755),
        PlannedFile("/etc/influxdb/config.toml", influx.render_config(site).encode(), 0o644),
        PlannedFile(grafana.CERTS, None, 0o750, "root", "grafana"),
        PlannedFile(f"{grafana.CERTS}/ca.crt", read(pki.ca_cert_path), 0o644),
        PlannedFile(f"{grafana.CERTS}/grafana.crt", read(pki.cert_path(GRAFANA_IDENTITY)), 0o644),
        PlannedFile(
            f"{grafana.CERTS}/grafana.key",
            read(pki.key_path(GRAFANA_IDENTITY)),
            0o640,
            "root",
            "grafana",
        ),
        PlannedFile(grafana.DASH_DIR, None, 0o755),
    ]
    for path, text in grafana.render(site).items():
        owner = ("root", "grafana") if "/provisioning/" in path else ("root", "root")
        files.append(
            PlannedFile(path, text.encode(), 0o640 if owner[1] == "grafana" else 0o644, *owner)
        )
    return files


def write(
    files: list[PlannedFile], root: Path | str = "/", *, chown: bool | None = None
) -> list[Path]:
    """Write the plan under root. chown defaults to True when installing for real (root "/")."""
    import grp
    import pwd

    root = Path(root)
    chown = (str(root) == "/") if chown is None else chown
    written = []
    for f in files:
        path = root / f.path.lstrip("/")
        try:
            if f.content is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f.mode)
                try:
                    os.fchmod(fd, f.mode)
                    os.write(fd, f.content)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            os.chmod(path, f.mode)
            if chown:
                os.chown(path, pwd.getpwnam(f.owner).pw_uid, grp.getgrnam(f.group).gr_gid)
        except PermissionError:
            raise ToolError(
                f"cannot write {path}: permission denied", hint="run it with sudo"
            ) from None
        except (
            OSError
        ) as exc:  # a folder that cannot hold files (/proc, a file in the way, a full disk)
            raise ToolError(
                f"cannot write {path}: {exc.strerror or exc}",
                hint="choose a folder that exists and can be written (--out / --root)",
            ) from None
        except KeyError as exc:
            svc = {"'telegraf'": "telegraf", "'grafana'": "grafana"}.get(str(exc), str(exc))
            raise ToolError(
                f"no system account {exc}",
                hint=f"install the {svc} package first (docs/stack.md lists the apt sources)",
            ) from None
        written.append(path)
    return written


def grafana_settings(root: Path | str = "/") -> Path:
    env = Path(root) / grafana.ENV_FILE.lstrip("/")
    influx.write_env(env, dict(grafana.SETTINGS), comment="Grafana environment (root only)")
    return env


def systemctl(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("systemctl"):
        raise ToolError(
            "systemctl is not available", hint="start influxdb, telegraf and grafana-server by hand"
        )
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)


def restart(services=SERVICES) -> None:
    for svc in services:
        r = systemctl("restart", svc)
        if r.returncode != 0:
            raise ToolError(
                f"systemctl restart {svc} failed: {r.stderr.strip() or r.returncode}",
                hint=f"see `journalctl -u {svc}`",
            )


def install_mqtt_plugin(out=print) -> None:
    cli = shutil.which("grafana-cli") or shutil.which("grafana")
    if not cli:
        out(
            "note: grafana-cli not found; install the MQTT live plugin by hand: "
            f"grafana-cli plugins install {grafana.MQTT_PLUGIN}"
        )
        return
    args = (
        [cli, "plugins", "install", grafana.MQTT_PLUGIN]
        if cli.endswith("grafana-cli")
        else [cli, "cli", "plugins", "install", grafana.MQTT_PLUGIN]
    )
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise ToolError(
            f"installing the Grafana plugin {grafana.MQTT_PLUGIN} failed: "
            f"{r.stderr.strip()[-300:]}",
            hint="check the Pi's network, or set [stack] mqtt_live = false",
        )
