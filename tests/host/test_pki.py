"""The site PKI: files, modes, refusals, rotation, revocation, and the DER a board loads."""

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fixtures.broker import make_site_pki
from gridtwin.errors import PKIError
from gridtwin.pki import HOST_IDENTITY, SERVER_IDENTITY, SERVICE_IDENTITIES, PKI

ROOT = Path(__file__).resolve().parents[2]


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_init_writes_p256_ca_server_and_services_with_private_modes(site_pki):
    pki = site_pki.pki
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert mode(pki.dir) == 0o700 and mode(pki.ca_dir) == 0o700 and mode(pki.ca_key_path) == 0o600
    for identity in (SERVER_IDENTITY, *SERVICE_IDENTITIES, *site_pki.site.node_ids):
        assert mode(pki.identity_dir(identity)) == 0o700
        assert mode(pki.key_path(identity)) == 0o600 and mode(pki.der_key_path(identity)) == 0o600
        cert = pki.load_cert(identity)
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == identity
        assert cert.public_key().curve.name == "secp256r1"
        cert.verify_directly_issued_by(ca)
    server = pki.load_cert(SERVER_IDENTITY)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    node_eku = pki.load_cert("pdu_a").extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(node_eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_der_files_match_the_pem_ones(site_pki):
    pki = site_pki.pki
    pem = pki.load_cert("grid1")
    assert x509.load_der_x509_certificate(pki.der_cert_path("grid1").read_bytes()) == pem
    key = serialization.load_der_private_key(pki.der_key_path("grid1").read_bytes(), None)
    assert key.public_key().public_numbers() == pem.public_key().public_numbers()
    assert pki.der_key_path("grid1").read_bytes()[:2] == b"\x30\x77"  # SEC1 ECPrivateKey for P-256
    ca = x509.load_der_x509_certificate(pki.ca_der_path.read_bytes())
    assert ca == x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())


def test_nothing_is_overwritten_without_force(site_pki_copy):
    pki, site = site_pki_copy.pki, site_pki_copy.site
    ca_before = pki.ca_cert_path.read_bytes()
    key_before = pki.key_path("pdu_a").read_bytes()
    with pytest.raises(PKIError, match="already holds a CA"):
        pki.init(site)
    with pytest.raises(PKIError, match="already has a certificate"):
        pki.issue("pdu_a")
    assert pki.ca_cert_path.read_bytes() == ca_before and pki.key_path("pdu_a").read_bytes() == key_before
    assert pki.ensure(site) == []  # idempotent: everything is there
    pki.issue("pdu_a", force=True)
    backups = list(pki.backup_dir.glob("*/pdu_a/key.pem"))
    assert [b.read_bytes() for b in backups] == [key_before]
    pki.init(site, force=True)
    assert pki.ca_cert_path.read_bytes() != ca_before
    assert any(p.read_bytes() == ca_before for p in pki.backup_dir.glob("*/ca/ca.crt"))
    assert not pki.has("pdu_a")  # a new CA means every node needs a new certificate


def test_unknown_identity_is_refused_with_a_suggestion(site_pki):
    with pytest.raises(PKIError, match="did you mean 'pdu_a'"):
        site_pki.pki.issue("pdu_b")
    with pytest.raises(PKIError, match="not a valid identity"):
        site_pki.pki.issue("a/b")


def test_revoke_resigns_the_crl_well_ahead(site_pki_copy):
    pki = site_pki_copy.pki
    serial = pki.load_cert("srv_a").serial_number
    assert pki.revoke("srv_a") == [serial]
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.next_update_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=300)
    assert not pki.has("srv_a")  # the revoked pair went to the backup; a new issue needs no --force
    pki.issue("srv_a")
    rows = {(r.identity, r.status) for r in pki.list(include_old=True)}
    assert ("srv_a", "revoked") in rows and ("srv_a", "valid") in rows


def test_rotate_all_backs_up_every_pair_in_one_folder(site_pki_copy):
    pki = site_pki_copy.pki
    before = {r.identity: r.serial for r in pki.list() if r.kind != "ca"}
    rotated = pki.rotate("all")
    assert {i for i, _ in rotated} == set(before)
    assert len({b.parent for _, b in rotated}) == 1
    after = {r.identity: r.serial for r in pki.list() if r.kind != "ca"}
    assert all(after[i] != before[i] for i in before)
    old = {r.serial: r.status for r in pki.list(include_old=True)}
    assert all(old[s] == "superseded" for s in before.values())


def test_expiring_certificates_are_listed_with_warnings(tmp_path):
    text = (ROOT / "host/gridtwin/examples/site.toml").read_text().replace("days = 825\nwarn_days = 30",
                                                                            "days = 10\nwarn_days = 30")
    sp = make_site_pki(tmp_path, text)
    rows = {r.identity: r for r in sp.pki.list()}
    assert rows["pdu_a"].status == "expiring" and rows["ca"].status == "valid"
    warnings = sp.pki.warnings()
    assert any(w.startswith("pdu_a: certificate expires in 10 days") for w in warnings)


@pytest.fixture(scope="module")
def micropython():
    exe = os.environ.get("MICROPYTHON") or shutil.which("micropython", path=str(ROOT / ".venv/bin")) \
        or shutil.which("micropython")
    if not exe:
        pytest.skip("MicroPython unix port not installed (see README: MicroPython on a Raspberry Pi)")
    return exe


MP_CLIENT = """
import sys, socket, ssl
port, d, ident, hostname = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def rd(p):
    with open(p, "rb") as f:
        return f.read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=rd(d + "/ca/ca.der"))
ctx.load_cert_chain(rd(d + "/" + ident + "/cert.der"), rd(d + "/" + ident + "/key.der"))
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
try:
    s = ctx.wrap_socket(s, server_hostname=hostname)
except (OSError, ValueError) as e:  # mbedTLS reports a name mismatch as ValueError
    print("handshake failed", e)
    sys.exit(1)
cid = ident.encode()
var = b"\\x00\\x04MQTT\\x04\\x02\\x00\\x3c" + bytes([0, len(cid)]) + cid
s.write(bytes([0x10, len(var)]) + var)
print("connack", s.read(4))
"""


@pytest.mark.micropython
def test_micropython_mbedtls_loads_the_der_pair_and_connects(micropython, broker, tmp_path):
    script = tmp_path / "mp_client.py"
    script.write_text(MP_CLIENT)
    certs = str(broker.pki.dir)
    run = subprocess.run([micropython, str(script), str(broker.port), certs, "pv1", "localhost"],
                         capture_output=True, text=True, timeout=30)
    assert run.stdout.strip() == "connack b' \\x02\\x00\\x00'", run.stdout + run.stderr
    broker.wait_for_log(r"as pv1 \(.*u'pv1'\)")
    # The server name is checked: a name not on the server certificate fails the handshake.
    bad = subprocess.run([micropython, str(script), str(broker.port), certs, "pv1", "evil.example"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "handshake failed" in bad.stdout, bad.stdout + bad.stderr
    assert "CN" in bad.stdout  # mbedTLS names the reason


def test_pki_reads_settings_from_the_site(site_pki):
    assert PKI.for_site(site_pki.site).dir == site_pki.dir / "certs"
    assert HOST_IDENTITY in {r.identity for r in site_pki.pki.list()}


def test_daemon_instances_get_host_identities_of_their_own(tmp_path):
    from gridtwin.pki import host_identities

    sp = make_site_pki(tmp_path / "s", '[site]\nid = "s"\n[daemon]\ninstances = 3\n'
                                       '[[nodes]]\nid = "n1"\nrole = "pdu"\n')
    pki = sp.pki
    assert host_identities(sp.site) == [HOST_IDENTITY, "gridtwin-host-2", "gridtwin-host-3"]
    for ident in host_identities(sp.site):
        cert = pki.load_cert(ident)
        assert cert.subject.rfc4514_string().startswith(f"CN={ident},")
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH] and pki.kind(ident) == "service"
        assert mode(pki.key_path(ident)) == 0o600
    assert pki.ensure(sp.site) == []                  # nothing missing, nothing overwritten
    with pytest.raises(PKIError, match="does not have") as info:
        pki.issue("gridtwin-host-4")                  # not configured: say which setting to raise
    assert "instances" in info.value.hint
    # raising instances later: `pki issue --all` (ensure) issues only the new one
    sp.path.write_text(sp.path.read_text().replace("instances = 3", "instances = 4"))
    from gridtwin.site import load_site
    site4 = load_site(sp.path)
    assert PKI.for_site(site4).ensure(site4) == ["gridtwin-host-4"]
