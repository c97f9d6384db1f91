"""The demo's live terminal view (rich): the fleet, the power chain, the electrolyser plant, the
grid frequency and the alerts, redrawn a few times a second from the twin and the daemon's store."""

from __future__ import annotations

import time

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

CHAIN = ("util_a", "trf_a", "gen_a", "sw_a", "dist_a", "ups_a", "pdu_a", "srv_a")


def _fmt(v, unit="", nd=1):
    if v is None:
        return "-"
    return f"{v:.{nd}f}{unit}"


def render(demo) -> Group:
    state = demo.link.state if demo.link else {}
    now_ms = int(time.time() * 1000)
    nodes = Table(title="nodes", expand=True, box=None)
    for col in ("node", "role", "state", "seen", "readings"):
        nodes.add_column(col)
    counts = demo.reading_counts()
    for row in demo.daemon.store.nodes():
        seen = row.get("last_seen")
        age = f"{(now_ms - seen) / 1000:.0f}s ago" if seen else "-"
        st = row.get("state") or "?"
        nodes.add_row(
            row["id"],
            demo.roles.get(row["id"], ""),
            Text(st, style="green" if st == "online" else "red"),
            age,
            str(counts.get(row["id"], 0)),
        )

    chain = Table(title="power chain", expand=True, box=None)
    for col in ("component", "status", "kW", "note"):
        chain.add_column(col)
    for cid in CHAIN:
        c = state.get(cid)
        if not c:
            continue
        m = c["m"]
        note = ""
        if c["kind"] == "ups":
            note = f"SoC {_fmt(m.get('soc_pct'), '%')}" + (
                " ON BATTERY" if m.get("on_battery") else ""
            )
        elif c["kind"] == "transfer_switch":
            note = (
                "generator"
                if m.get("position") == 1
                else "utility"
                if m.get("position") == 0
                else "open"
            )
        elif c["kind"] == "generator":
            note = "running" if m.get("running") else "off"
        energized = m.get("energized", 1)
        chain.add_row(
            cid, Text(c["status"], style="green" if energized else "red"), _fmt(m.get("p_kw")), note
        )

    plant = Table(title="electrolyser plant", expand=True, box=None)
    for col in ("component", "kW", "detail"):
        plant.add_column(col)
    for cid, c in state.items():
        m = c["m"]
        if c["kind"] == "pv_array":
            plant.add_row(cid, _fmt(m.get("p_kw")), f"GHI {_fmt(m.get('ghi_wm2'), ' W/m²', 0)}")
        elif c["kind"] == "electrolyser":
            plant.add_row(
                cid,
                _fmt(m.get("p_kw")),
                f"{_fmt(m.get('i_a'), ' A', 0)}  "
                f"H₂ {_fmt(m.get('h2_nm3h'), ' Nm³/h', 2)}  total "
                f"{_fmt(m.get('h2_total_kg'), ' kg', 3)}"
                + ("  TRIPPED" if m.get("tripped") else ""),
            )
        elif c["kind"] == "h2_tank":
            plant.add_row(
                cid, "", f"{_fmt(m.get('p_bar'), ' bar')}  {_fmt(m.get('h2_kg'), ' kg', 2)}"
            )
        elif c["kind"] == "grid_bus":
            plant.add_row(cid, "", Text(f"f = {_fmt(m.get('f_hz'), ' Hz', 3)}", style="bold"))

    alerts = Table(title="alerts", expand=True, box=None)
    alerts.add_column("t")
    alerts.add_column("event")
    for ev in demo.link.events[-8:] if demo.link else ():
        style = {"start": "red", "clear": "green"}.get(ev.state, "cyan")
        alerts.add_row(f"{ev.t:6.1f}", Text(f"{ev.component} {ev.type} {ev.state}", style=style))
    head = Text(
        f"GridTwin demo — twin t={demo.twin.t:6.1f} s  speed {demo.speed:g}x   "
        f"commands sent {demo.link.commands_sent if demo.link else 0}   Ctrl-C stops",
        style="bold",
    )
    # two columns: the fleet and the alerts on the left, the plant on the right
    grid = Table.grid(expand=True)
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(Group(Panel(nodes), Panel(alerts)), Group(Panel(chain), Panel(plant)))
    return Group(head, grid)
