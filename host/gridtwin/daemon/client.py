"""How the CLI talks to a running daemon: its local HTTP API, found through ``var/daemon.json``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from gridtwin.daemon import api
from gridtwin.errors import GridTwinError


class DaemonNotRunning(GridTwinError):
    pass


class DaemonClient:
    def __init__(self, state_file: Path):
        self.state_file = Path(state_file)
        try:
            info = json.loads(self.state_file.read_text())
            self.url, self.token = f"http://{info['host']}:{info['port']}", info["token"]
        except FileNotFoundError:
            raise DaemonNotRunning(
                f"the daemon is not running ({self.state_file} does not exist)",
                hint="start it: `gridtwin daemon` (or `gridtwin daemon install` for systemd)",
            ) from None
        except PermissionError:
            raise GridTwinError(
                f"cannot read {self.state_file}: only the daemon's user may send commands",
                hint="run as that user, e.g. sudo -u gridtwin gridtwin cmd ...",
            ) from None
        except (OSError, ValueError, KeyError) as exc:
            raise GridTwinError(
                f"{self.state_file} is unreadable ({exc})", hint="restart the daemon"
            ) from None

    @classmethod
    def for_site(cls, site) -> "DaemonClient":
        from gridtwin.daemon.config import db_path

        return cls(db_path(site).parent / "daemon.json")

    def _open(self, method: str, path: str, body: dict | None = None, timeout: float = 10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read())
            except ValueError:
                detail = {"error": f"HTTP {exc.code}"}
            err = api.exception_for(exc.code)(
                detail.get("error", f"HTTP {exc.code}"), hint=detail.get("hint")
            )
            err.status = exc.code
            raise err from None
        except (urllib.error.URLError, OSError) as exc:
            raise DaemonNotRunning(
                f"the daemon does not answer at {self.url} ({getattr(exc, 'reason', exc)})",
                hint="is it running? `gridtwin daemon status`",
            ) from None

    def cmd(self, node: str, cmd: str, args: dict, timeout: float = 10, ttl: float = 0) -> dict:
        with self._open(
            "POST",
            "/cmd",
            {"node": node, "cmd": cmd, "args": args, "timeout": timeout, "ttl": ttl},
            timeout=timeout + ttl + 10,
        ) as r:
            return json.loads(r.read())["ack"]

    def tail(self, node: str | None = None):
        """Yield each live reading (the payload dict) as the daemon stores it."""
        path = "/tail" + (f"?node={node}" if node else "")
        with self._open("GET", path, timeout=3600) as r:
            for line in r:
                if line.strip():
                    yield json.loads(line)

    def health(self) -> dict:
        """/healthz as a dict; an unhealthy daemon answers 503 with the same document."""
        try:
            with self._open("GET", "/healthz", timeout=5) as r:
                return json.loads(r.read())
        except GridTwinError as exc:
            if getattr(exc, "status", None) == api.UNHEALTHY:
                return {"ok": False, "error": exc.message}
            raise
