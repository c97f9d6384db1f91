"""The PKI seen from the verbs that use it: a demo that names the nodes the broker refused, and a
revoked node that is out of the broker within seconds (issue 12 item 3, issue 19 item 9)."""

import shutil

import pytest

from fixtures.broker import free_port, wait_until
from gridtwin import cli
from gridtwin.site import load_site


def _revoked_pair_put_back(pki, node: str) -> None:
    """Revoke the node's certificate, then put the revoked pair back where the boards take it from:
    its board keeps presenting a certificate the broker refuses (as a board nobody re-deployed
    does)."""
    pki.revoke(node)
    [backup] = list(pki.backup_dir.glob(f"*/{node}"))
    shutil.copytree(backup, pki.identity_dir(node))


@pytest.mark.micropython
def test_the_demo_fails_naming_the_nodes_that_never_came_online(site_pki_copy, micropython, capsys):
    sp = site_pki_copy
    sp.path.write_text(
        sp.path.read_text() + "\n[daemon]\nmetrics_port = 0\n"
        f'\n[opcua]\nendpoint = "opc.tcp://127.0.0.1:{free_port()}/gridtwin"\n'
    )
    load_site(sp.path)  # the edited file still loads
    _revoked_pair_put_back(sp.pki, "srv_a")
    rc = cli.main(
        [
            "--site",
            str(sp.path),
            "demo",
            "--no-view",
            "--nodes",
            "srv_a",
            "--duration",
            "2",
            "--port",
            str(free_port()),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "this run stored 0 readings from 0 of 1 nodes" in err, err
    assert "1 node(s) never came online during this run: srv_a" in err, err
    assert "Traceback" not in err


@pytest.mark.micropython
def test_the_demo_counts_this_runs_readings(site_pki_copy, micropython):
    """Two demos on one site: the second one's counts leave out what the first one stored."""
    from gridtwin.demo.runner import Demo

    site = load_site(site_pki_copy.path)
    first = None
    for run in (1, 2):
        demo = Demo(
            site,
            port=free_port(),
            nodes=["pdu_a"],
            daemon_overrides={"metrics_port": None},
            opcua_port=free_port(),
        )
        demo.start()
        try:
            if first is not None:  # the database still holds the first run's readings
                assert demo.daemon.store.count_readings("pdu_a") >= first > 0
            wait_until(
                lambda: demo.run_counts()["pdu_a"] > 0,
                60,
                f"pdu_a's first reading of run {run}",
                0.1,
            )
            counts = demo.run_counts()
            assert demo.never_online(counts) == []
            if first is not None:
                assert counts["pdu_a"] <= demo.daemon.store.count_readings("pdu_a") - first
        finally:
            demo.stop()
        first = counts["pdu_a"]


# --- a revoked node is out within seconds (issue 19 item 9) ---------------------------------------


def _keep_pair(pki, node: str, folder) -> tuple[str, str]:
    """The node's pair as its board holds it (revoke moves the PKI's copy to _backup/)."""
    folder.mkdir()
    shutil.copy(pki.cert_path(node), folder / "cert.pem")
    shutil.copy(pki.key_path(node), folder / "key.pem")
    return str(folder / "cert.pem"), str(folder / "key.pem")


@pytest.mark.broker
def test_pki_revoke_ends_the_session_of_a_node_on_broker_run(
    site_pki_copy, mqtt_client, tmp_path, capsys
):
    import subprocess
    import sys
    import time

    from fixtures.broker import Broker

    sp = site_pki_copy
    port = free_port()
    with open(tmp_path / "run.log", "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridtwin",
                "--site",
                str(sp.path),
                "broker",
                "run",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        brk = Broker(
            sp, tmp_path / "probe"
        )  # not started: only its client helpers, aimed at `broker run`
        brk.port = port
        wait_until(
            lambda: brk.probe("gridtwin-host").ok or proc.poll() is not None,
            10,
            "broker run to listen",
        )
        cert, key = _keep_pair(sp.pki, "srv_a", tmp_path / "board")
        node = mqtt_client("srv_a", broker=brk, cert=cert, key=key)
        host = mqtt_client("gridtwin-host", broker=brk)
        assert node.connected and host.connected
        t0 = time.monotonic()
        assert cli.main(["--site", str(sp.path), "pki", "revoke", "srv_a"]) == 0
        assert "restarts with the new CRL" in capsys.readouterr().out
        node.wait_disconnected(10)
        # the broker is back (it lets another client in) and the node is not: its certificate is
        # refused
        wait_until(
            lambda: brk.probe("telegraf").ok, 10, "the restarted broker to let a valid client in"
        )
        refused = brk.probe(cert=cert, key=key, client_id="srv_a")
        out_after = time.monotonic() - t0
        assert not refused.ok and "revoked" in refused.error, refused
        assert not node.connected
        wait_until(lambda: host.connected, 10, "the host to reconnect by itself")
        assert out_after < 5, f"the revoked node was out only after {out_after:.1f} s"
        print(f"revoked node out after {out_after:.2f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            import os
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _installed_etc(tmp_path, site):
    """An /etc/mosquitto as `broker install` leaves it (its conf header and the broker's CRL
    copy)."""
    from gridtwin import broker

    etc = tmp_path / "etc"
    (etc / "gridtwin").mkdir(parents=True)
    (etc / "mosquitto.conf").write_text(f"# GridTwin site '{site.id}': Mosquitto configuration\n")
    broker.installed_crl(etc).write_bytes(b"the old CRL")
    return etc


def test_pki_revoke_restarts_the_installed_broker_as_root(site_pki_copy, tmp_path):
    """systemd cannot run here: the command that would run is recorded instead of run."""
    from gridtwin import broker

    sp = site_pki_copy
    etc = _installed_etc(tmp_path, sp.site)
    sp.pki.revoke("srv_a")
    ran = []
    said = broker.notify_revocation(
        sp.site, etc_dir=etc, euid=0, systemd=True, run=lambda argv, **kw: ran.append(argv)
    )
    assert ran == [["systemctl", "restart", "mosquitto"]]
    copy = broker.installed_crl(etc)
    assert (
        copy.read_bytes() == sp.pki.crl_path.read_bytes() and copy.stat().st_mode & 0o777 == 0o644
    )
    assert "`systemctl restart mosquitto` done" in said
    # a failing restart is one clear error naming where to look
    import subprocess

    from gridtwin.errors import BrokerError

    def fails(argv, **kw):
        raise subprocess.CalledProcessError(1, argv, stderr="Job for mosquitto.service failed.")

    with pytest.raises(
        BrokerError, match="systemctl restart mosquitto failed: Job for mosquitto.service failed"
    ):
        broker.notify_revocation(sp.site, etc_dir=etc, euid=0, systemd=True, run=fails)


def test_pki_revoke_says_exactly_what_to_run_without_root(site_pki_copy, tmp_path):
    import subprocess

    from gridtwin import broker

    sp = site_pki_copy
    etc = _installed_etc(tmp_path, sp.site)
    sp.pki.revoke("srv_a")
    ran = []
    said = broker.notify_revocation(
        sp.site, etc_dir=etc, euid=1000, systemd=True, run=lambda argv, **kw: ran.append(argv)
    )
    assert ran == [] and broker.installed_crl(etc).read_bytes() == b"the old CRL"
    cmd = said.split("run `", 1)[1].split("`", 1)[0]
    assert cmd == (
        f"sudo install -m 0644 {sp.pki.crl_path} {broker.installed_crl(etc)} "
        "&& sudo systemctl restart mosquitto"
    )
    # the first half is a real command: run it (we are root here, so without sudo) and the copy is
    # the CRL
    copy_cmd = cmd.split(" && ")[0].removeprefix("sudo ")
    subprocess.run(copy_cmd, shell=True, check=True)
    assert broker.installed_crl(etc).read_bytes() == sp.pki.crl_path.read_bytes()
    # no broker of ours installed: nothing to restart, and it says so
    assert broker.notify_revocation(sp.site, etc_dir=tmp_path / "none") == (
        "no running broker found; the new CRL applies when it starts"
    )
