"""The twin on the bus: alerts raised and cleared, hardware in the loop, state published."""

import json
import sqlite3

from gridtwin.daemon.service import Daemon
from gridtwin.twin import Twin
from gridtwin.twin.coupling import TwinLink

from fixtures.daemon_fleet import NodeClient, endpoint, telemetry_payload, wait_for


def alerts(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT kind, node, active FROM alerts ORDER BY id").fetchall()


def test_events_become_alerts_and_real_telemetry_drives_the_twin(broker, site_pki, mqtt_client, tmp_path):
    site = site_pki.site
    root = site.topic_root
    watcher = mqtt_client("telegraf")  # a read-only identity sees what Grafana would
    watcher.subscribe(f"{root}/_host/#")
    daemon = Daemon(endpoint=endpoint(broker), db_path=tmp_path / "gt.db", known_nodes=site.node_ids,
                    metrics_port=None, site=site).start()
    twin = Twin.from_site(site, seed=3)
    link = TwinLink(twin, daemon, site, state_every_s=0.5)
    el1 = NodeClient(broker, "EL1")
    try:
        wait_for(lambda: daemon.metrics.connected, 10, "the daemon to connect")
        link.after_step()
        doc = json.loads(watcher.wait_for(f"{root}/_host/twin", timeout=10).payload)
        assert doc["components"]["util_a"]["m"]["on"] == 1

        # the utility fails: an alert is stored and published retained while it lasts
        twin.apply("util_a", "set_fault", {"on": True})
        twin.step()
        link.after_step()
        topic = f"{root}/_host/alerts/twin_util_a_utility_lost"
        alert = json.loads(watcher.wait_for(topic, timeout=10).payload)
        assert alert["active"] and alert["severity"] == "major" and alert["component"] == "util_a"
        late = mqtt_client("grafana")  # subscribes after the fact: the alert is retained
        late.subscribe(topic)
        assert late.wait_for(topic, timeout=10).retain
        assert ("utility_lost", "util_a", 1) in alerts(tmp_path / "gt.db")
        twin.apply("util_a", "set_fault", {"on": False})
        twin.run_until(twin.t + 0.5)
        link.after_step()
        cleared = watcher.wait_for(f"{root}/_host/alerts/twin_util_a_utility_lost", timeout=10,
                                   where=lambda m: m.payload == b"")
        assert cleared.payload == b""
        assert ("utility_lost", "util_a", 0) in alerts(tmp_path / "gt.db")

        # a real EL1 reports its stack temperature: the twin takes it (hardware in the loop)
        el1.publish(telemetry_payload("EL1", boot=1, seq=1, t_c=71.5).replace(b'"t_c": 21.0', b'"t_c": 71.5'))
        wait_for(lambda: link._hil, 10, "EL1's reading to reach the twin link")
        twin.run_until(twin.t + 0.6)
        link.after_step()
        st = twin.state()["EL1"]
        assert "t_c" in st["overridden"] and st["m"]["t_c"] == 71.5
        assert link.overrides >= 1
    finally:
        el1.close()
        link.close()
        daemon.stop()
