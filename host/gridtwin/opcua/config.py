"""The ``[opcua]`` section of site.toml (listed in gridtwin/schema.py)."""

from __future__ import annotations

from gridtwin.site import Key, Section, in_range

POLICIES = ("Basic256Sha256", "Aes128_Sha256_RsaOaep")
MODES = ("SignAndEncrypt", "Sign")


def _list_of(allowed: tuple[str, ...], what: str):
    def check(value):
        bad = [v for v in value if v not in allowed]
        if bad or not value:
            return (f"{what} {bad[0]!r} is not supported" if bad else f"no {what} given",
                    f"use one or more of: {', '.join(allowed)}")
        return None
    return check


def _check_endpoint(value: str):
    if not value.startswith("opc.tcp://"):
        return f"{value!r} is not an OPC UA endpoint", 'write it as "opc.tcp://HOST:PORT/PATH"'
    return None


OPCUA = Section({
    "endpoint": Key(str, "opc.tcp://127.0.0.1:4840/gridtwin", check=_check_endpoint,
                    help="where `gridtwin opcua serve` listens and what `opcua collect` connects to"),
    "namespace": Key(str, "", help="namespace URI of the twin's nodes; empty = urn:gridtwin:<site id>:isa95"),
    "enterprise": Key(str, "GridTwin", help="ISA-95 enterprise (the top of the hierarchy)"),
    "area": Key(str, "", help="ISA-95 area of every asset; empty = by the asset's domain (energy, datacentre, ...)"),
    "policies": Key(list, list(POLICIES), item=Key(str), check=_list_of(POLICIES, "security policy"),
                    help="security policies the server offers (never None; `serve --dev` adds it)"),
    "modes": Key(list, list(MODES), item=Key(str), check=_list_of(MODES, "security mode"),
                 help="message security modes the server offers"),
    "policy": Key(str, "Basic256Sha256", check=lambda v: None if v in POLICIES else (
        f"security policy {v!r} is not supported", f"use one of: {', '.join(POLICIES)}"),
        help="the collector's security policy"),
    "mode": Key(str, "SignAndEncrypt", check=lambda v: None if v in MODES else (
        f"security mode {v!r} is not supported", f"use one of: {', '.join(MODES)}"),
        help="the collector's message security mode"),
    "publish_ms": Key(int, 1000, check=in_range(10, 3600_000),
                      help="how often the server writes the twin's state into its variables"),
    "sampling_ms": Key(int, 0, check=in_range(0, 3600_000),
                       help="the collector's sampling interval; 0 = every change the server publishes"),
    "queue_size": Key(int, 10, check=in_range(1, 10000), help="values the server queues per item between publishes"),
    "reconnect_max_s": Key(float, 5.0, check=in_range(0.1, 600.0), help="longest wait between reconnect attempts"),
}, help="OPC UA: the twin's assets as a server organised by ISA-95, and the collector")
