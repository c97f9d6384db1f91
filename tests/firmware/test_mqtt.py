"""MQTT over mutual TLS from a real MicroPython node to a real Mosquitto (issue #4)."""

import json

from fixtures.netnode import telemetry


def test_node_connects_publishes_birth_and_telemetry(net_node, broker, mqtt_client):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "#"))
    b = net_node(sample_ms=200)
    b.start()
    b.wait_for(r"mqtt: connected in \d+ ms", timeout=20)
    birth = json.loads(host.wait_for(broker.topic("pv1", "status"), timeout=10).payload)
    assert birth["state"] == "online" and birth["node"] == "pv1"
    docs = []
    while len(docs) < 5:
        docs += telemetry([host.wait_for(broker.topic("pv1", "telemetry"), timeout=10)])
    print(docs)
    assert [d["seq"] for d in docs] == sorted(d["seq"] for d in docs)


