"""The PKI seen from the verbs that use it: a demo that names the nodes the broker refused, and a
revoked node that is out of the broker within seconds (issue 12 item 3, issue 19 item 9)."""

import shutil
import sqlite3

import pytest

from fixtures.broker import free_port, wait_until
from gridtwin import cli
from gridtwin.site import load_site


def _revoked_pair_put_back(pki, node: str) -> None:
    """Revoke the node's certificate, then put the revoked pair back where the boards take it from:
    its board keeps presenting a certificate the broker refuses (as a board nobody re-deployed does)."""
    pki.revoke(node)
    [backup] = list(pki.backup_dir.glob(f"*/{node}"))
    shutil.copytree(backup, pki.identity_dir(node))


def _earlier_readings(site, node: str, n: int) -> None:
    """Readings an earlier run left in the site's database."""
    from gridtwin.daemon.config import db_path
    from gridtwin.daemon.store_sqlite import SqliteStore

    SqliteStore(db_path(site)).close()  # the schema
    with sqlite3.connect(db_path(site)) as db:
        db.executemany("INSERT INTO readings (node, boot, seq, ts, hist, msg) VALUES (?, 'b-old', ?, ?, 0, '{}')",
                       [(node, i, 1_000 + i) for i in range(n)])


@pytest.mark.micropython
def test_the_demo_fails_naming_the_nodes_that_never_came_online(site_pki_copy, micropython, capsys):
    sp = site_pki_copy
    sp.path.write_text(sp.path.read_text() + "\n[daemon]\nmetrics_port = 0\n")
    site = load_site(sp.path)
    _revoked_pair_put_back(sp.pki, "srv_a")
    _earlier_readings(site, "srv_a", 7)  # what the old end line counted as this run's
    rc = cli.main(["--site", str(sp.path), "demo", "--no-view", "--nodes", "srv_a", "--duration", "2",
                   "--port", str(free_port())])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "this run stored 0 readings from 0 of 1 nodes" in err, err
    assert "1 node(s) never came online during this run: srv_a" in err, err
    assert "Traceback" not in err


@pytest.mark.micropython
def test_the_demo_counts_this_runs_readings(site_pki_copy, micropython):
    from gridtwin.demo.runner import Demo

    site = load_site(site_pki_copy.path)
    _earlier_readings(site, "pdu_a", 5)
    demo = Demo(site, port=free_port(), nodes=["pdu_a"], daemon_overrides={"metrics_port": None})
    demo.start()
    try:
        wait_until(lambda: demo.run_counts()["pdu_a"] > 0, 60, "pdu_a's first reading of this run", 0.1)
        counts = demo.run_counts()
        assert counts["pdu_a"] <= demo.daemon.store.count_readings("pdu_a") - 5
        assert demo.never_online(counts) == []
    finally:
        demo.stop()
