"""InfluxDB 2: provisioning over the documented HTTP API, tokens into root-only environment files.

Calls (all under /api/v2, JSON, ``Authorization: Token <t>``):

- ``GET /setup`` -> ``{"allowed": bool}``; when allowed, ``POST /setup`` {username, password, org,
  bucket, retentionPeriodSeconds} -> {user, org, bucket, auth: {token}}: the operator token goes
  straight into the admin environment file. When not allowed, the admin token is read from there.
- ``GET /orgs?org=`` (``POST /orgs`` if missing), ``GET /buckets?orgID=&name=`` (``POST /buckets``
  with an expire retention rule if missing, ``PATCH /buckets/{id}`` when the retention differs).
- ``GET /authorizations?orgID=``; ``POST /authorizations`` for Telegraf (write on the bucket) and
  Grafana (read on the bucket). A token is never shown again by InfluxDB, so an authorization we
  made before is kept only while its token is still in its environment file; otherwise it is
  deleted (``DELETE /authorizations/{id}``) and made again.

Every token goes from the creating response into its file (mode 0600, written atomically); no
token is returned, logged or printed. InfluxDB 2 cannot run here: tests/fixtures/fake_influx2.py
implements this subset and the tests run provisioning against it.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gridtwin.errors import ToolError

ADMIN_ENV = "/etc/gridtwin/influx-admin.env"
ADMIN_VAR = "INFLUX_ADMIN_TOKEN"
ADMIN_USER = "gridtwin-admin"
TELEGRAF_DESC = "gridtwin: telegraf writes readings"
GRAFANA_DESC = "gridtwin: grafana reads readings"


class InfluxError(ToolError):
    pass


# --- root-only environment files -----------------------------------------------------------------


def read_env(path: Path) -> dict[str, str]:
    out = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return out
    except PermissionError:
        raise ToolError(f"cannot read {path}: it is root-only", hint="run it with sudo") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


def write_env(path: Path, values: dict[str, str], comment: str = "") -> None:
    """Set KEY=value lines in an environment file, keeping its other lines; the file is 0600 from
    the first byte (never briefly readable by others)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (
            path.read_text().splitlines()
            if path.exists()
            else ([f"# {comment}"] if comment else [])
        )
        keep = [ln for ln in lines if ln.split("=", 1)[0].strip() not in values]
        keep += [f"{k}={v}" for k, v in values.items()]
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, ("\n".join(keep) + "\n").encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except PermissionError:
        raise ToolError(
            f"cannot write {path}: permission denied", hint="run it with sudo"
        ) from None


# --- the API ------------------------------------------------------------------------------------


class InfluxAPI:
    def __init__(self, url: str, token: str | None = None, timeout: float = 15.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        query: dict | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ):
        url = f"{self.url}/api/v2{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise InfluxError(
                f"InfluxDB at {self.url} does not answer: {getattr(exc, 'reason', exc)}",
                hint="is influxdb running? `sudo systemctl status influxdb`",
            ) from None
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {"message": raw[:200].decode(errors="replace")}
        if status not in ok:
            msg = doc.get("message") or doc.get("error") or f"HTTP {status}"
            hint = (
                "the admin token is wrong or revoked: put a valid operator token into " + ADMIN_ENV
                if status == 401
                else None
            )
            raise InfluxError(f"InfluxDB {method} {path}: {msg} (HTTP {status})", hint=hint)
        return doc


@dataclass
class EnvFiles:
    """Where the tokens go (under root): admin (operator), Telegraf's, Grafana's."""

    admin: Path
    telegraf: Path
    grafana: Path

    @classmethod
    def under(cls, root: Path | str = "/") -> "EnvFiles":
        from gridtwin.stack import grafana, telegraf

        r = Path(root)
        return cls(
            r / ADMIN_ENV.lstrip("/"),
            r / telegraf.ENV_FILE.lstrip("/"),
            r / grafana.ENV_FILE.lstrip("/"),
        )


def provision(site, env: EnvFiles, *, url: str | None = None, out=print) -> dict:
    """Set InfluxDB 2 up for the site; returns a summary (ids and names only, never tokens)."""
    from gridtwin.stack import grafana, telegraf

    st = site.storage
    url = url or st.influx_url
    org_name, bucket_name = st.influx_org, st.influx_bucket
    retention = site.stack.retention_days * 86400
    api = InfluxAPI(url)
    summary = {"url": url, "org": org_name, "bucket": bucket_name, "setup": False, "created": []}

    if api.call("GET", "/setup").get("allowed"):
        password = secrets.token_urlsafe(24)
        resp = api.call(
            "POST",
            "/setup",
            {
                "username": ADMIN_USER,
                "password": password,
                "org": org_name,
                "bucket": bucket_name,
                "retentionPeriodSeconds": retention,
            },
        )
        write_env(
            env.admin,
            {
                ADMIN_VAR: resp["auth"]["token"],
                "INFLUX_ADMIN_USER": ADMIN_USER,
                "INFLUX_ADMIN_PASSWORD": password,
            },
            comment="GridTwin: InfluxDB 2 operator credentials "
            "(root only; written by gridtwin stack provision)",
        )
        summary["setup"] = True
        out(
            f"InfluxDB set up: user {ADMIN_USER}, org {org_name}; operator token and password in "
            f"{env.admin} (0600)"
        )
    admin = read_env(env.admin).get(ADMIN_VAR)
    if not admin:
        raise InfluxError(
            f"InfluxDB at {url} is already set up and {env.admin} holds no {ADMIN_VAR}",
            hint=f"create an operator token (`influx auth create --operator`) and write "
            f"{ADMIN_VAR}=<token> into {env.admin} (chmod 600), then run this again",
        )
    api.token = admin

    orgs = api.call("GET", "/orgs", query={"org": org_name}, ok=(200, 404)).get("orgs") or []
    org = next((o for o in orgs if o.get("name") == org_name), None)
    if not org:
        org = api.call("POST", "/orgs", {"name": org_name})
        summary["created"].append(f"org {org_name}")
    org_id = org["id"]
    summary["org_id"] = org_id

    rules = [{"type": "expire", "everySeconds": retention}] if retention else []
    buckets = (
        api.call(
            "GET", "/buckets", query={"orgID": org_id, "name": bucket_name}, ok=(200, 404)
        ).get("buckets")
        or []
    )
    bucket = next((b for b in buckets if b.get("name") == bucket_name), None)
    if not bucket:
        bucket = api.call(
            "POST",
            "/buckets",
            {
                "orgID": org_id,
                "name": bucket_name,
                "retentionRules": rules,
                "description": f"GridTwin site {site.id}",
            },
        )
        summary["created"].append(f"bucket {bucket_name}")
    elif [r.get("everySeconds") for r in bucket.get("retentionRules") or []] != [
        r["everySeconds"] for r in rules
    ]:
        bucket = api.call("PATCH", f"/buckets/{bucket['id']}", {"retentionRules": rules})
        summary["created"].append(f"retention of {bucket_name}")
    bucket_id = bucket["id"]
    summary["bucket_id"] = bucket_id

    auths = api.call("GET", "/authorizations", query={"orgID": org_id}).get("authorizations") or []
    for desc, action, path, var in (
        (TELEGRAF_DESC, "write", env.telegraf, telegraf.TOKEN_VAR),
        (GRAFANA_DESC, "read", env.grafana, grafana.TOKEN_VAR),
    ):
        mine = [a for a in auths if a.get("description") == desc]
        if mine and read_env(path).get(var):
            continue  # made before and its token is in place
        for a in mine:  # made before, but its token is lost: replace it
            api.call("DELETE", f"/authorizations/{a['id']}")
        resp = api.call(
            "POST",
            "/authorizations",
            {
                "orgID": org_id,
                "description": desc,
                "status": "active",
                "permissions": [
                    {
                        "action": action,
                        "resource": {"type": "buckets", "id": bucket_id, "orgID": org_id},
                    }
                ],
            },
        )
        write_env(
            path,
            {var: resp["token"]},
            comment="GridTwin: written by gridtwin stack provision (root only)",
        )
        summary["created"].append(f"{action} token -> {path}")
        out(
            f"{action} token for {'Telegraf' if action == 'write' else 'Grafana'} written to "
            f"{path} (0600)"
        )
    return summary


# --- Raspberry Pi sanity -----------------------------------------------------------------------


def userland_arch() -> str:
    """The OS's architecture as dpkg sees it (a 64-bit kernel may run a 32-bit armhf userland)."""
    try:
        return (
            subprocess.run(
                ["dpkg", "--print-architecture"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or platform.machine()
        )
    except (OSError, subprocess.SubprocessError):
        return platform.machine()


def check_64bit(arch: str | None = None) -> str:
    arch = arch or userland_arch()
    if arch in ("armhf", "armel", "i386", "armv7l", "armv6l", "i686"):
        raise ToolError(
            f"InfluxDB 2 needs a 64-bit OS, and this one is 32-bit ({arch})",
            hint="install the 64-bit Raspberry Pi OS (arm64) on the Pi, or keep [storage] "
            "backend = \"sqlite\" and skip the stack",
        )
    return arch


def render_config(site) -> str:
    """/etc/influxdb/config.toml: loopback only, no phone-home, and writes that spare an SD card."""
    port = urllib.parse.urlparse(site.storage.influx_url).port or 8086
    return "\n".join(
        [
            f"# GridTwin site '{site.id}': InfluxDB 2 settings rendered by `gridtwin stack "
            "install`.",
            "bolt-path = \"/var/lib/influxdb/influxd.bolt\"",
            "engine-path = \"/var/lib/influxdb/engine\"",
            f"http-bind-address = \"127.0.0.1:{port}\"",
            "reporting-disabled = true",
            "log-level = \"warn\"",
            "# SD card: group WAL fsyncs, snapshot the cache less often, one compaction at a time",
            "storage-wal-fsync-delay = \"5s\"",
            "storage-cache-snapshot-write-cold-duration = \"30m\"",
            "storage-max-concurrent-compactions = 1",
            "",
        ]
    )
