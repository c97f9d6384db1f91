"""Mosquitto for a site: render its configuration and ACL, install it, or run it in the foreground.

`render(site, pki, ...)` returns ``{file name: text}``: ``mosquitto.conf``, ``acl`` and, with
``dev=True``, ``acl.dev``. What the configuration enforces:

- one TLS listener (``[broker] port``) that requires a certificate from the site CA, checks the
  CRL, speaks TLS 1.2 or newer, maps the certificate CN to the username
  (``use_identity_as_username``) and the username to the client id (``use_username_as_clientid``),
  so a node can neither claim another node's topics nor take over its session;
- optionally the same on a TLS WebSocket listener (``ws_port``) for browsers;
- a plain listener only with ``dev=True``, and then only on 127.0.0.1;
- persistence, per-client queue limits sized for the host subscriber that sees every node, and a
  maximum packet size (a larger packet is refused and its sender disconnected);
- the ACL: a node writes only ``<root>/<id>/{telemetry,status,ack,log,ota/ack}`` and reads only
  its own ``cmd`` and ``ota``; the host daemon reads everything, writes ``cmd`` and owns ``_host/``;
  the OTA identity alone writes ``ota`` (docs/ota.md); Telegraf and Grafana only read. Anyone else
  gets nothing.

Mosquitto 2.1 deprecates ``acl_file`` and ``per_listener_settings``: for 2.1 and later the ACL goes
through the acl-file plugin (``plugin_load``/``plugin_use``) and anonymous access is set per
listener (``listener_allow_anonymous``). `detect_version()` picks the form; `render(version=...)`
forces one.

Reloading: SIGHUP re-reads the ACL, but Mosquitto reads the CA and the CRL only at start, so after
`pki revoke` or a new CA the broker must be restarted (`notify_revocation`: `broker run` or the
installed service).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gridtwin import procs
from gridtwin.errors import BrokerError, ToolError
from gridtwin.pki import GRAFANA_IDENTITY, OTA_IDENTITY, TELEGRAF_IDENTITY, host_identities

if TYPE_CHECKING:
    from gridtwin.pki import PKI
    from gridtwin.site import Site

NODE_WRITES = ("telemetry", "status", "ack", "log", "ota/ack")  # ota/ack: docs/ota.md
NODE_READS = ("cmd", "ota")
READ_ONLY_SERVICES = (TELEGRAF_IDENTITY, GRAFANA_IDENTITY)
# Where Debian and upstream builds put the 2.1 acl-file plugin.
ACL_PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_acl_file.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_acl_file.so",
    "/usr/lib/arm-linux-gnueabihf/mosquitto_acl_file.so",
    "/usr/lib/mosquitto_acl_file.so",
    "/usr/local/lib/mosquitto_acl_file.so",
)
ETC_DIR = Path("/etc/mosquitto")


def mosquitto_binary() -> str:
    """Path of the mosquitto executable, or a ToolError saying how to install it."""
    found = (
        os.environ.get("MOSQUITTO")
        or shutil.which("mosquitto")
        or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    )
    if not found:
        raise ToolError(
            "mosquitto is not installed",
            hint="run `make setup` or `sudo apt-get install mosquitto`",
        )
    return found


def detect_version(binary: str | None = None) -> tuple[int, int, int]:
    """The installed Mosquitto version, e.g. (2, 0, 11), from `mosquitto -h`."""
    binary = binary or mosquitto_binary()
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        raise ToolError(
            f"cannot run {binary}: {exc}", hint="check the mosquitto installation"
        ) from None
    return parse_version(out.stdout + out.stderr)


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.search(r"mosquitto version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise ToolError(
            "cannot tell the mosquitto version",
            hint="`mosquitto -h` should print 'mosquitto version X.Y.Z'",
        )
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def acl_plugin_path() -> str:
    for candidate in ACL_PLUGIN_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    return ACL_PLUGIN_CANDIDATES[-1 if sys.platform != "linux" else 0]


def _one_line(*values) -> None:
    """Nothing rendered into mosquitto.conf or the ACL may start a line of its own: site.toml's
    checks refuse such values already, and this refuses them again at the one place it matters."""
    for v in values:
        if any(c in str(v) for c in "\r\n\0"):
            raise BrokerError(
                f"refusing to render {str(v)!r} into the broker configuration: it holds a line "
                "break",
                hint="fix the value in site.toml "
                "(ids and topic_root are letters, digits, '_', '-')",
            )


def _no_ota(root: str) -> list[str]:
    # what reads everything still reads no update: a node's ota topic is the OTA identity's and
    # that node's alone (docs/ota.md); deny wins over the broader read
    return [f"topic deny {root}/+/ota", f"topic deny {root}/+/ota/ack"]


def render_acl(site: "Site") -> str:
    root = site.topic_root
    _one_line(site.id, root, *(n.id for n in site.nodes))
    lines = [
        f"# GridTwin site '{site.id}': who may touch which topic under {root}/.",
        "# Rendered by `gridtwin broker config`; edit site.toml and render again instead of this "
        "file.",
        "# The username is the certificate CN. Anyone not named here (anonymous, unknown CN) gets "
        "nothing.",
        "",
    ]
    for i, host in enumerate(host_identities(site)):
        # every daemon instance ([daemon] instances) has the same rights under its own CN, so each
        # keeps a session of its own (CN = client id) instead of taking over instance 1's
        lines += [
            "# The host daemon reads every node, sends commands and owns _host/ (twin state, "
            "alerts)."
            if i == 0
            else f"# Host daemon instance {i + 1}: the same rights.",
            f"user {host}",
            f"topic read {root}/#",
            *_no_ota(root),
            f"topic write {root}/+/cmd",
            f"topic readwrite {root}/_host/#",
            "",
        ]
    for service in READ_ONLY_SERVICES:
        lines += [f"# {service} only reads.", f"user {service}", f"topic read {root}/#"]
        lines += [*_no_ota(root), ""]
    lines += [
        "# `gridtwin ota` alone writes a node's update topic, and reads the answers (docs/ota.md).",
        f"user {OTA_IDENTITY}",
        f"topic write {root}/+/ota",
        f"topic read {root}/+/ota/ack",
        f"topic read {root}/+/status",
        "",
    ]
    for node in site.nodes:
        lines.append(f"user {node.id}")
        lines += [f"topic write {root}/{node.id}/{leaf}" for leaf in NODE_WRITES]
        lines += [f"topic read {root}/{node.id}/{leaf}" for leaf in NODE_READS] + [""]
    return "\n".join(lines)


def render_dev_acl(site: "Site") -> str:
    return "\n".join(
        [
            "# Development only: the plain loopback listener of `broker run --dev` (anonymous "
            "clients).",
            f"topic readwrite {site.topic_root}/#",
            "",
        ]
    )


def render(
    site: "Site",
    pki: "PKI",
    *,
    dev: bool = False,
    port: int | None = None,
    ws_port: int | None = None,
    data_dir: str | Path | None = None,
    conf_dir: str | Path | None = None,
    listen: str | None = None,
    dev_port: int | None = None,
    version: tuple[int, ...] | None = None,
    certs: dict | None = None,
    user: str | None = None,
    pid_file: str | Path | None = None,
    log_dest: str = "stderr",
    extra: str = "",
) -> dict[str, str]:
    """Render mosquitto.conf, acl (and acl.dev with dev=True) for the site.

    port/ws_port/dev_port override the site's ports (ws_port 0 = no WebSocket listener). data_dir
    holds persistence (default <var>/broker); conf_dir is where the files will be written (default
    data_dir), because the ACL path in mosquitto.conf must be absolute. listen is the bind address
    ("" = all interfaces; default the site's [broker] listen). certs maps ca/cert/key/crl to other
    paths (broker install copies them). user: the account mosquitto runs as when started as root.
    extra: lines appended verbatim (tests add options with it).
    """
    b = site.broker
    data_dir = Path(data_dir) if data_dir else site.var_dir / "broker"
    conf_dir = Path(conf_dir) if conf_dir else data_dir
    port = b.port if port is None else port
    ws_port = b.ws_port if ws_port is None else ws_port
    dev_port = b.dev_port if dev_port is None else dev_port
    listen = b.listen if listen is None else listen
    version = tuple(version) if version else _version_or_default()
    new_form = version >= (2, 1)
    paths = {
        "ca": pki.ca_cert_path,
        "cert": pki.server_cert_path,
        "key": pki.server_key_path,
        "crl": pki.crl_path,
    }
    paths.update(certs or {})
    acl = conf_dir / "acl"
    vtext = ".".join(map(str, version))
    _one_line(
        data_dir,
        conf_dir,
        listen,
        user or "",
        pid_file or "",
        log_dest,
        b.persistent_client_expiration,
        *paths.values(),
    )

    head = [
        f"# GridTwin site '{site.id}': Mosquitto {vtext} configuration rendered by `gridtwin "
        "broker config`.",
        "# Do not edit: change site.toml and render again. A CA or CRL change needs a restart, "
        "not a SIGHUP.",
        "",
    ]
    if not new_form:
        head += [
            "# Security settings belong to each listener (the dev listener is anonymous, TLS "
            "never is).",
            "per_listener_settings true",
        ]
    else:
        head += [
            "allow_anonymous false",
            f"plugin_load acl {acl_plugin_path()}",
            f"plugin_opt_acl_file {acl}",
        ]
        if dev:
            head += [
                f"plugin_load acl_dev {acl_plugin_path()}",
                f"plugin_opt_acl_file {conf_dir / 'acl.dev'}",
            ]
    if user:
        head.append(f"user {user}")
    if pid_file:
        head.append(f"pid_file {pid_file}")
    head += [
        "",
        "# State survives restarts: retained status, queued commands, persistent sessions.",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 60",
        f"persistent_client_expiration {b.persistent_client_expiration}",
        "",
        "# Oversized payloads are refused at the door; queues sized for the host that sees every "
        "node.",
        f"max_packet_size {b.max_packet_size}",
        f"max_queued_messages {b.max_queued_messages}",
        f"max_queued_bytes {b.max_queued_bytes}",
        f"max_inflight_messages {b.max_inflight_messages}",
        "",
        f"log_dest {log_dest}",
        *[f"log_type {t}" for t in ("error", "warning", "notice", "information")],
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "",
    ]

    def tls_listener(p: int, protocol: str, comment: str) -> list[str]:
        out = [
            f"# {comment}",
            f"listener {p}{' ' + listen if listen else ''}",
            f"protocol {protocol}",
        ]
        out.append("listener_allow_anonymous false" if new_form else "allow_anonymous false")
        out += [
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            f"cafile {paths['ca']}",
            f"certfile {paths['cert']}",
            f"keyfile {paths['key']}",
            f"crlfile {paths['crl']}",
            "tls_version tlsv1.2",
        ]
        out.append("plugin_use acl" if new_form else f"acl_file {acl}")
        return out + [""]

    body = tls_listener(
        port, "mqtt", "Nodes and services: MQTT over TLS, a site certificate is the only way in."
    )
    if ws_port:
        body += tls_listener(
            ws_port, "websockets", "Browsers: MQTT over TLS WebSockets, same rules."
        )
    files = {"acl": render_acl(site)}
    if dev:
        body += [
            "# DEVELOPMENT ONLY (`--dev`): plain MQTT, anonymous, loopback only, confined to the "
            "topic root.",
            f"listener {dev_port} 127.0.0.1",
            "protocol mqtt",
            "listener_allow_anonymous true" if new_form else "allow_anonymous true",
            "plugin_use acl_dev" if new_form else f"acl_file {conf_dir / 'acl.dev'}",
            "",
        ]
        files["acl.dev"] = render_dev_acl(site)
    if extra:
        body += ["# extra options", extra.rstrip("\n"), ""]
    files["mosquitto.conf"] = "\n".join(head + body)
    return files


def _version_or_default() -> tuple[int, int, int]:
    try:
        return detect_version()
    except ToolError:
        return (2, 0, 0)


def write_files(files: dict[str, str], folder: str | Path) -> Path:
    """Write rendered files into folder (0700); the ACL and config are 0600 (they map the fleet)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, text in files.items():
        path = folder / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return folder


# --- broker install --------------------------------------------------------------------------


@dataclass
class PlannedFile:
    path: Path
    content: bytes | None  # None: a directory
    mode: int
    owner: str = "root"
    group: str = "root"


def install_plan(
    site: "Site",
    pki: "PKI",
    *,
    etc_dir: str | Path = ETC_DIR,
    data_dir: str | Path = "/var/lib/mosquitto",
    version: tuple[int, ...] | None = None,
) -> list[PlannedFile]:
    """What `broker install` writes: the config, the ACL and copies of the server's certificates.

    The certs folder stays private to its owner; Mosquitto (user `mosquitto`) gets its own copies:
    the key 0640 root:mosquitto, so the broker can read it and nobody else can.
    """
    etc = Path(etc_dir)
    gt = etc / "gridtwin"
    certs = {
        "ca": gt / "ca.crt",
        "cert": gt / "server.crt",
        "key": gt / "server.key",
        "crl": installed_crl(etc),
    }
    files = render(
        site,
        pki,
        data_dir=data_dir,
        conf_dir=gt,
        version=version,
        certs=certs,
        listen=site.broker.listen,
        pid_file="/run/mosquitto/mosquitto.pid",
        log_dest="syslog",
    )

    def read(p: Path) -> bytes:
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise BrokerError(f"{p} is missing", hint="run `gridtwin pki init` first") from None

    return [
        PlannedFile(gt, None, 0o750, "root", "mosquitto"),
        PlannedFile(etc / "mosquitto.conf", files["mosquitto.conf"].encode(), 0o644),
        PlannedFile(gt / "acl", files["acl"].encode(), 0o640, "root", "mosquitto"),
        PlannedFile(certs["ca"], read(pki.ca_cert_path), 0o644),
        PlannedFile(certs["cert"], read(pki.server_cert_path), 0o644),
        PlannedFile(certs["key"], read(pki.server_key_path), 0o640, "root", "mosquitto"),
        PlannedFile(certs["crl"], read(pki.crl_path), 0o644),
    ]


def installed_crl(etc_dir: str | Path = ETC_DIR) -> Path:
    """Where `broker install` puts the broker's copy of the CRL (the one an installed broker
    reads)."""
    return Path(etc_dir) / "gridtwin" / "crl.pem"


def installed_by_us(etc_dir: str | Path = ETC_DIR) -> bool:
    """True when `broker install` wrote the mosquitto.conf in etc_dir (it carries our header)."""
    try:
        return (Path(etc_dir) / "gridtwin").is_dir() and b"GridTwin" in (
            Path(etc_dir) / "mosquitto.conf"
        ).read_bytes()
    except OSError:
        return False


def apply_plan(plan: list[PlannedFile], *, chown: bool = True) -> list[Path]:
    """Write a plan; an existing mosquitto.conf not written by GridTwin is kept as
    .gridtwin-orig."""
    import grp
    import pwd

    written = []
    for f in plan:
        try:
            if f.content is None:
                f.path.mkdir(parents=True, exist_ok=True)
            else:
                if (
                    f.path.name == "mosquitto.conf"
                    and f.path.exists()
                    and b"GridTwin" not in f.path.read_bytes()
                ):
                    orig = f.path.with_name("mosquitto.conf.gridtwin-orig")
                    if not orig.exists():
                        shutil.copy2(f.path, orig)
                tmp = f.path.with_name(f".{f.path.name}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f.mode)
                try:
                    os.write(fd, f.content)
                finally:
                    os.close(fd)
                os.replace(tmp, f.path)
            os.chmod(f.path, f.mode)
            if chown:
                os.chown(f.path, pwd.getpwnam(f.owner).pw_uid, grp.getgrnam(f.group).gr_gid)
        except PermissionError:
            raise BrokerError(
                f"cannot write {f.path}: permission denied", hint="run it with sudo"
            ) from None
        except KeyError as exc:
            raise BrokerError(
                f"no system account {exc}", hint="install the Debian package mosquitto first"
            ) from None
        written.append(f.path)
    return written


RESTART_SERVICE = ["systemctl", "restart", "mosquitto"]


def restart_service(run=subprocess.run) -> None:
    """Restart the installed broker (a CA or CRL change needs a restart). `run`: subprocess.run's
    stand-in."""
    try:
        run(RESTART_SERVICE, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BrokerError("systemctl is not available", hint="restart mosquitto by hand") from None
    except subprocess.CalledProcessError as exc:
        raise BrokerError(
            f"systemctl restart mosquitto failed: {exc.stderr.strip() or exc.returncode}",
            hint="see `journalctl -u mosquitto`",
        ) from None


# --- broker run --------------------------------------------------------------------------------


class Mosquitto:
    """A mosquitto process with the site's rendered configuration, managed from Python: the demo
    runs one, and the tests' broker fixture is one. ``start()`` returns once the TLS listener
    accepts connections; ``log`` is what mosquitto wrote."""

    READY_TIMEOUT = 10.0

    def __init__(
        self,
        site: "Site",
        pki: "PKI",
        workdir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        ws_port: int = 0,
        dev: bool = False,
        dev_port: int | None = None,
        extra: str = "",
        version=None,
    ):
        self.site, self.pki = site, pki
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or site.broker.port
        self.ws_port, self.dev, self.dev_port = ws_port, dev, dev_port
        self.extra, self.version = extra, version
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"
        self.files: dict[str, str] = {}

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def render(self) -> dict[str, str]:
        user = "root" if os.geteuid() == 0 else None  # as root, mosquitto would drop to 'mosquitto'
        return render(
            self.site,
            self.pki,
            dev=self.dev,
            port=self.port,
            ws_port=self.ws_port,
            dev_port=self.dev_port,
            data_dir=self.workdir,
            listen=self.host,
            user=user,
            extra=self.extra,
            version=self.version,
        )

    def start(self) -> "Mosquitto":
        if self.running:
            return self
        if not self.pki.exists():
            raise BrokerError(f"no PKI in {self.pki.dir}", hint="run `gridtwin pki init` first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.files = self.render()
        write_files(self.files, self.workdir)
        mark = len(self.log)
        with open(self.log_path, "ab") as log:
            self.proc = procs.spawn(
                [mosquitto_binary(), "-c", str(self.workdir / "mosquitto.conf")],
                kind="mosquitto",
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ready = re.compile(r"mosquitto version \S+ running")
        deadline = time.monotonic() + self.READY_TIMEOUT
        try:
            # The log says "running" once its listeners are open; a TCP connect confirms ours is.
            while not (ready.search(self.log, mark) and self._accepts()):
                if self.proc.poll() is not None:
                    procs.reaped(self.proc)
                    raise BrokerError(
                        f"mosquitto exited with status {self.proc.returncode}",
                        hint=self.log[mark:].strip().splitlines()[-1]
                        if self.log[mark:].strip()
                        else f"config in {self.workdir}",
                    )
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"mosquitto not ready after {self.READY_TIMEOUT:.0f} s",
                        hint=f"is port {self.port} in use? see {self.log_path}",
                    )
                time.sleep(0.01)
        except BaseException:  # not ready, or Ctrl-C/SIGTERM while waiting: nothing is left running
            self.stop()
            raise
        return self

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        procs.stop(self.proc, timeout=10)  # SIGTERM: mosquitto saves its persistence and ends
        self.proc = None

    def restart(self) -> "Mosquitto":
        self.stop()
        return self.start()


def run_dir(site: "Site") -> Path:
    return site.var_dir / "broker"


def run_pid_path(site: "Site") -> Path:
    """`broker run` writes its own pid here; `pki revoke` signals it to restart mosquitto."""
    return run_dir(site) / "run.pid"


# `pki revoke` asks a running `broker run` to restart mosquitto with this signal. Not SIGHUP: that
# is a closed terminal or SSH session, and it stops `broker run` like SIGTERM and Ctrl-C.
RESTART_SIGNAL = signal.SIGUSR1


def run_foreground(
    site: "Site",
    pki: "PKI",
    *,
    dev: bool = False,
    port: int | None = None,
    ws_port: int | None = None,
    listen: str = "127.0.0.1",
) -> int:
    """Run mosquitto in the foreground until Ctrl-C, SIGTERM or SIGHUP, which stop it (and say so).
    RESTART_SIGNAL to this process restarts mosquitto with freshly rendered files (new CRL, new
    ACL); `pki revoke` sends it."""
    if not pki.exists() or not pki.server_cert_path.exists():
        raise BrokerError(f"no PKI in {pki.dir}", hint="run `gridtwin pki init` first")
    binary = mosquitto_binary()
    for warning in pki.warnings():  # expiring certificates or CRL: say so where the user looks
        print(f"gridtwin: warning: {warning}", file=sys.stderr)
    folder = run_dir(site)
    pid_path = run_pid_path(site)
    user = getpass.getuser() if os.geteuid() == 0 else None

    def start():
        files = render(
            site,
            pki,
            dev=dev,
            port=port,
            ws_port=ws_port,
            data_dir=folder,
            listen=listen,
            user=user,
        )
        write_files(files, folder)
        return procs.spawn([binary, "-c", str(folder / "mosquitto.conf")], kind="mosquitto")

    restart = {"wanted": False}

    def on_restart(_sig, _frame):
        restart["wanted"] = True
        if proc.poll() is None:
            proc.terminate()

    with procs.stop_on_signals():
        proc = start()
        old = signal.signal(RESTART_SIGNAL, on_restart)
        try:
            tmp = pid_path.with_suffix(
                ".tmp"
            )  # written whole, then renamed: a reader never sees it half
            tmp.write_text(f"{os.getpid()}\n")
            os.replace(tmp, pid_path)
            b = site.broker
            print(
                f"gridtwin: mosquitto on {listen}:{port or b.port} (TLS)"
                + (
                    f", {listen}:{ws_port or b.ws_port} (TLS WebSockets)"
                    if (ws_port or b.ws_port)
                    else ""
                )
                + (f", 127.0.0.1:{b.dev_port} (plain, dev)" if dev else "")
                + f"; files in {folder}; Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            while True:
                rc = proc.wait()
                procs.reaped(proc)
                if restart["wanted"]:
                    restart["wanted"] = False
                    print(
                        "gridtwin: restarting mosquitto (new CRL/ACL)", file=sys.stderr, flush=True
                    )
                    proc = start()
                    continue
                if rc not in (0, -signal.SIGTERM, -signal.SIGINT):
                    raise BrokerError(
                        f"mosquitto exited with status {rc}",
                        hint=f"see its log above; config in {folder}",
                    )
                return 0
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (procs.Terminated)
            return 0
        finally:
            signal.signal(RESTART_SIGNAL, old)
            procs.stop(proc, timeout=10)
            try:
                pid_path.unlink()
            except FileNotFoundError:
                pass


def notify_revocation(
    site: "Site",
    *,
    etc_dir: str | Path = ETC_DIR,
    run=subprocess.run,
    euid: int | None = None,
    systemd: bool | None = None,
) -> str:
    """Make the broker that serves this site start again with the new CRL, so every session drops
    and a revoked node cannot come back (Mosquitto checks the CRL at the handshake only). Returns
    what was done, or exactly what to run, as a sentence for the user.

    - `broker run` (its pid file): RESTART_SIGNAL; it re-renders and restarts mosquitto.
    - a broker `broker install` set up (our mosquitto.conf in etc_dir): as root, copy the CRL to the
      broker's copy and `systemctl restart mosquitto` when systemd runs here; otherwise name the
      commands. euid, systemd and run stand in for os.geteuid(), a booted systemd and
      subprocess.run in tests (systemd cannot run in the test sandbox).
    """
    from gridtwin.pki import PKI

    said = []
    pid_path = run_pid_path(site)
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, RESTART_SIGNAL)
        said.append(f"the dev broker (`broker run`, pid {pid}) restarts with the new CRL")
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pass
    if installed_by_us(etc_dir):
        src, dst = PKI.for_site(site).crl_path, installed_crl(etc_dir)
        manual = f"sudo install -m 0644 {src} {dst} && sudo {' '.join(RESTART_SERVICE)}"
        if (os.geteuid() if euid is None else euid) != 0:
            said.append(
                "the installed broker reads the CRL only at start, and giving it the new one needs "
                f"root: run `{manual}` (the revoked node's open session ends with the restart)"
            )
        else:
            apply_plan([PlannedFile(dst, src.read_bytes(), 0o644)])
            if not (Path("/run/systemd/system").is_dir() if systemd is None else systemd):
                said.append(
                    f"new CRL copied to {dst}; systemd does not run here: restart mosquitto "
                    "yourself (it reads the CRL only at start; the revoked node's session ends "
                    "with the restart)"
                )
            else:
                restart_service(run)
                said.append(
                    f"new CRL copied to {dst} and `{' '.join(RESTART_SERVICE)}` done: every "
                    "session dropped, the revoked node cannot come back"
                )
    return "; ".join(said) or "no running broker found; the new CRL applies when it starts"
