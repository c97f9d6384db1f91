"""OPC UA application instance certificates from the site PKI, and the trust list built from it.

The site CA is ECDSA P-256 (gridtwin/pki.py), but OPC UA's security policies Basic256Sha256 and
Aes128_Sha256_RsaOaep encrypt and sign with the peer's RSA key, and asyncua (2.1) has no ECC
policy: an ECDSA application certificate cannot open a secure channel at all. So the OPC UA
identities are RSA 2048 keys whose certificates the same CA signs (an ECDSA signature over an RSA
key: any X.509 verifier accepts the chain), with what OPC UA Part 6 asks of an application
instance certificate: the application URI as a URI subjectAltName (plus the host names), key usage
digitalSignature, nonRepudiation, keyEncipherment and dataEncipherment, and both serverAuth and
clientAuth. They live under ``<certs>/opcua/<name>/`` (cert.der, cert.pem, key.pem 0600) and are
recorded in index.json, so `gridtwin pki list --all` shows them and the CRL can revoke them.

The trust list is the site CA and its CRL, read from the PKI at every start (never a copy that
could go stale): a peer must be signed by the site CA and not revoked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gridtwin import pki as pki_mod
from gridtwin.errors import PKIError

SERVER = "server"
COLLECTOR = "collector"


@dataclass(frozen=True)
class Identity:
    name: str
    uri: str
    cert_der: Path
    cert_pem: Path
    key_pem: Path


def application_uri(site_id: str, name: str) -> str:
    return f"urn:gridtwin:{site_id}:opcua-{name}"


def _folder(p: "pki_mod.PKI", name: str) -> Path:
    return p.dir / "opcua" / name


def _current(p: "pki_mod.PKI", folder: Path, uri: str, ca_cert: x509.Certificate) -> bool:
    """The identity on disk is usable: signed by this CA, carries the URI, not expired or revoked."""
    try:
        cert = x509.load_der_x509_certificate((folder / "cert.der").read_bytes())
        (folder / "key.pem").stat()
    except (OSError, ValueError):
        return False
    try:
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        return False
    return (
        uri in uris
        and p._issued_by(cert, ca_cert)
        and cert.serial_number not in p.crl_revoked()
        and cert.not_valid_after_utc > pki_mod._now() + dt.timedelta(days=1)
    )


def issue(
    p: "pki_mod.PKI", name: str, uri: str, hosts=(), addresses=(), force: bool = False
) -> Identity:
    """The OPC UA identity `name` (RSA 2048, URI SAN), issued by the site CA when missing, foreign,
    revoked or expiring (or force); an existing good one is kept."""
    folder = _folder(p, name)
    ident = Identity(name, uri, folder / "cert.der", folder / "cert.pem", folder / "key.pem")
    ca_key, ca_cert = p._load_ca()
    if not force and _current(p, folder, uri, ca_cert):
        return ident
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = pki_mod._now() - pki_mod.BACKDATE
    days = p._setting("days", pki_mod.DEFAULT_DAYS)
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    hosts = list(dict.fromkeys([*hosts, "localhost", socket.gethostname()]))
    addresses = list(dict.fromkeys([*addresses, "127.0.0.1"]))
    sans = (
        [x509.UniformResourceIdentifier(uri)]
        + [x509.DNSName(h) for h in hosts]
        + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(
                        NameOID.ORGANIZATION_NAME,
                        ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
                        if ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
                        else "GridTwin",
                    ),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"opcua-{name}"),
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
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
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
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki_mod.write_identity(folder, key, cert)  # key.der there is PKCS#1 DER; OPC UA uses key.pem
    index = p._index()
    ident_name = f"opcua/{name}"
    for rec in index["serials"].values():
        if rec["identity"] == ident_name and rec["status"] == "valid":
            rec["status"] = "superseded"
    index["serials"][str(cert.serial_number)] = {
        "identity": ident_name,
        "kind": "opcua",
        "not_after": cert.not_valid_after_utc.isoformat(),
        "status": "valid",
        "issued": pki_mod._now().isoformat(),
    }
    p._save_index(index)
    return ident


def revoke(p: "pki_mod.PKI", name: str) -> int:
    """Revoke the OPC UA identity's current certificate (the CRL is re-signed); returns its serial."""
    cert = x509.load_der_x509_certificate((_folder(p, name) / "cert.der").read_bytes())
    index = p._index()
    p._mark_revoked(index, cert.serial_number)
    p._save_index(index)
    p.refresh_crl()
    return cert.serial_number


def trust_store(p: "pki_mod.PKI"):
    """asyncua's TrustStore holding the site CA and the serials its CRL revokes (read now)."""
    from asyncua.crypto.truststore import TrustStore

    ca_cert = p._load_ca()[1]
    problem = p.crl_problem(ca_cert)
    if problem:
        raise PKIError(f"OPC UA trust list: {problem}", hint="run `gridtwin pki crl`")

    store = TrustStore([], [])
    # set directly rather than from folders: asyncua's loader reads every *.pem as a certificate
    # (the CRL too), and the PKI folder is the one home of both
    store._trust_store = x509.verification.Store([ca_cert])
    store._revoked_list = list(x509.load_pem_x509_crl(p.crl_path.read_bytes()))
    return store


def validator(p: "pki_mod.PKI", peer: str):
    """A certificate validator for the peer (`client` or `server`): time, URI, key usage, signed by the
    site CA, not revoked."""
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions as O

    role = O.PEER_CLIENT if peer == "client" else O.PEER_SERVER
    return CertificateValidator(O.TRUSTED_VALIDATION | role, trust_store(p))
