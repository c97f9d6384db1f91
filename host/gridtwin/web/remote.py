"""The web view beyond loopback: HTTPS only, the site PKI's server certificate, and a login.

``RemoteWeb.from_site(view, site)`` is None unless ``[web] host`` is set; then it serves the same
pages and JSON as the loopback server on ``[web] host``:``port``, over TLS 1.2+ with the PKI's
server certificate (the broker's, whose names are the host's: ``[broker] hosts``/``addresses``).
There is no plain-HTTP listener beyond loopback. Every page and stream needs a session cookie
(``Secure``, ``HttpOnly``, ``SameSite=Strict``) given by ``POST /ui/login`` for a name and password
of the users file (scrypt hashes, mode 600, ``gridtwin.web.users``); a wrong one gets 401. Sessions
live in memory: a daemon restart asks everyone to log in again. A logged-in user's node page has
buttons (``view.BUTTONS``: ping, identify) that ``POST /api/ui/cmd`` with ``X-Requested-With:
gridtwin``; the ack is shown. On loopback the view is read-only (commands: `gridtwin cmd`).
"""

from __future__ import annotations

import html
import json
import logging
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gridtwin.daemon.httpserver import BoundedHTTPServer
from gridtwin.errors import GridTwinError
from gridtwin.web import users as web_users

log = logging.getLogger("gridtwin.web")

COOKIE = "gridtwin_session"
PUBLIC = {"/ui/login", "/ui/app.css", "/ui/icon.svg"}
MAX_BODY = 4096


class RemoteWeb:
    TIMEOUT_S = 10.0
    MAX_CONNECTIONS = 64

    def __init__(
        self, view, host: str, port: int, cert: Path, key: Path, users_file: Path, session_s: float
    ):
        for what, p in (("server certificate", cert), ("server key", key)):
            if not Path(p).exists():
                raise GridTwinError(
                    f"cannot serve the web view on {host}:{port} over HTTPS: no {what} at {p}",
                    hint="issue the site's certificates: gridtwin pki init",
                )
        self.users = web_users.load(users_file)
        self.users_file, self.session_s = Path(users_file), session_s
        self.sessions: dict[str, tuple[str, float]] = {}  # cookie -> (user, expires, monotonic)
        self.refused = 0  # wrong logins
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        routes = view.routes(remote=True)
        login_page = view.static("login.html").decode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = self.TIMEOUT_S

            def setup(self):
                self.request.settimeout(self.timeout)
                # here, on the connection's thread, never in the accept loop
                self.request.do_handshake()
                super().setup()

            def _reply(self, code, ctype, body, headers=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Strict-Transport-Security", "max-age=31536000")
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _login_page(self, code, message=""):
                body = login_page.replace("<!--message-->", html.escape(message)).encode()
                return self._reply(code, "text/html; charset=utf-8", body)

            def _user(self):
                for part in (self.headers.get("Cookie") or "").split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == COOKIE:
                        got = outer.sessions.get(value)
                        if got and got[1] > time.monotonic():
                            return got[0]
                return None

            def _route(self, method):
                parts = urlsplit(self.path)
                path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
                self.close_connection = True
                if path == "/ui/login":
                    return self._login(method)
                if path == "/ui/logout":
                    outer.sessions = {
                        k: v for k, v in outer.sessions.items() if v[0] != self._user()
                    }
                    return self._reply(303, "text/plain", b"", [("Location", "/ui/login")])
                self.user = self._user()
                if path not in PUBLIC and self.user is None:
                    if path.startswith("/api/"):
                        return self._reply(
                            401, "application/json", b'{"error": "log in first: /ui/login"}'
                        )
                    return self._reply(303, "text/plain", b"", [("Location", "/ui/login")])
                if (method, path) == ("POST", "/api/ui/cmd"):
                    return self._command()
                fn = routes.get((method, path))
                if fn is None:
                    return self._reply(404, "text/plain", b"not here: try /ui/\n")
                try:
                    out = fn(self, query, b"")
                except Exception:
                    log.exception("%s %s failed", method, path)
                    out = (
                        500,
                        "application/json",
                        b'{"error": "internal error, see the daemon log"}',
                    )
                if out is not None:
                    self._reply(*out)

            def _command(self):
                # the cookie is SameSite=Strict, and a cross-site form cannot set this header either
                if self.headers.get("X-Requested-With") != "gridtwin":
                    return self._reply(
                        403, "application/json", b'{"error": "X-Requested-With: gridtwin missing"}'
                    )
                raw = self.headers.get("Content-Length") or "0"
                if not raw.isdigit() or int(raw) > MAX_BODY:
                    return self._reply(413, "application/json", b'{"error": "body too large"}')
                try:
                    req = json.loads(self.rfile.read(int(raw)) or b"{}")
                    node, cmd = str(req["node"]), str(req["cmd"])
                except (ValueError, KeyError, TypeError):
                    return self._reply(
                        400,
                        "application/json",
                        b'{"error": "body must be {\\"node\\", \\"cmd\\"}"}',
                    )
                log.info("web: %s sends %s to %s", self.user, cmd, node)
                return self._reply(*view.command(node, cmd))

            def _login(self, method):
                if method == "GET":
                    return self._login_page(200)
                raw = self.headers.get("Content-Length") or "0"
                if not raw.isdigit() or int(raw) > MAX_BODY:
                    return self._reply(413, "text/plain", b"login form too large\n")
                form = {
                    k: v[-1]
                    for k, v in parse_qs(
                        self.rfile.read(int(raw)).decode("utf-8", "replace")
                    ).items()
                }
                name, password = form.get("user", ""), form.get("password", "")
                stored = outer.users.get(name)
                if stored is None or not web_users.verify(password, stored):
                    outer.refused += 1
                    log.warning(
                        "web login refused for %r from %s", name[:40], self.client_address[0]
                    )
                    return self._login_page(401, "Wrong name or password.")
                sid = secrets.token_urlsafe(32)
                now = time.monotonic()
                outer.sessions = {k: v for k, v in outer.sessions.items() if v[1] > now}
                outer.sessions[sid] = (name, now + outer.session_s)
                cookie = (
                    f"{COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite=Strict; "
                    f"Max-Age={int(outer.session_s)}"
                )
                return self._reply(
                    303, "text/plain", b"", [("Location", "/ui/"), ("Set-Cookie", cookie)]
                )

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def log_message(self, *a):
                pass

        class Server(BoundedHTTPServer):
            def handle_error(self, request, client_address):  # a failed handshake: one debug line
                log.debug("web connection from %s failed", client_address[0], exc_info=True)

        try:
            self.httpd = Server((host, port), Handler, self.MAX_CONNECTIONS)
        except OSError as exc:
            raise GridTwinError(
                f"cannot serve the web view on {host}:{port}: {exc.strerror or exc}",
                hint="set [web] host/port to a free address, or empty host for loopback only",
            ) from None
        self.httpd.socket = ctx.wrap_socket(
            self.httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="web-https", daemon=True
        )

    @classmethod
    def from_site(cls, view, site) -> "RemoteWeb | None":
        web = getattr(site, "web", None)
        if web is None or not web.host:
            return None
        from gridtwin.pki import PKI
        from gridtwin.web.config import users_path

        pki = PKI.for_site(site)
        return cls(
            view,
            web.host,
            web.port,
            pki.server_cert_path,
            pki.server_key_path,
            users_path(site),
            web.session_h * 3600,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
