"""Issue #20: how fast one node publishes over TLS at QoS 1, which is how fast it replays its
outbox after an outage. 600 readings wait on flash after a 10-minute link drop (board time warps
through it); the replay runs at the highest configurable rate (`replay_per_s` 10000) in real time,
with the default window of readings in flight (`mqtt.window` 8); the host's receive times (paho
stamps each message as it arrives) give the rate. Exactly once and in order: every reading of the
outage arrives, each once, replayed oldest first."""

from fixtures.broker import wait_until
from fixtures.netnode import LM75, crashed, telemetry

WIFI = {"ssid": "lab", "psk": "secret"}
# msg/s, a floor for a busy box: one reading in flight polled in 1 ms slices managed 246 here, one
# in flight on a schedule 650-730, a window of 8 1,700-2,700 (issue #20's target, 1,000, is a
# bench figure)
MIN_RATE = 500


def test_replay_after_an_outage_is_fast_in_order_and_once(
    net_node, broker, mqtt_client, record_property
):
    host = mqtt_client("gridtwin-host")
    topic = broker.topic("pv1", "telemetry")
    host.subscribe(topic)
    world = {
        "clock": {"mode": "warp"},
        "i2c": [LM75],
        "wlan": {"ssid": "lab", "psk": "secret", "down": [[3_000, 603_000]], "connect_ms": 500},
    }
    b = net_node(world=world, wifi=WIFI, trace=True, mqtt={"replay_per_s": 10000})
    b.start()
    b.wait_for(r"mqtt: connected .* conn=2", timeout=60)
    msgs = wait_until(
        lambda: (
            lambda m: (
                m
                if sum(1 for x in telemetry(m) if x.get("hist") and x["seq"] >= 5) >= 598
                else None
            )
        )([m for m in host.received(topic)]),
        60,
        "the outage's readings replayed",
    )
    b.stop()
    # the outage's readings (from seq 5: the link went at 3 s), not the boot's first ones, which
    # waited for the first connection and were replayed by it
    hist = [
        (m.timestamp, d) for m, d in zip(msgs, telemetry(msgs)) if d.get("hist") and d["seq"] >= 5
    ]
    seqs = [d["seq"] for _, d in hist]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # in order, each once
    span = hist[-1][0] - hist[0][0]
    rate = (len(hist) - 1) / span
    gaps = sorted(b[0] - a[0] for a, b in zip(hist, hist[1:]))
    record_property("replay_msg_per_s", round(rate))
    print(
        f"\nreplay over TLS, QoS 1: {len(hist)} readings in {span * 1000:.0f} ms = {rate:,.0f} "
        f"msg/s; gap between readings: median {gaps[len(gaps) // 2] * 1000:.2f} ms, "
        f"p90 {gaps[len(gaps) * 9 // 10] * 1000:.2f} ms, max {gaps[-1] * 1000:.0f} ms"
    )
    assert not crashed(b)
    assert rate >= MIN_RATE
