"""The ``[opcua]`` section of site.toml (listed in gridtwin/schema.py)."""

from __future__ import annotations

import re

from gridtwin.site import REQUIRED, Key, Section, in_range

POLICIES = ("Basic256Sha256", "Aes128_Sha256_RsaOaep")
MODES = ("SignAndEncrypt", "Sign")


def _list_of(allowed: tuple[str, ...], what: str):
    def check(value):
        bad = [v for v in value if v not in allowed]
        if bad or not value:
            return (
                f"{what} {bad[0]!r} is not supported" if bad else f"no {what} given",
                f"use one or more of: {', '.join(allowed)}",
            )
        return None

    return check


def _check_endpoint(value: str):
    if not value.startswith("opc.tcp://"):
        return f"{value!r} is not an OPC UA endpoint", 'write it as "opc.tcp://HOST:PORT/PATH"'
    return None


# a NodeId as OPC UA Part 6 writes it: ns=<index>; or nsu=<uri>; then i=, s=, g= or b=
NODEID_RE = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$")


def _check_nodeid(value: str):
    if not NODEID_RE.match(value):
        return (
            f"{value!r} is not a NodeId",
            'write it as "ns=2;s=Inverter1.Power" or "nsu=URI;i=1234" (`gridtwin opcua browse` '
            'prints them)',
        )
    return None


def _check_path(value: str):
    parts = value.split("/")
    if len(parts) != 5 or not all(p.strip() for p in parts):
        return (
            f"{value!r} is not an ISA-95 path of 5 levels",
            'write it as "enterprise/site/area/line/machine", e.g. '
            '"Acme/plant1/energy/feeder1/inv1"',
        )
    return None


def _one_of(allowed, what):
    return lambda v: (
        None
        if v in allowed
        else (f"{what} {v!r} is not supported", f"use one of: {', '.join(allowed)}")
    )


POINT_KEYS = {
    "path": Key(
        str,
        REQUIRED,
        check=_check_path,
        help="ISA-95 enterprise/site/area/line/machine of the point",
    ),
    "tag": Key(
        str,
        REQUIRED,
        check=lambda v: (
            None
            if v.strip() and "/" not in v
            else (
                f"tag {v!r} is empty or has a '/'",
                'give the variable\'s name, e.g. "Power_Active"',
            )
        ),
        help="the tag",
    ),
    "node": Key(str, REQUIRED, check=_check_nodeid, help="the NodeId on the source server"),
    "unit": Key(str, "", help="the unit; empty = the node's EngineeringUnits"),
}

SOURCE_KEYS = {
    "endpoint": Key(
        str, REQUIRED, check=_check_endpoint, help="opc.tcp://HOST:PORT/PATH of the server"
    ),
    "policy": Key(
        str, "Basic256Sha256", check=_one_of(POLICIES, "security policy"), help="security policy"
    ),
    "mode": Key(
        str, "SignAndEncrypt", check=_one_of(MODES, "security mode"), help="message security mode"
    ),
    "points": Key(
        list,
        [],
        item=Key(
            dict,
            keys=POINT_KEYS,
            fix='write each point as { path = "...", tag = "...", node = "..." }',
        ),
        help="the mapping: ISA-95 path and tag -> NodeId; none = every variable of the server's "
        "ISA-95 tree under [opcua] namespace",
    ),
}

OPCUA = Section(
    {
        "endpoint": Key(
            str,
            "opc.tcp://127.0.0.1:4840/gridtwin",
            check=_check_endpoint,
            help="where `gridtwin opcua serve` listens and what `opcua collect` connects to",
        ),
        "namespace": Key(
            str, "", help="namespace URI of the twin's nodes; empty = urn:gridtwin:<site id>:isa95"
        ),
        "enterprise": Key(str, "GridTwin", help="ISA-95 enterprise (the top of the hierarchy)"),
        "area": Key(
            str,
            "",
            help="ISA-95 area of every asset; empty = by the asset's domain (energy, datacentre, "
            "...)",
        ),
        "policies": Key(
            list,
            list(POLICIES),
            item=Key(str),
            check=_list_of(POLICIES, "security policy"),
            help="security policies the server offers (never None; `serve --dev` adds it)",
        ),
        "modes": Key(
            list,
            list(MODES),
            item=Key(str),
            check=_list_of(MODES, "security mode"),
            help="message security modes the server offers",
        ),
        "policy": Key(
            str,
            "Basic256Sha256",
            check=lambda v: (
                None
                if v in POLICIES
                else (
                    f"security policy {v!r} is not supported",
                    f"use one of: {', '.join(POLICIES)}",
                )
            ),
            help="the collector's security policy",
        ),
        "mode": Key(
            str,
            "SignAndEncrypt",
            check=lambda v: (
                None
                if v in MODES
                else (f"security mode {v!r} is not supported", f"use one of: {', '.join(MODES)}")
            ),
            help="the collector's message security mode",
        ),
        "publish_ms": Key(
            int,
            1000,
            check=in_range(10, 3600_000),
            help="how often the server writes the twin's state into its variables",
        ),
        "sampling_ms": Key(
            int,
            0,
            check=in_range(0, 3600_000),
            help="the collector's sampling interval; 0 = every change the server publishes",
        ),
        "queue_size": Key(
            int,
            10,
            check=in_range(1, 10000),
            help="values the server queues per item between publishes",
        ),
        "reconnect_max_s": Key(
            float, 5.0, check=in_range(0.1, 600.0), help="longest wait between reconnect attempts"
        ),
        "sources": Key(
            list,
            [],
            item=Key(dict, keys=SOURCE_KEYS),
            help="servers `gridtwin daemon` collects (each by a mapping or its tree); none: the "
            "daemon collects nothing and `opcua collect` takes every variable at `endpoint`",
        ),
    },
    help="OPC UA: the twin's assets as a server organised by ISA-95, and the collector",
)
