"""The web view beyond loopback (issue #18): HTTPS only, with the site PKI's server certificate, and
a login against a users file of mode 600; a wrong login is refused, in a client that checks the
certificate against the site CA and in Chromium."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl

import pytest

from fixtures.broker import example_site_path, free_port, make_site_pki
from gridtwin.errors import GridTwinError

PASSWORD = "correct horse battery"


@pytest.fixture
def remote(tmp_path):
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.web import WebView, users
    from gridtwin.web.config import users_path
    from gridtwin.web.remote import RemoteWeb

    port = free_port()
    sp = make_site_pki(
        tmp_path / "site",
        example_site_path().read_text() + f'\n[web]\nhost = "127.0.0.1"\nport = {port}\n',
    )
    users.add(users_path(sp.site), "ops", PASSWORD)
    store = SqliteStore(tmp_path / "db")
    srv = RemoteWeb.from_site(WebView(store, site=sp.site), sp.site)
    srv.start()
    srv.sp = sp
    yield srv
    srv.stop()
    store.close()


def _https(srv, method, path, body=None, headers=None):
    ctx = ssl.create_default_context(
        cafile=str(srv.sp.pki.ca_cert_path)
    )  # the site CA, names checked
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def _login(srv, user, password):
    from urllib.parse import urlencode

    return _https(
        srv,
        "POST",
        "/ui/login",
        urlencode({"user": user, "password": password}),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_https_with_the_site_certificate_and_a_login(remote):
    assert _https(remote, "GET", "/api/ui/fleet")[0] == 401
    code, headers, _ = _https(remote, "GET", "/ui/")
    assert code == 303 and headers["Location"] == "/ui/login"
    code, _, body = _login(remote, "ops", "wrong password!")
    assert code == 401 and b"Wrong name or password." in body and remote.refused == 1
    assert _login(remote, "nobody", PASSWORD)[0] == 401
    code, headers, _ = _login(remote, "ops", PASSWORD)
    assert code == 303
    cookie = headers["Set-Cookie"]
    assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=Strict"))
    sid = cookie.split(";")[0]
    code, _, body = _https(remote, "GET", "/api/ui/fleet", headers={"Cookie": sid})
    assert code == 200 and [n["id"] for n in json.loads(body)["nodes"]][:2] == ["util_a", "trf_a"]
    assert (
        _https(remote, "GET", "/api/ui/fleet", headers={"Cookie": "gridtwin_session=forged"})[0]
        == 401
    )
    # no plain HTTP on the port: a request in clear text gets no HTTP answer
    with socket.create_connection(("127.0.0.1", remote.port), timeout=5) as s:
        s.sendall(b"GET /api/ui/fleet HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not s.recv(100).startswith(b"HTTP/1.1 200")


def test_the_users_file_must_be_private_and_present(tmp_path):
    from gridtwin.web import users

    path = tmp_path / "web-users"
    with pytest.raises(GridTwinError, match="no web users file") as exc:
        users.load(path)
    assert "python -m gridtwin.web.users" in exc.value.hint
    users.add(path, "ops", PASSWORD)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert users.verify(PASSWORD, users.load(path)["ops"]) and not users.verify(
        "nope", users.load(path)["ops"]
    )
    os.chmod(path, 0o644)
    with pytest.raises(GridTwinError, match="readable by others") as exc:
        users.load(path)
    assert exc.value.hint == f"chmod 600 {path}"
    with pytest.raises(GridTwinError, match="shorter than 10"):
        users.add(path, "ops", "short")


def test_a_wrong_login_is_refused_in_chromium(remote, tmp_path):
    from test_web import Browser

    b = Browser(tmp_path)
    try:
        # the certificate is checked by the client above; Chromium does not know the site CA
        b.send("Security.setIgnoreCertificateErrors", ignore=True)
        base = f"https://127.0.0.1:{remote.port}"
        b.goto(f"{base}/ui/")
        b.wait("document.getElementById('password')", 5, "the login form")
        b.eval(
            "document.getElementById('user').value = 'ops'; "
            "document.getElementById('password').value = "
            "'nope';document.getElementById('submit').click()"
        )
        b.wait(
            "document.getElementById('message').textContent.includes('Wrong name or password')",
            5,
            "the refusal",
        )
        b.events.clear()  # the refusal is a 401, which Chromium logs as a failed load
        b.eval(
            "document.getElementById('user').value = 'ops'; "
            f"document.getElementById('password').value = '{PASSWORD}'; "
            "document.getElementById('submit').click()"
        )
        b.wait("document.querySelector('#fleet tbody tr')", 5, "the fleet after logging in")
        assert b.errors() == []
    finally:
        b.close()


def test_the_daemon_serves_it_beyond_loopback_only_with_users(tmp_path):
    """[web] host set: the daemon refuses to start without a users file (one line naming the fix),
    and with one serves the login over HTTPS until it stops."""
    from gridtwin.daemon.service import Daemon
    from gridtwin.web import users
    from gridtwin.web.config import users_path

    port = free_port()
    sp = make_site_pki(
        tmp_path / "site",
        example_site_path().read_text() + f'\n[web]\nhost = "127.0.0.1"\nport = {port}\n',
    )
    with pytest.raises(GridTwinError, match="no web users file"):
        Daemon.from_site(sp.site, metrics_port=free_port(), sntp=None)
    users.add(users_path(sp.site), "ops", PASSWORD)
    d = Daemon.from_site(sp.site, metrics_port=free_port(), sntp=None).start()
    try:
        d.web_remote.sp = sp
        code, _, body = _https(d.web_remote, "GET", "/ui/login")
        assert code == 200 and b'name="password"' in body
    finally:
        d.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_command_button_shows_its_ack(fleet_broker, fleet_site, tmp_path):
    """Logged in over HTTPS, a node page's ping button goes through the daemon's dispatcher to the
    node, and its ack shows, on the button's line and in the commands table; without the header
    (a cross-site form) or a session the command is refused."""
    from fixtures.broker import wait_until
    from fixtures.daemon_fleet import endpoint
    from gridtwin.daemon.service import Daemon
    from gridtwin.web import users
    from gridtwin.web.remote import RemoteWeb
    from test_web import AckingNode, Browser

    pki = fleet_site.pki  # the broker's site: its server certificate, its CA
    users.add(tmp_path / "web-users", "ops", PASSWORD)
    d = Daemon(
        endpoint=endpoint(fleet_broker),
        db_path=tmp_path / "db",
        metrics_port=free_port(),
        instance=2,
    ).start()
    srv = RemoteWeb(
        d.web,
        "127.0.0.1",
        free_port(),
        pki.server_cert_path,
        pki.server_key_path,
        tmp_path / "web-users",
        3600,
    )
    srv.start()
    srv.sp = fleet_site
    node = AckingNode(fleet_broker, "node07")
    b = Browser(tmp_path)
    try:
        assert d.ingest.wait_connected() and node.subscribed.wait(10)
        node.publish(
            json.dumps({"state": "online", "fw": "1.4.2", "interval": 1000}).encode(),
            "status",
            retain=True,
        )
        wait_until(lambda: d.dispatcher.is_online("node07"), 10, "node07 online at the dispatcher")
        body = json.dumps({"node": "node07", "cmd": "ping"})
        assert _https(srv, "POST", "/api/ui/cmd", body)[0] == 401
        code, headers, _ = _login(srv, "ops", PASSWORD)
        sid = headers["Set-Cookie"].split(";")[0]
        assert (
            _https(srv, "POST", "/api/ui/cmd", body, {"Cookie": sid})[0] == 403
        )  # no X-Requested-With
        code, _, out = _https(
            srv,
            "POST",
            "/api/ui/cmd",
            json.dumps({"node": "node07", "cmd": "reboot"}),
            {"Cookie": sid, "X-Requested-With": "gridtwin"},
        )
        assert code == 400 and b"gridtwin cmd" in out

        b.send("Security.setIgnoreCertificateErrors", ignore=True)
        base = f"https://127.0.0.1:{srv.port}"
        b.goto(f"{base}/ui/login")
        b.eval(
            "document.getElementById('user').value = 'ops'; "
            f"document.getElementById('password').value = '{PASSWORD}'; "
            "document.getElementById('submit').click()"
        )
        b.wait("document.querySelector('#fleet tbody tr')", 5, "the fleet after logging in")
        b.goto(f"{base}/ui/#/node/node07")
        b.wait("document.querySelector('[data-cmd=ping]')", 5, "the ping button")
        b.eval("document.querySelector('[data-cmd=ping]').click()")
        b.wait(
            "document.getElementById('cmd-result').textContent.includes('pong')",
            10,
            "the ack by the button",
        )
        b.wait(
            "document.getElementById('commands').textContent.includes('pong')",
            5,
            "the ack in the table",
        )
        assert b.errors() == []
    finally:
        b.close()
        node.close()
        srv.stop()
        d.stop()
