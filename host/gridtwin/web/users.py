"""The web view's users: ``name:scrypt:N:r:p:<salt hex>:<hash hex>`` lines in a file of mode 600.

``python -m gridtwin.web.users FILE NAME`` adds NAME (or sets its password), reading the password
from the terminal, or from standard input when it is not one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import sys
from pathlib import Path

from gridtwin.errors import GridTwinError

N, R, P = 1 << 14, 8, 1  # scrypt's cost: ~50 ms and 16 MB a check on a Pi 4


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt:{N}:{R}:{P}:{salt.hex()}:{digest.hex()}"


def verify(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split(":")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(digest) // 2,
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def load(path: Path) -> dict[str, str]:
    """{name: hash}; a file others may read, or none at all, is an error naming the fix."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GridTwinError(
            f"no web users file at {path}",
            hint=f"add a user: python -m gridtwin.web.users {path} NAME",
        ) from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise GridTwinError(
            f"the web users file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o})",
            hint=f"chmod 600 {path}",
        )
    users = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name:
            raise GridTwinError(
                f"{path}:{i}: not a 'name:hash' line",
                hint="rewrite it with python -m gridtwin.web.users",
            )
        users[name] = stored
    if not users:
        raise GridTwinError(
            f"no users in {path}", hint=f"add one: python -m gridtwin.web.users {path} NAME"
        )
    return users


def add(path: Path, name: str, password: str) -> None:
    if not name or ":" in name or any(c.isspace() for c in name):
        raise GridTwinError(f"bad user name {name!r}", hint="a name without ':' or spaces")
    if len(password) < 10:
        raise GridTwinError("the password is shorter than 10 characters", hint="pick a longer one")
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [ln for ln in lines if ln.partition(":")[0] != name] + [
        f"{name}:{hash_password(password)}"
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(
            "usage: python -m gridtwin.web.users FILE NAME   (the password from the terminal or "
            "stdin)",
            file=sys.stderr,
        )
        return 2
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"password for {argv[1]}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        add(Path(argv[0]), argv[1], password)
    except GridTwinError as exc:
        print(f"gridtwin: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    print(f"gridtwin: {argv[1]} can log in to the web view ({argv[0]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
