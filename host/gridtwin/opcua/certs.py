"""OPC UA application instance certificates from the site PKI, and the trust list built from it.

The site CA is ECDSA P-256 (gridtwin/pki.py), but OPC UA's security policies Basic256Sha256 and
Aes128_Sha256_RsaOaep encrypt and sign with the peer's RSA key, and asyncua (2.1) has no ECC
policy: an ECDSA application certificate cannot open a secure channel at all. So the OPC UA
identities are RSA 2048 keys whose certificates the same CA signs (an ECDSA signature over an RSA
key: any X.509 verifier accepts the chain), with what OPC UA Part 6 asks of an application
instance certificate: the application URI as a URI subjectAltName (plus the host names), key usage
digitalSignature, nonRepudiation, keyEncipherment and dataEncipherment, and both serverAuth and
clientAuth. The site PKI issues them (``PKI.issue_leaf``, the one place certificates are made;
`gridtwin pki issue --opcua NAME`) under ``<certs>/opcua/<name>/`` (cert.der, cert.pem, key.pem
0600) and records them in index.json, so `gridtwin pki list --all` shows them and the CRL can
revoke them.

The trust list is the site CA and its CRL, read from the PKI at every start (never a copy that
could go stale): a peer must be signed by the site CA and not revoked.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

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


def identity(name: str) -> str:
    """The PKI identity (its folder under the certs folder) of the OPC UA application `name`."""
    return pki_mod.OPCUA_PREFIX + name


def _current(p: "pki_mod.PKI", folder: Path, uri: str) -> bool:
    """The identity on disk is usable: signed by this CA, carries the URI, not expired or
    revoked."""
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
    return uri in uris and p.is_current(cert)


def issue(
    p: "pki_mod.PKI", name: str, uri: str, hosts=(), addresses=(), force: bool = False
) -> Identity:
    """The OPC UA identity `name` (RSA 2048, URI SAN), issued by the site CA when missing, foreign,
    revoked or expiring (or force); an existing good one is kept."""
    folder = p.identity_dir(identity(name))
    ident = Identity(name, uri, folder / "cert.der", folder / "cert.pem", folder / "key.pem")
    if not force and _current(p, folder, uri):
        return ident
    p.issue_leaf(
        identity(name),
        "opcua",
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        common_name=f"opcua-{name}",
        uris=[uri],
        dns_names=list(dict.fromkeys([*hosts, "localhost", socket.gethostname()])),
        ip_addresses=list(dict.fromkeys([*addresses, "127.0.0.1"])),
        application=True,
    )  # key.der there is PKCS#1 DER; OPC UA uses key.pem
    return ident


def issue_named(p: "pki_mod.PKI", site, name: str, force: bool = False) -> Identity:
    """`gridtwin pki issue --opcua NAME`: as `pki issue` does for a node, a good certificate is
    kept unless force (the server and the collector issue theirs on first use anyway)."""
    if not pki_mod.ID_RE.match(name or ""):
        raise PKIError(
            f"'{name}' is not a valid OPC UA application name",
            hint="use 1 to 32 letters, digits, '_' or '-', e.g. server or collector",
        )
    p.ensure(site)
    uri = application_uri(site.id, name)
    folder = p.identity_dir(identity(name))
    if folder.exists() and not force and _current(p, folder, uri):
        raise PKIError(
            f"'{identity(name)}' already has a certificate",
            hint=f"keep it, or replace it with `gridtwin pki issue --opcua {name} --force`",
        )
    if name == SERVER:  # the names a client reaches the server by: [opcua] endpoint's host
        return issue(p, name, uri, *endpoint_names(site.opcua.endpoint), force=True)
    return issue(p, name, uri, force=True)


def endpoint_names(endpoint: str) -> tuple[list[str], list[str]]:
    """(host names, addresses) of an opc.tcp endpoint, for the server certificate's SAN."""
    host = urlparse(endpoint).hostname or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        return [], [host]
    except ValueError:
        return [host], []


def revoke(p: "pki_mod.PKI", name: str) -> int:
    """Revoke the OPC UA identity's current certificate (the CRL is re-signed; the pair moves to
    _backup/, so the next issue makes a new one); returns its serial."""
    return p.revoke(identity(name))[0]


def trust_store(p: "pki_mod.PKI"):
    """asyncua's TrustStore holding the site CA and the serials its CRL revokes (read now)."""
    from asyncua.crypto.truststore import TrustStore

    ca_cert = p.ca_certificate()
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
    """A certificate validator for the peer (`client` or `server`): time, URI, key usage, signed by
    the site CA, not revoked."""
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions as O

    role = O.PEER_CLIENT if peer == "client" else O.PEER_SERVER
    return CertificateValidator(O.TRUSTED_VALIDATION | role, trust_store(p))
