"""Synthetic sites of any size, for `make bench` and the engine's scaling tests.

`synthetic_topology(n)` builds blocks of exactly 100 components - utility, transformer, generator,
transfer switch, distribution board, 3 UPS, 12 PDUs and 80 servers - and validates them through the
same `topology.build` as a site file, so the benchmark measures the real engine on a real graph.
Every 10th block also carries a PV plant (array, converter, two stacks, separators, tank) in place
of 8 servers, and the first block a grid bus in place of one server, so all models run.
"""

from __future__ import annotations

from types import SimpleNamespace

from gridtwin.site import Record
from gridtwin.twin.topology import Topology, build


def _c(id_, kind, parent=None, **params) -> Record:
    return Record({"id": id_, "kind": kind, "parent": parent, "params": params, "description": ""})


def _block(b: int, plant: bool, grid: bool) -> list[Record]:
    p = f"b{b}_"
    out = [
        _c(p + "util", "utility"),
        _c(p + "trf", "transformer", p + "util"),
        _c(p + "gen", "generator"),
        _c(p + "sw", "transfer_switch", [p + "trf", p + "gen"]),
        _c(p + "dist", "distribution", p + "sw"),
    ]
    extra: list[Record] = []
    if plant:
        extra += [
            _c(p + "pv", "pv_array"),
            _c(p + "buck", "buck_converter", p + "pv", rated_kw=60.0),
            _c(p + "el1", "electrolyser", p + "buck"),
            _c(p + "el2", "electrolyser", p + "buck"),
            _c(p + "sep1", "gas_separator", p + "el1"),
            _c(p + "sep2", "gas_separator", p + "el2"),
            _c(p + "tank", "h2_tank", [p + "sep1", p + "sep2"], volume_m3=50.0),
            _c(p + "bat", "battery", p + "buck", capacity_kwh=20.0),
        ]
    if grid:
        extra.append(_c(p + "grid", "grid_bus"))
    servers = 80 - len(extra)
    pdus = []
    for u in range(3):
        out.append(_c(f"{p}ups{u}", "ups", p + "dist"))
        for k in range(4):
            pdus.append(f"{p}pdu{u}_{k}")
            out.append(_c(pdus[-1], "pdu", f"{p}ups{u}"))
    for s in range(servers):
        out.append(_c(f"{p}srv{s}", "server", pdus[s % len(pdus)], load_kw=0.4))
    return out + extra


def synthetic_topology(n: int, seed: int = 1, step_s: float = 0.1) -> Topology:
    """A validated topology of n components (n rounded up to a multiple of 100)."""
    blocks = max(1, -(-n // 100))
    comps: list[Record] = []
    for b in range(blocks):
        comps += _block(b, plant=(b % 10 == 0), grid=(b == 0))
    twin = Record(
        {
            "seed": seed,
            "step_s": step_s,
            "speed": 0.0,
            "start": "2026-06-21T10:00:00Z",
            "latitude": 50.9,
            "longitude": 6.4,
            "altitude_m": 100.0,
            "t_air_c": 20.0,
            "components": comps,
        }
    )
    site = SimpleNamespace(path="<synthetic>", sections={"twin": twin}, nodes=[])
    return build(site)
