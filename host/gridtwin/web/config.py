"""The ``[web]`` section of site.toml: the web view beyond loopback (gridtwin.schema lists it).

On loopback the view is always on the daemon's own server (``[daemon] metrics_port``). ``host`` set
serves it also on that address, over HTTPS only, with the site PKI's server certificate and a login
against the users file (``python -m gridtwin.web.users``, mode 600).
"""

from __future__ import annotations

from pathlib import Path

from gridtwin.site import Key, Section, in_range

WEB = Section(
    {
        "host": Key(
            str,
            "",
            help="address to serve the web view on beyond loopback, over HTTPS with a login "
            "(e.g. 0.0.0.0); empty: loopback only, on the daemon's metrics port",
        ),
        "port": Key(
            int, 9443, check=in_range(1, 65535), help="HTTPS port of the web view beyond loopback"
        ),
        "users": Key(
            str,
            "web-users",
            help="file of web users and their password hashes (mode 600), relative to "
            "the site's var/ folder; add one with `python -m gridtwin.web.users`",
        ),
        "session_h": Key(int, 12, check=in_range(1, 24 * 30), help="hours a login lasts"),
    },
    help="the web view beyond loopback",
)


def users_path(site) -> Path:
    p = Path(site.web.users).expanduser()
    return p if p.is_absolute() else Path(site.var_dir) / p
