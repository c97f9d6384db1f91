"""Commands from the host and their acknowledgements, through the real broker (issue #4)."""

import json

from fixtures.netnode import crashed


def test_every_command_gets_exactly_one_ack_and_a_repeat_is_not_run_again(
    net_node, broker, mqtt_client
):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "ack"))
    host.subscribe(broker.topic("pv1", "status"))
    b = net_node(sample_ms=200, trace=True)
    b.start()
    # the birth follows the node's SUBSCRIBE on the same connection: once it is here, a command
    # can no longer arrive before the subscription does (as a host's dispatcher waits for online)
    host.wait_for(
        broker.topic("pv1", "status"), timeout=20, where=lambda m: b'"online"' in m.payload
    )
    cmd = broker.topic("pv1", "cmd")

    def ask(doc, raw=None):
        host.publish(cmd, raw if raw is not None else json.dumps(doc))
        return json.loads(host.wait_for(broker.topic("pv1", "ack"), timeout=10).payload)

    ack = ask({"id": "c1", "cmd": "ping", "args": {}, "ts": 1})
    assert (
        ack["id"] == "c1" and ack["ok"] is True and ack["result"]["pong"] is True and ack["ts"] > 0
    )

    ack = ask({"id": "c2", "cmd": "self_destruct"})
    assert ack["id"] == "c2" and ack["ok"] is False
    assert (
        ack["err"].startswith("unknown command 'self_destruct' (known: ") and "ping" in ack["err"]
    )

    ack = ask({"id": "c3", "cmd": "set_interval", "args": {"ms": "fast"}})
    assert ack["ok"] is False and ack["err"].startswith("bad argument: ms must be an integer")
    ack = ask({"id": "c4", "cmd": "set_interval", "args": {}})
    assert ack["ok"] is False and ack["err"] == "bad argument: ms"
    ack = ask({"id": "c5", "cmd": "set_fault", "args": {"on": True}})
    assert ack["ok"] is False and "role 'sensor' has no such command" in ack["err"]
    ack = ask(None, raw=b"{not json")
    assert ack == {"id": None, "ok": False, "err": "not JSON", "ts": ack["ts"]}
    ack = ask({"cmd": "ping"})
    assert ack["id"] is None and ack["err"].startswith("no id")

    # a command that changes something, sent twice with the same id (as a retrying host would)
    first = ask({"id": "c6", "cmd": "set_interval", "args": {"ms": 500}})
    again = ask({"id": "c6", "cmd": "set_interval", "args": {"ms": 500}})
    assert first["ok"] is True and first["result"] == {"sample_ms": 500}
    assert again == first  # the same ack (same ts): answered from memory
    assert len(b.grep(r"cmd: set_interval id=c6 ")) == 1  # and run once

    cfg = ask({"id": "c7", "cmd": "get_config"})["result"]
    assert cfg["sample_ms"] == 500 and cfg["node"] == "pv1" and cfg["mqtt"]["port"] == broker.port
    # the new cadence is what the sampler keeps
    mark = len(b.lines)
    t = [int(b.wait_for(r"^T \d+ (\d+) ", start=mark + i, timeout=10)[1]) for i in range(3)]
    ticks = [int(m[1]) for m in (b.grep(r"^T \d+ (\d+) ")[-3:])]
    assert t and all(y - x == 500 for x, y in zip(ticks, ticks[1:]))

    ack = ask({"id": "c8", "cmd": "identify", "args": {"s": 1}})
    assert ack["ok"] is True and ack["result"] == {"s": 1}
    assert not crashed(b)
    b.stop()


def test_rebirth_and_reboot(net_node, broker, mqtt_client):
    host = mqtt_client("gridtwin-host")
    host.subscribe(broker.topic("pv1", "#"))
    b = net_node(sample_ms=200)
    b.start()
    b.wait_for(r"conn=1", timeout=20)
    first = json.loads(host.wait_for(broker.topic("pv1", "status"), timeout=10).payload)
    cmd = broker.topic("pv1", "cmd")
    host.publish(cmd, json.dumps({"id": "r1", "cmd": "rebirth"}))
    assert json.loads(host.wait_for(broker.topic("pv1", "ack"), timeout=10).payload)["ok"] is True
    again = json.loads(host.wait_for(broker.topic("pv1", "status"), timeout=10).payload)
    assert again["state"] == "online" and again["boot"] == first["boot"] and again["conn"] == 1

    host.publish(cmd, json.dumps({"id": "r2", "cmd": "reboot"}))
    ack = json.loads(host.wait_for(broker.topic("pv1", "ack"), timeout=10).payload)
    assert ack["id"] == "r2" and ack["ok"] is True
    # the node comes back as a new boot, reset on purpose (not counted as a crash)
    born = host.wait_for(
        broker.topic("pv1", "status"),
        timeout=30,
        where=lambda m: json.loads(m.payload).get("boots") == 2,
    )
    doc = json.loads(born.payload)
    assert doc["boot"] != first["boot"] and doc["reset"] == "soft"
    b.wait_for(r"boot=2 reset=soft crash_streak=0", timeout=5)
    # the command is not run again by the new boot (the broker does not redeliver an acked one)
    assert len(b.grep(r"cmd: reboot id=r2")) == 1
    b.stop()
