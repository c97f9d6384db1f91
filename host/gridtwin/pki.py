"""The site PKI: one CA, one certificate per node and per service, a CRL. ECDSA P-256 throughout.

P-256 because it is the fastest handshake an ESP32's mbedTLS can do and every peer here (OpenSSL in
Mosquitto and paho, mbedTLS in MicroPython) speaks it. Layout under the certs folder::

    ca/ca.crt  ca/ca.key (0600)  ca/ca.der  ca/crl.pem  index.json
    <identity>/cert.pem  key.pem (0600)  cert.der  key.der (0600)
    _backup/<UTC timestamp>/<identity>/...     (old pairs after rotate/revoke/--force)

PEM is for the host side (Mosquitto, paho, Telegraf, Grafana). DER is for the board: MicroPython's
``ssl.SSLContext(PROTOCOL_TLS_CLIENT).load_cert_chain(cert_der, key_der)`` and
``load_verify_locations(cadata=ca_der)`` take these bytes as they are (tests/host/test_pki.py proves
it under the unix port against the rendered Mosquitto). The node key DER is SEC1 ("EC PRIVATE KEY").

Identities: the broker's server certificate (`SERVER_IDENTITY`, every configured host name and
address as SAN), the services `HOST_IDENTITY`, `TELEGRAF_IDENTITY`, `GRAFANA_IDENTITY`, one more
host identity per extra daemon instance (`host_identities`: ``gridtwin-host-2`` ...), and one per
node (CN = node id). The broker maps the CN to the MQTT username (see gridtwin.broker).

Nothing is overwritten without ``force``: an old pair is moved to ``_backup/`` first. Keys are
written 0600 and folders 0700. ``index.json`` records every serial ever issued, so the CRL can be
re-signed at any time (`refresh_crl`). Mosquitto reads the CA and the CRL at start only: after a
revocation the broker must be restarted (gridtwin.broker.notify_revocation). `list` and `warnings`
check every current certificate against the current CA by signature and against the CRL; `ensure`
and `init` never make a CA where the PKI of another one is still on disk.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gridtwin.errors import ConfigError, PKIError
from gridtwin.identities import (  # noqa: F401  (the PKI's names, re-exported for its users)
    GRAFANA_IDENTITY,
    HOST_IDENTITY,
    OTA_IDENTITY,
    SERVER_IDENTITY,
    SERVICE_IDENTITIES,
    TELEGRAF_IDENTITY,
)
from gridtwin.site import HOST_INSTANCE_RE, ID_RE

if TYPE_CHECKING:
    from gridtwin.site import Site

OPCUA_PREFIX = "opcua/"  # OPC UA application identities live in certs/opcua/<name>/


def host_identities(site: "Site | None") -> list[str]:
    """The host daemons' identities: ``gridtwin-host`` for instance 1, then ``gridtwin-host-2`` ...
    ``gridtwin-host-N`` for ``[daemon] instances = N``. Each daemon needs its own certificate
    because the broker makes the CN the client id: two daemons on one certificate would share one
    session, and each connection would take it over from the other."""
    daemon = getattr(site, "daemon", None) if site is not None else None
    n = getattr(daemon, "instances", 1) or 1
    return [HOST_IDENTITY] + [f"{HOST_IDENTITY}-{k}" for k in range(2, n + 1)]


def host_identity(site: "Site", instance: int = 1) -> str:
    """Instance K's identity; a ConfigError (file, key, fix) when the site has fewer instances."""
    ids = host_identities(site)
    if not 1 <= instance <= len(ids):
        raise ConfigError(
            site.path,
            "daemon.instances",
            f"instance {instance} is not configured (instances = {len(ids)})",
            f"set [daemon] instances = {max(instance, 1)}, then `gridtwin pki issue --all` and "
            "render the broker again (`gridtwin broker run` / `broker install`)",
        )
    return ids[instance - 1]


DEFAULT_CA_DAYS = 3650
DEFAULT_DAYS = 825
DEFAULT_CRL_DAYS = 365
DEFAULT_WARN_DAYS = 30
# Certificates start a little in the past so a peer whose clock is slightly behind accepts them.
BACKDATE = dt.timedelta(minutes=5)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class CertInfo:
    """One row of `PKI.list()`."""

    identity: str
    kind: str  # ca | server | service | node
    serial: int
    not_after: dt.datetime
    status: str  # valid | expiring | expired | revoked | superseded

    @property
    def days_left(self) -> float:
        return (self.not_after - _now()).total_seconds() / 86400


# --- low-level helpers (also used by tests to make foreign or expired certificates) --------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_ca(
    common_name: str,
    days: int = DEFAULT_CA_DAYS,
    *,
    organization: str = "GridTwin",
    not_before: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (key, certificate)."""
    key = new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = not_before or (_now() - BACKDATE)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def sign_leaf(
    ca_key,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    server: bool = False,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = DEFAULT_DAYS,
    key=None,
    organization: str = "GridTwin",
    uris: Iterable[str] = (),
    application: bool = False,
):
    """A leaf certificate signed by the CA: (key, certificate). Validity may be set (tests:
    expired).

    application: an OPC UA application instance certificate (Part 6, 6.2.2): key usage also
    nonRepudiation, keyEncipherment and dataEncipherment (its RSA key encrypts), both serverAuth and
    clientAuth, and the application URI among `uris` (subjectAltName)."""
    key = key or new_key()
    start = not_before or (_now() - BACKDATE)
    end = not_after or (start + dt.timedelta(days=days))
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=application,
                key_encipherment=application,
                data_encipherment=application,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                if application
                else [
                    ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode from the start (a key is never briefly
    world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_identity(folder: Path, key, cert: x509.Certificate) -> None:
    """Write cert.pem, key.pem (0600), cert.der and key.der (0600) into folder (made 0700)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    _write(folder / "cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / "cert.der", cert.public_bytes(serialization.Encoding.DER), 0o644)
    _write(
        folder / "key.pem",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    # SEC1 DER: the form mbedTLS (MicroPython's ssl) parses without PKCS#8 support compiled in.
    _write(
        folder / "key.der",
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        0o600,
    )


def issue_test_identity(
    out_dir: str | Path,
    identity: str,
    *,
    ca: "PKI | tuple | None" = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Path:
    """Test-only: a certificate for `identity` with custom validity and/or from another CA.

    ca: a PKI (its CA signs), a (key, cert) pair, or None for a fresh foreign CA. The files are
    written as an identity folder under out_dir (cert.pem, key.pem, ...; the signing CA as ca.crt)
    and are NOT recorded in any index. Returns the folder.
    """
    if ca is None:
        ca = new_ca(f"foreign CA for {identity}")
    if isinstance(ca, PKI):
        ca = ca._load_ca()
    ca_key, ca_cert = ca
    key, cert = sign_leaf(ca_key, ca_cert, identity, not_before=not_before, not_after=not_after)
    folder = Path(out_dir) / identity
    write_identity(folder, key, cert)
    _write(folder / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return folder


# --- the site PKI --------------------------------------------------------------------------------


class PKI:
    """The PKI in one certs folder. `PKI.for_site(site)` uses the site's folder and settings."""

    def __init__(self, certs_dir: str | Path, site: "Site | None" = None):
        self.dir = Path(certs_dir)
        self.site = site

    @classmethod
    def for_site(cls, site: "Site") -> "PKI":
        return cls(site.certs_dir, site)

    # paths (others call these; keep them stable)
    @property
    def ca_dir(self) -> Path:
        return self.dir / "ca"

    @property
    def ca_cert_path(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def ca_der_path(self) -> Path:
        return self.ca_dir / "ca.der"

    @property
    def crl_path(self) -> Path:
        return self.ca_dir / "crl.pem"

    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    @property
    def backup_dir(self) -> Path:
        return self.dir / "_backup"

    def identity_dir(self, identity: str) -> Path:
        return self.dir / identity

    def cert_path(self, identity: str) -> Path:
        return self.identity_dir(identity) / "cert.pem"

    def key_path(self, identity: str) -> Path:
        return self.identity_dir(identity) / "key.pem"

    def der_cert_path(self, identity: str) -> Path:
        return self.identity_dir(identity) / "cert.der"

    def der_key_path(self, identity: str) -> Path:
        return self.identity_dir(identity) / "key.der"

    @property
    def server_cert_path(self) -> Path:
        return self.cert_path(SERVER_IDENTITY)

    @property
    def server_key_path(self) -> Path:
        return self.key_path(SERVER_IDENTITY)

    # settings
    def _setting(self, name: str, default: int) -> int:
        return self.site.pki.get(name, default) if self.site is not None else default

    def exists(self) -> bool:
        return self.ca_cert_path.exists() and self.ca_key_path.exists()

    def has(self, identity: str) -> bool:
        return self.cert_path(identity).exists() and self.key_path(identity).exists()

    # index
    def _index(self) -> dict:
        try:
            return json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return {"serials": {}, "server_names": {}}
        except (OSError, ValueError) as exc:
            raise PKIError(
                f"{self.index_path}: cannot read the certificate index: {exc}",
                hint="restore it from _backup/ or re-create the PKI with `gridtwin pki init "
                "--force`",
            ) from None

    def _save_index(self, index: dict) -> None:
        _write(
            self.index_path, (json.dumps(index, indent=1, sort_keys=True) + "\n").encode(), 0o600
        )

    def identities(self) -> list[str]:
        """Every identity that has a current certificate in the folder, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.dir.iterdir()
            if p.is_dir() and p.name not in ("ca", "_backup") and (p / "cert.pem").exists()
        )

    def remnants(self) -> list[str]:
        """What of a PKI is on disk: CA files, the index, identity folders. Empty: a new PKI may be
        made."""
        ca = [f"ca/{p.name}" for p in sorted(self.ca_dir.iterdir())] if self.ca_dir.is_dir() else []
        return ca + (["index.json"] if self.index_path.exists() else []) + self.identities()

    def _orphaned(self) -> PKIError:
        """The CA is gone (or half gone) but what it signed is still there: a new CA would orphan
        it."""
        left = self.remnants()
        certs = [r for r in left if "/" not in r and r != "index.json"]
        what = [r for r in left if "/" in r or r == "index.json"]
        if certs:
            what.append(
                f"{len(certs)} certificates "
                f"({', '.join(certs[:3])}{', ...' if len(certs) > 3 else ''})"
            )
        return PKIError(
            f"the CA is missing ({self.ca_dir}/ca.crt + ca.key), but {self.dir} still holds what "
            f"it signed: {', '.join(what)}; a new CA would orphan them",
            hint=f"restore {self.ca_dir} from your backup, or start over with `gridtwin pki init "
            "--force --nodes`: the old PKI moves to _backup/ and every board needs its new pair",
        )

    def _load_ca(self):
        if not self.exists():
            if self.remnants():
                raise self._orphaned()
            raise PKIError(f"no CA in {self.dir}", hint="run `gridtwin pki init` first")
        try:
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), None)
            cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        except PermissionError as exc:
            raise PKIError(
                f"cannot read the CA: {exc}", hint="run as the user that owns the certs folder"
            ) from None
        except ValueError as exc:
            raise PKIError(
                f"{self.ca_dir}: the CA files are damaged: {exc}",
                hint="restore them from _backup/ or `gridtwin pki init --force`",
            ) from None
        return key, cert

    def load_cert(self, identity: str) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_path(identity).read_bytes())
        except FileNotFoundError:
            raise PKIError(
                f"'{identity}' has no certificate in {self.dir}",
                hint=f"run `gridtwin pki issue {identity}`",
            ) from None

    def kind(self, identity: str) -> str:
        if identity == SERVER_IDENTITY:
            return "server"
        if identity in SERVICE_IDENTITIES or HOST_INSTANCE_RE.match(identity):
            return "service"
        return "node"

    def _check_identity(self, identity: str) -> None:
        if (identity or "").startswith(OPCUA_PREFIX) and ID_RE.match(identity[len(OPCUA_PREFIX) :]):
            return  # an OPC UA application (`pki issue --opcua NAME`; gridtwin/opcua/certs.py)
        if not ID_RE.match(identity or ""):
            raise PKIError(
                f"'{identity}' is not a valid identity",
                hint="use 1 to 32 letters, digits, '_' or '-'",
            )
        if (
            self.kind(identity) == "node"
            and self.site is not None
            and identity not in self.site.node_ids
        ):
            known = self.site.node_ids + [SERVER_IDENTITY, *SERVICE_IDENTITIES]
            near = difflib.get_close_matches(identity, known, n=1)
            hint = (
                f"did you mean '{near[0]}'?"
                if near
                else f"add [[nodes]] id = \"{identity}\" to {self.site.path} first"
            )
            raise PKIError(
                f"'{identity}' is not a node of site '{self.site.id}' nor a service", hint=hint
            )
        if (
            HOST_INSTANCE_RE.match(identity)
            and self.site is not None
            and identity not in host_identities(self.site)
        ):
            raise PKIError(
                f"'{identity}' is a host daemon instance that site '{self.site.id}' does not have",
                hint=f"raise [daemon] instances in {self.site.path} first",
            )

    def _server_names(self) -> tuple[list[str], list[str]]:
        if self.site is not None:
            return list(self.site.broker.hosts), list(self.site.broker.addresses)
        names = self._index().get("server_names") or {}
        return names.get("hosts", ["localhost"]), names.get("addresses", ["127.0.0.1", "::1"])

    def _backup(self, identities: Iterable[str], stamp: str | None = None) -> Path | None:
        """Move identity folders into _backup/<stamp>/; returns the backup folder (None if nothing
        moved)."""
        moving = [i for i in identities if self.identity_dir(i).exists()]
        if not moving:
            return None
        target = self._backup_folder(stamp)
        for i in moving:
            shutil.move(str(self.identity_dir(i)), str(target / i))
        return target

    def _backup_folder(self, stamp: str | None = None) -> Path:
        """A new, empty _backup/<UTC time>[-n]/ folder (0700)."""
        self.backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = stamp or _now().strftime("%Y%m%dT%H%M%SZ")
        target, n = self.backup_dir / base, 1
        while target.exists():  # two rotations in one second keep both backups
            n += 1
            target = self.backup_dir / f"{base}-{n}"
        target.mkdir(mode=0o700)
        return target

    def _issue(self, identity: str, index: dict, ca) -> x509.Certificate:
        if self.kind(identity) == "server":
            hosts, addresses = self._server_names()
            index["server_names"] = {"hosts": hosts, "addresses": addresses}
            return self._sign(
                identity, "server", index, ca, server=True, dns_names=hosts, ip_addresses=addresses
            )
        return self._sign(identity, self.kind(identity), index, ca)

    def _sign(self, identity: str, kind: str, index: dict, ca, **leaf) -> x509.Certificate:
        """Sign a leaf for `identity` (sign_leaf's keywords), write it, record it in the index (the
        identity's previous valid serial becomes superseded)."""
        ca_key, ca_cert = ca
        name = leaf.pop("common_name", identity)
        days = self._setting("days", DEFAULT_DAYS)
        key, cert = sign_leaf(ca_key, ca_cert, name, days=days, **leaf)
        # A cert must never outlive its CA: peers would reject the chain anyway, so say it now.
        if cert.not_valid_after_utc > ca_cert.not_valid_after_utc:
            raise PKIError(
                f"'{identity}' would outlive the CA ({ca_cert.not_valid_after_utc:%Y-%m-%d})",
                hint="lower [pki] days or renew the CA with `gridtwin pki init --force`",
            )
        write_identity(self.identity_dir(identity), key, cert)
        for rec in index["serials"].values():
            if rec["identity"] == identity and rec["status"] == "valid":
                rec["status"] = "superseded"
        index["serials"][str(cert.serial_number)] = {
            "identity": identity,
            "kind": kind,
            "not_after": cert.not_valid_after_utc.isoformat(),
            "status": "valid",
            "issued": _now().isoformat(),
        }
        return cert

    # public operations
    def issue_leaf(self, identity: str, kind: str, **leaf) -> x509.Certificate:
        """Issue and record a certificate of any shape the site CA signs: `identity` is its folder
        under the certs folder (e.g. "opcua/server"), `kind` its index kind, `leaf` sign_leaf's
        keywords (key, common_name, uris, dns_names, ip_addresses, application, ...). The OPC UA
        identities (gridtwin/opcua/certs.py) are issued here."""
        ca = self._load_ca()
        index = self._index()
        cert = self._sign(identity, kind, index, ca, **leaf)
        self._save_index(index)
        return cert

    def ca_certificate(self) -> x509.Certificate:
        return self._load_ca()[1]

    def is_current(
        self, cert: x509.Certificate, margin: dt.timedelta = dt.timedelta(days=1)
    ) -> bool:
        """The certificate is signed by the current CA, not revoked by its CRL and valid beyond
        `margin` from now."""
        return (
            self._issued_by(cert, self.ca_certificate())
            and cert.serial_number not in self.crl_revoked()
            and cert.not_valid_after_utc > _now() + margin
        )

    def init(self, site: "Site | None" = None, force: bool = False) -> list[str]:
        """Create the CA, the server certificate, the service identities and an empty CRL.

        Refuses if a CA exists, unless force (then the whole old PKI moves to _backup/ first and
        every node certificate must be issued again). Returns the identities created.
        """
        self.site = site or self.site
        if self.remnants():
            if not force:
                if not self.exists():
                    raise self._orphaned()
                raise PKIError(
                    f"{self.dir} already holds a CA",
                    hint="keep it, or replace it with --force; every node then needs a new "
                    "certificate",
                )
            moved = [p.name for p in self.dir.iterdir() if p.is_dir() and p.name != "_backup"]
            target = self._backup(moved) or self._backup_folder()
            if self.index_path.exists():
                shutil.move(str(self.index_path), str(target / "index.json"))
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        site_id = self.site.id if self.site is not None else "site"
        ca_key, ca_cert = new_ca(
            f"GridTwin {site_id} CA",
            self._setting("ca_days", DEFAULT_CA_DAYS),
            organization=f"GridTwin {site_id}",
        )
        self.ca_dir.mkdir(mode=0o700, exist_ok=True)
        _write(
            self.ca_key_path,
            ca_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        _write(self.ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(self.ca_der_path, ca_cert.public_bytes(serialization.Encoding.DER), 0o644)
        index = {"serials": {}, "server_names": {}}
        created = [SERVER_IDENTITY, *SERVICE_IDENTITIES, *host_identities(self.site)[1:]]
        for identity in created:
            self._issue(identity, index, (ca_key, ca_cert))
        self._save_index(index)
        self.refresh_crl()
        return created

    def ensure(self, site: "Site | None" = None) -> list[str]:
        """Create whatever is missing (CA, server, services, every site node); never overwrite.

        Refuses (PKIError naming the fix) when the CA is gone but what it signed is still there (a
        new CA would orphan it: `init` says so) and when a certificate was not issued by the current
        CA (the broker would refuse it: `pki rotate all`)."""
        self.site = site or self.site
        created = [] if self.exists() else self.init(self.site)
        foreign = self.foreign()
        if foreign:
            raise self._foreign_error(foreign)
        wanted = [SERVER_IDENTITY, *SERVICE_IDENTITIES, *host_identities(self.site)[1:]] + (
            self.site.node_ids if self.site else []
        )
        for identity in wanted:
            if not self.has(identity):
                self.issue(identity)
                created.append(identity)
        return created

    def issue(self, identity: str, force: bool = False) -> Path:
        """Issue a certificate for a node or service; refuses to overwrite one unless force."""
        self._check_identity(identity)
        ca = self._load_ca()
        if self.identity_dir(identity).exists():
            if not force:
                raise PKIError(
                    f"'{identity}' already has a certificate",
                    hint=f"use `gridtwin pki rotate {identity}` "
                    f"(or `pki issue {identity} --force`)",
                )
            self._backup([identity])
        index = self._index()
        self._issue(identity, index, ca)
        self._save_index(index)
        return self.identity_dir(identity)

    def rotate(self, identity: str, revoke_old: bool = False) -> list[tuple[str, Path]]:
        """New key and certificate for one identity, or 'all' (every issued one). Old pairs go to
        one timestamped backup folder. The old certificate stays valid until revoked (deploy the new
        one first), unless revoke_old. Returns [(identity, backup folder)].
        """
        ca = self._load_ca()
        index = self._index()
        if identity == "all":  # also the certificates another CA signed: this is how they come home
            targets = self.identities()
        else:
            self._check_identity(identity)
            if not self.has(identity):
                raise PKIError(
                    f"'{identity}' has no certificate to rotate",
                    hint=f"run `gridtwin pki issue {identity}`",
                )
            targets = [identity]
        old = {t: self.load_cert(t).serial_number for t in targets}
        backup = self._backup(targets)
        for t in targets:
            self._issue(t, index, ca)
            if (
                revoke_old and str(old[t]) in index["serials"]
            ):  # another CA's serial means nothing to this CRL
                self._mark_revoked(index, old[t])
        self._save_index(index)
        if revoke_old:
            self.refresh_crl()
        return [(t, backup / t) for t in targets]

    def _mark_revoked(self, index: dict, serial: int) -> None:
        rec = index["serials"].get(str(serial))
        if rec is None:
            raise PKIError(
                f"serial {serial} was not issued by this PKI", hint="see `gridtwin pki list --all`"
            )
        rec["status"] = "revoked"
        rec["revoked_at"] = _now().isoformat()

    def revoke(self, identity: str, serial: int | None = None) -> list[int]:
        """Revoke the identity's current certificate (moved to _backup/), or one older serial of it.

        Re-signs the CRL. The broker reads the CRL only at start: restart it afterwards.
        """
        index = self._index()
        if serial is None:
            if not self.has(identity):
                self._check_identity(identity)
                raise PKIError(
                    f"'{identity}' has no current certificate to revoke",
                    hint="to revoke an older one give --serial (see `gridtwin pki list --all`)",
                )
            serial = self.load_cert(identity).serial_number
            self._mark_revoked(index, serial)
            self._backup([identity])
        else:
            rec = index["serials"].get(str(serial))
            if rec is None or rec["identity"] != identity:
                raise PKIError(
                    f"serial {serial} does not belong to '{identity}'",
                    hint="see `gridtwin pki list --all`",
                )
            self._mark_revoked(index, serial)
            if self.has(identity) and self.load_cert(identity).serial_number == serial:
                self._backup([identity])
        self._save_index(index)
        self.refresh_crl()
        return [serial]

    # integrity: every certificate against the current CA and its CRL
    @staticmethod
    def _issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
        """True when ca_cert signed cert: issuer name AND signature (a new CA of the same name
        fails)."""
        try:
            cert.verify_directly_issued_by(ca_cert)
            return True
        except (
            Exception
        ):  # ValueError (name), InvalidSignature, TypeError (key type): not ours either way
            return False

    def crl_problem(self, ca_cert: x509.Certificate | None = None) -> str | None:
        """Why the CRL cannot be trusted (missing, unreadable, signed by another CA), or None."""
        ca_cert = ca_cert or self._load_ca()[1]
        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except FileNotFoundError:
            return f"{self.crl_path} is missing"
        except ValueError as exc:
            return f"{self.crl_path} is damaged: {exc}"
        if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):
            return f"{self.crl_path} was not signed by the current CA"
        return None

    def crl_revoked(self) -> set[int]:
        """The serials the CRL on disk revokes (empty when there is no trustworthy CRL)."""
        try:
            return {r.serial_number for r in x509.load_pem_x509_crl(self.crl_path.read_bytes())}
        except (FileNotFoundError, ValueError):
            return set()

    def foreign(self) -> list[str]:
        """Identities whose current certificate the current CA did not sign (the broker refuses
        them)."""
        ca_cert = self._load_ca()[1]
        return [i for i in self.identities() if not self._issued_by(self.load_cert(i), ca_cert)]

    def _foreign_error(self, foreign: list[str]) -> PKIError:
        return PKIError(
            f"{len(foreign)} certificate(s) in {self.dir} were not issued by the current CA "
            f"({', '.join(foreign)}): the broker refuses them",
            hint="re-issue them under this CA with `gridtwin pki rotate all`, which moves the old "
            "pairs to _backup/, then deploy the new pairs to the boards",
        )

    def refresh_crl(self) -> Path:
        """Sign a new CRL of every revoked serial, next update `crl_days` ahead."""
        ca_key, ca_cert = self._load_ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - BACKDATE)
            .next_update(now + dt.timedelta(days=self._setting("crl_days", DEFAULT_CRL_DAYS)))
        )
        for serial, rec in sorted(self._index()["serials"].items()):
            if rec["status"] == "revoked":
                revoked_at = dt.datetime.fromisoformat(rec.get("revoked_at") or now.isoformat())
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(serial))
                    .revocation_date(revoked_at)
                    .build()
                )
        crl = builder.sign(ca_key, hashes.SHA256())
        _write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return self.crl_path

    def crl_next_update(self) -> dt.datetime | None:
        try:
            return x509.load_pem_x509_crl(self.crl_path.read_bytes()).next_update_utc
        except FileNotFoundError:
            return None

    def list(self, include_old: bool = False) -> list[CertInfo]:
        """The CA and every current certificate (plus revoked and superseded ones if
        include_old)."""
        ca_key, ca_cert = self._load_ca()
        warn = dt.timedelta(days=self._setting("warn_days", DEFAULT_WARN_DAYS))
        now = _now()

        def status(not_after: dt.datetime, recorded: str) -> str:
            if recorded in ("revoked", "superseded", "foreign"):
                return recorded
            if not_after <= now:
                return "expired"
            return "expiring" if not_after - now < warn else "valid"

        rows = [
            CertInfo(
                "ca",
                "ca",
                ca_cert.serial_number,
                ca_cert.not_valid_after_utc,
                status(ca_cert.not_valid_after_utc, "valid"),
            )
        ]
        index = self._index()["serials"]
        revoked = set() if self.crl_problem(ca_cert) else self.crl_revoked()
        current = set()
        for identity in self.identities():
            cert = self.load_cert(identity)
            rec = index.get(str(cert.serial_number), {})
            current.add(str(cert.serial_number))
            # what the broker will do with it decides, not what the index remembers
            recorded = (
                "foreign"
                if not self._issued_by(cert, ca_cert)
                else "revoked"
                if cert.serial_number in revoked
                else rec.get("status", "valid")
            )
            rows.append(
                CertInfo(
                    identity,
                    self.kind(identity),
                    cert.serial_number,
                    cert.not_valid_after_utc,
                    status(cert.not_valid_after_utc, recorded),
                )
            )
        if include_old:
            for serial, rec in sorted(index.items(), key=lambda kv: kv[1]["identity"]):
                if serial not in current:
                    na = dt.datetime.fromisoformat(rec["not_after"])
                    rows.append(
                        CertInfo(
                            rec["identity"], rec["kind"], int(serial), na, status(na, rec["status"])
                        )
                    )
        return rows

    def warnings(self) -> list[str]:
        """Human sentences for certificates and the CRL that expire soon or have expired."""
        out = []
        rows = self.list()
        foreign = [r.identity for r in rows if r.status == "foreign"]
        if foreign:
            err = self._foreign_error(foreign)
            out.append(f"{err.message}; {err.hint}")
        for row in rows:
            if row.status == "revoked":
                out.append(
                    f"{row.identity}: the current certificate (serial {row.serial:x}) is revoked "
                    f"by the CRL; run `gridtwin pki issue {row.identity} --force` and deploy it"
                )
            elif row.status == "expired":
                out.append(
                    f"{row.identity}: certificate expired on {row.not_after:%Y-%m-%d}; "
                    f"run `gridtwin pki rotate {row.identity}`"
                )
            elif row.status == "expiring":
                out.append(
                    f"{row.identity}: certificate expires in {row.days_left:.0f} days "
                    f"({row.not_after:%Y-%m-%d}); run `gridtwin pki rotate {row.identity}`"
                )
        problem = self.crl_problem()
        if problem:
            out.append(f"CRL: {problem}; run `gridtwin pki crl` and restart the broker")
        nu = None if problem else self.crl_next_update()
        warn = dt.timedelta(days=self._setting("warn_days", DEFAULT_WARN_DAYS))
        if nu is not None and nu - _now() < warn:
            out.append(
                f"CRL: next update due {nu:%Y-%m-%d}; run `gridtwin pki crl` and restart the broker"
            )
        return out
