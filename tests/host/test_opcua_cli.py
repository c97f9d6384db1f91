"""`gridtwin opcua` as a user runs it: serve until a signal stops it, collect, points; a busy port
and a bad [opcua] key are one line naming the fix."""

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("asyncua")

from fixtures.broker import free_port  # noqa: E402

GRIDTWIN = str(Path(sys.executable).with_name("gridtwin"))

SITE = '''[site]
id = "mg"

[twin]
step_s = 1.0
speed = 10.0

[opcua]
endpoint = "opc.tcp://127.0.0.1:{port}/gridtwin"
publish_ms = 100
{extra}

[[twin.components]]
id = "meter1"
kind = "grid_meter"

[[twin.components]]
id = "inv1"
kind = "pv_inverter"
parent = "meter1"

[[twin.components]]
id = "panel1"
kind = "load_panel"
parent = "meter1"
'''


def _site(tmp_path, extra="", port=None):
    p = tmp_path / "site.toml"
    p.write_text(SITE.format(port=port or free_port(), extra=extra))
    return p


def _gt(site, *args, timeout=60):
    return subprocess.run(
        [GRIDTWIN, "--site", str(site), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_serve_then_collect_then_points_and_signals_stop_serve(tmp_path, sig):
    site = _site(tmp_path)
    srv = subprocess.Popen(
        [GRIDTWIN, "--site", str(site), "opcua", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = srv.stdout.readline()  # printed once the server listens
        assert (
            first.startswith("serving ")
            and "Basic256Sha256/SignAndEncrypt" in first
            and "None" not in first
        )
        if sig == signal.SIGTERM:
            r = _gt(site, "opcua", "collect", "--for", "2")
            assert r.returncode == 0, r.stderr
            n = first.split()[1]  # every variable the server serves is collected
            assert f"collecting {n} variables" in r.stderr and "points stored" in r.stderr
            r = _gt(
                site, "opcua", "points", "--machine", "meter1", "--tag", "Energy_Import", "--json"
            )
            assert (
                r.returncode == 0
                and '"unit": "kWh"' in r.stdout
                and '"quality": "GOOD"' in r.stdout
            )
            r = _gt(site, "opcua", "browse")
            assert r.returncode == 0, r.stderr
            assert (
                "GridTwin/mg/energy/meter1/inv1/Efficiency\t%\tns=2;s=GridTwin.mg.energy.meter1.inv1.Efficiency"
                in r.stdout.splitlines()
            )
            assert len(r.stdout.splitlines()) == int(n)
            r = _gt(site, "opcua", "browse", "--toml")
            assert r.returncode == 0 and r.stdout.startswith("[[opcua.sources]]\n")
            # the stub, pasted into a site file, is a mapping the collector takes; one wrong NodeId
            # is one line
            stub = r.stdout.replace("inv1.Efficiency", "inv1.Efficency")
            mapped = tmp_path / "mapped.toml"  # beside site.toml: the same PKI
            mapped.write_text(
                site.read_text().replace("[[twin.components]]", stub + "\n[[twin.components]]", 1)
            )
            r = _gt(mapped, "opcua", "collect", "--for", "5")
            assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
            [err] = [ln for ln in r.stderr.splitlines() if ln.startswith("gridtwin: ")]
            assert ".node: 'ns=2;s=GridTwin.mg.energy.meter1.inv1.Efficency': no such node" in err
        srv.send_signal(sig)
        out, err = srv.communicate(timeout=15)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    assert srv.returncode == 0, err
    assert "Traceback" not in err and "opcua serve: stopped" in err


def test_a_busy_port_and_a_bad_policy_are_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _gt(_site(tmp_path, port=s.getsockname()[1]), "opcua", "serve", "--for", "1")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("gridtwin: opcua serve: cannot listen on opc.tcp://127.0.0.1:")
    r = _gt(_site(tmp_path, 'policies = ["None"]'), "opcua", "serve", "--for", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "opcua.policies: security policy 'None' is not supported" in r.stderr


def test_pki_issue_opcua_issues_keeps_and_revokes_the_rsa_application_certificate(tmp_path):
    from cryptography import x509

    site = _site(tmp_path)
    r = _gt(site, "pki", "issue", "--opcua", "collector")
    assert r.returncode == 0 and "urn:gridtwin:mg:opcua-collector" in r.stdout, r.stderr
    der = tmp_path / "certs/opcua/collector/cert.der"
    cert = x509.load_der_x509_certificate(der.read_bytes())
    assert cert.public_key().key_size == 2048
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:gridtwin:mg:opcua-collector" in sans.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    # the shape OPC UA Part 6 asks of an application instance certificate, signed by the site CA
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and ku.key_encipherment
    assert ku.data_encipherment and not ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {o._name for o in eku} == {"serverAuth", "clientAuth"}
    ca = x509.load_pem_x509_certificate((tmp_path / "certs/ca/ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    # a good one is not replaced without --force, as `pki issue NODE`
    r = _gt(site, "pki", "issue", "--opcua", "collector")
    assert r.returncode == 1 and "'opcua/collector' already has a certificate" in r.stderr
    assert x509.load_der_x509_certificate(der.read_bytes()).serial_number == cert.serial_number
    r = _gt(site, "pki", "issue", "--opcua", "collector", "--force")
    assert r.returncode == 0
    forced = x509.load_der_x509_certificate(der.read_bytes()).serial_number
    assert forced != cert.serial_number
    r = _gt(site, "pki", "revoke", "opcua/collector")
    assert r.returncode == 0 and f"revoked serial {forced}" in r.stdout, r.stderr
    listed = _gt(site, "pki", "list", "--all").stdout
    assert "opcua/collector" in listed and "revoked" in listed
    assert _gt(site, "pki", "issue", "--opcua", "collector").returncode == 0  # replaced
    assert x509.load_der_x509_certificate(der.read_bytes()).serial_number not in (
        forced,
        cert.serial_number,
    )
    r = _gt(site, "pki", "issue", "--opcua", "collector", "pdu_a")
    assert r.returncode == 2 and r.stderr.startswith(
        "gridtwin: give one identity or --all (or --opcua NAME)"
    )
    r = _gt(site, "pki", "revoke", "opcua/server")
    assert r.returncode == 1 and r.stderr.startswith(
        "gridtwin: 'opcua/server' has no current certificate to revoke"
    ), r.stderr
