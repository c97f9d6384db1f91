"""Issue #20: every node of the example site runs in a 96 KB firmware heap, EL1 (INA226, ADC,
DS18B20, OLED, TLS) included: its config rendered as the demo renders it, its chips from
`vworld`, the compiled build, mutual TLS to the real broker. No crash boot, no MemoryError, and
room left at the TLS connect (the node logs its free heap there, after a collection).

Measured at 96 KB (11 runs, some beside busy loops, some from a 60-character deep checkout): EL1
11.3-11.7 KB, EL2 11.3-11.8, pv1 13.8-14.7, grid1 18.2-19, the plant nodes 19.7-20.6 KB free at the
connect; `-s` prints them. A CI run saw EL1 at 10.8 KB. A sampler slot that finds under 4 KB free
while a TLS handshake runs is skipped and counted (EL1 ran out of RAM there at its first boot), and
so is a slot whose reading meets a MemoryError twice (CI: EL1 crash-booted twice on one)."""

import json

from gridtwin.fleet import VirtualFleet

from fixtures.broker import HOST_IDENTITY

HEAP = "96k"
# Issue #20's target. The boards' folders are given to the interpreter by short relative paths, so
# the heap's layout no longer depends on where the suite runs (a deep CI checkout once left pv1 with
# 3.5 KB less than here and a crash boot); the fullest node has ~11.5 KB (`-s` prints the figures)
MIN_FREE_AT_CONNECT = 8 * 1024


def test_every_example_node_connects_over_tls_in_96k(
    site_pki, broker_factory, mqtt_client, micropython, tmp_path, record_property
):
    brk = broker_factory(site_pki)
    host = mqtt_client(HOST_IDENTITY, broker=brk)
    root = site_pki.site.topic_root
    host.subscribe(f"{root}/+/status")
    fleet = VirtualFleet(
        site_pki.site, site_pki.pki, tmp_path / "fleet", broker=(brk.host, brk.port), heap=HEAP
    )
    ids = list(fleet.nodes)
    assert "EL1" in ids and len(ids) == len(site_pki.site.node_ids) >= 12
    fleet.start()
    try:
        free = {}
        for n in ids:
            m = fleet.nodes[n].board.wait_for(
                r"mqtt: connected in \d+ ms .* free=(\d+)", timeout=90
            )
            free[n] = int(m[1])
        births = {}

        def all_born():
            for m in host.received(f"{root}/+/status"):
                d = json.loads(m.payload)
                if d.get("state") == "online" and "fw" in d:
                    births[d["node"]] = d
            return set(births) >= set(ids)

        try:
            host._wait(all_born, 60, "every node's birth")
        except AssertionError:
            raise AssertionError(
                "no birth from "
                + "; ".join(
                    f"{n}: {fleet.nodes[n].board.lines[-3:]}" for n in ids if n not in births
                )
            ) from None
        sick = {
            n: bad[:2]
            for n, v in fleet.nodes.items()
            if (bad := [ln for ln in v.board.lines if "MemoryError" in ln or "Traceback" in ln])
        }
        # a slot that found no RAM is skipped and counted, not a crash (see the sampler): a few
        # at a handshake's peak are the emulator's (the unix port's TLS buffers are in the
        # MicroPython heap; the ESP32's mbedTLS has its own), more would be a shortage
        short = {
            n: k
            for n, v in fleet.nodes.items()
            if (k := sum("slot skipped, out of RAM" in ln for ln in v.board.lines))
        }
        boots = {n: v.board.boots for n, v in fleet.nodes.items()}
        crash = {n: v.board.read_flash("boot.json") for n, v in fleet.nodes.items()}
    finally:
        fleet.stop()
    record_property("free_at_connect", free)
    print(
        "\nfree heap at the TLS connect, 96 KB heap: "
        + ", ".join(f"{n} {b} B" for n, b in free.items())
    )
    print(
        "birth heap / heap_min: "
        + ", ".join(f"{n} {d['heap']}/{d['heap_min']}" for n, d in births.items())
    )
    if short:
        print(f"slots skipped for want of RAM: {short}")
    assert not any(sick.values()), sick
    assert all(k <= 2 for k in short.values()), f"slots skipped for want of RAM: {short}"
    assert all(b == 1 for b in boots.values()), boots  # one boot each: no crash boot, no reset
    assert all(
        json.loads(c)["boots"] == 1 and not json.loads(c).get("crash") for c in crash.values()
    ), crash
    low = {n: b for n, b in free.items() if b < MIN_FREE_AT_CONNECT}
    assert not low, f"less than {MIN_FREE_AT_CONNECT} B free at the TLS connect: {low}"
