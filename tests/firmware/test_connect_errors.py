"""A node that cannot connect says why in words, not a bare errno (issue #12 item 7).

The real firmware on the unix port against nothing listening, and against the real broker with a
certificate from another CA (the broker refuses it inside the handshake and closes).
"""

import shutil

from fixtures.broker import free_port, make_site_pki
from fixtures.netnode import crashed


def test_nothing_listening_is_named(net_node, broker):
    b = net_node(mqtt={"port": free_port(), "backoff_max_ms": 1000})
    b.start()
    m = b.wait_for(r"mqtt: failed: .*", timeout=20)
    b.stop()
    assert "broker not listening (connection refused)" in m.group(0), m.group(0)
    assert "OSError(" not in m.group(0)
    assert not crashed(b)


def test_a_refused_certificate_is_named(net_node, broker, tmp_path):
    # same site id and node id, another CA: what a board flashed for another site (or before a
    # `pki init --force`) presents
    other = make_site_pki(
        tmp_path / "other", '[site]\nid = "demo"\n\n[[nodes]]\nid = "pv1"\nrole = "pv"\n'
    )
    b = net_node(mqtt={"backoff_max_ms": 1000})
    b.install_identity(other.pki, "pv1")
    shutil.copyfile(
        broker.pki.ca_der_path, b.flash / "ca.der"
    )  # the node still trusts the real broker
    b.start()
    m = b.wait_for(r"mqtt: failed: .*", timeout=30)
    b.stop()
    assert "certificate refused (expired, revoked or foreign CA?)" in m.group(0), m.group(0)
    assert not crashed(b)
