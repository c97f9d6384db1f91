"""The site PKI: files, modes, refusals, rotation, revocation, and the DER a board loads."""

import datetime as dt
import json
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
    assert (
        isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
        and ca.public_key().curve.name == "secp256r1"
    )
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
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    node_eku = (
        pki.load_cert("pdu_a").extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
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
    assert (
        pki.ca_cert_path.read_bytes() == ca_before
        and pki.key_path("pdu_a").read_bytes() == key_before
    )
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
    text = (
        (ROOT / "host/gridtwin/examples/site.toml")
        .read_text()
        .replace("days = 825\nwarn_days = 30", "days = 10\nwarn_days = 30")
    )
    sp = make_site_pki(tmp_path, text)
    rows = {r.identity: r for r in sp.pki.list()}
    assert rows["pdu_a"].status == "expiring" and rows["ca"].status == "valid"
    warnings = sp.pki.warnings()
    assert any(w.startswith("pdu_a: certificate expires in 10 days") for w in warnings)


@pytest.fixture(scope="module")
def micropython():
    exe = (
        os.environ.get("MICROPYTHON")
        or shutil.which("micropython", path=str(ROOT / ".venv/bin"))
        or shutil.which("micropython")
    )
    if not exe:
        pytest.skip(
            "MicroPython unix port not installed (see README: MicroPython on a Raspberry Pi)"
        )
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
    run = subprocess.run(
        [micropython, str(script), str(broker.port), certs, "pv1", "localhost"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.stdout.strip() == "connack b' \\x02\\x00\\x00'", run.stdout + run.stderr
    broker.wait_for_log(r"as pv1 \(.*u'pv1'\)")
    # The server name is checked: a name not on the server certificate fails the handshake.
    bad = subprocess.run(
        [micropython, str(script), str(broker.port), certs, "pv1", "evil.example"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and "handshake failed" in bad.stdout, bad.stdout + bad.stderr
    assert "CN" in bad.stdout  # mbedTLS names the reason


def test_pki_reads_settings_from_the_site(site_pki):
    assert PKI.for_site(site_pki.site).dir == site_pki.dir / "certs"
    assert HOST_IDENTITY in {r.identity for r in site_pki.pki.list()}


def test_daemon_instances_get_host_identities_of_their_own(tmp_path):
    from gridtwin.pki import host_identities

    sp = make_site_pki(
        tmp_path / "s",
        '[site]\nid = "s"\n[daemon]\ninstances = 3\n[[nodes]]\nid = "n1"\nrole = "pdu"\n',
    )
    pki = sp.pki
    assert host_identities(sp.site) == [HOST_IDENTITY, "gridtwin-host-2", "gridtwin-host-3"]
    for ident in host_identities(sp.site):
        cert = pki.load_cert(ident)
        assert cert.subject.rfc4514_string().startswith(f"CN={ident},")
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH] and pki.kind(ident) == "service"
        assert mode(pki.key_path(ident)) == 0o600
    assert pki.ensure(sp.site) == []  # nothing missing, nothing overwritten
    with pytest.raises(PKIError, match="does not have") as info:
        pki.issue("gridtwin-host-4")  # not configured: say which setting to raise
    assert "instances" in info.value.hint
    # raising instances later: `pki issue --all` (ensure) issues only the new one
    sp.path.write_text(sp.path.read_text().replace("instances = 3", "instances = 4"))
    from gridtwin.site import load_site

    site4 = load_site(sp.path)
    assert PKI.for_site(site4).ensure(site4) == ["gridtwin-host-4"]


# --- integrity: a lost CA, certificates of another CA (issue 12 item 3) ------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("lost", ["ca", "ca+index"])
def test_a_deleted_ca_with_node_certificates_is_refused_by_every_verb(site_pki_copy, capsys, lost):
    from gridtwin import cli

    pki, site = site_pki_copy.pki, str(site_pki_copy.path)
    shutil.rmtree(pki.ca_dir)
    if lost == "ca+index":  # what the issue's user had: no CA and no index, only the pairs
        pki.index_path.unlink()
    before = _tree(pki.dir)
    for argv in (
        ["vnode", "pdu_a"],
        ["demo", "--no-view", "--duration", "1"],
        ["pki", "init"],
        ["pki", "init", "--nodes"],
        ["pki", "issue", "--all"],
        ["pki", "list"],
    ):
        assert cli.main(["--site", site, *argv]) == 1, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err, (argv, err)
        err = err.splitlines()[-1]  # the demo says first what it starts
        assert (
            "the CA is missing" in err and "17 certificates" in err and "pki init --force" in err
        ), err
        assert _tree(pki.dir) == before, (
            f"{argv} changed {pki.dir}"
        )  # no new CA, nothing overwritten
    assert cli.main(["--site", site, "doctor", "--json"]) == 1
    pki_check = {r["check"]: r for r in json.loads(capsys.readouterr().out)}["pki"]
    assert (
        pki_check["ok"] is False
        and "is missing" in pki_check["found"]
        and "--force" in pki_check["fix"]
    )
    # --force starts over and keeps every old file in one backup folder
    assert cli.main(["--site", site, "pki", "init", "--force", "--nodes"]) == 0
    capsys.readouterr()
    [backup] = list(pki.backup_dir.iterdir())
    assert _tree(backup) == before
    assert all(r.status == "valid" for r in pki.list())


def test_pki_list_and_doctor_flag_certificates_another_ca_signed(site_pki_copy, capsys):
    """A CA replaced by one of the same name: the issuer names still match, only the signature
    tells."""
    from gridtwin import cli
    from gridtwin.pki import _write, new_ca

    pki, site = site_pki_copy.pki, str(site_pki_copy.path)
    old_ca = pki._load_ca()[1]
    key, ca = new_ca(
        old_ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value,
        organization=old_ca.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value,
    )
    assert ca.subject == old_ca.subject == pki.load_cert("pdu_a").issuer
    _write(
        pki.ca_key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(pki.ca_cert_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pki.ca_der_path, ca.public_bytes(serialization.Encoding.DER), 0o644)
    ids = pki.identities()
    assert {r.identity: r.status for r in pki.list() if r.kind != "ca"} == dict.fromkeys(
        ids, "foreign"
    )

    assert cli.main(["--site", site, "pki", "list"]) == 0
    out = capsys.readouterr().out
    assert (
        out.count(" foreign\n") == len(ids)
        and "warning:" in out
        and "`gridtwin pki rotate all`" in out
    )
    assert (
        "CRL: " in out and "not signed by the current CA" in out
    )  # the old CA's CRL is no use either
    assert cli.main(["--site", site, "doctor", "--json"]) == 1
    pki_check = {r["check"]: r for r in json.loads(capsys.readouterr().out)}["pki"]
    assert (
        pki_check["ok"] is False
        and "pki rotate all" in pki_check["found"]
        and "pdu_a" in pki_check["found"]
    )
    # every verb that would use them says so before starting anything, instead of "nothing to do"
    for argv in (["pki", "issue", "--all"], ["vnode", "pdu_a"]):
        assert cli.main(["--site", site, *argv]) == 1
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1
            and "not issued by the current CA" in err
            and "pki rotate all" in err
        ), err
    old_pairs = {i: pki.key_path(i).read_bytes() for i in ids}
    assert cli.main(["--site", site, "pki", "rotate", "all"]) == 0
    assert "(it was not from this CA)" in capsys.readouterr().out
    assert cli.main(["--site", site, "pki", "crl"]) == 0
    capsys.readouterr()
    assert all(r.status == "valid" for r in pki.list()) and pki.warnings() == []
    for i in ids:
        pki.load_cert(i).verify_directly_issued_by(ca)
        assert [b.read_bytes() for b in pki.backup_dir.glob(f"*/{i}/key.pem")] == [
            old_pairs[i]
        ]  # backed up
    assert cli.main(["--site", site, "doctor", "--json"]) == 0
    assert {r["check"]: r for r in json.loads(capsys.readouterr().out)}["pki"]["ok"] is True


def test_a_current_certificate_the_crl_revokes_is_not_called_valid(site_pki_copy):
    pki = site_pki_copy.pki
    cert = pki.cert_path("srv_a").read_bytes()
    pki.revoke("srv_a")
    [backup] = list(pki.backup_dir.glob("*/srv_a"))
    shutil.copytree(backup, pki.identity_dir("srv_a"))  # the revoked pair put back by hand
    assert pki.cert_path("srv_a").read_bytes() == cert
    assert {r.identity: r.status for r in pki.list()}["srv_a"] == "revoked"
    assert any(
        w.startswith("srv_a: the current certificate") and "revoked by the CRL" in w
        for w in pki.warnings()
    )
