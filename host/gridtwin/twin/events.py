"""Typed twin events with start and clear, so they can become alerts (raised, then resolved).

Types: utility_lost, generator_start (info), transfer_to_generator, ups_on_battery, battery_low,
load_dropped, supply_lost, restored (info), frequency_deviation, nfpa110_missed (a transfer switch's
output stayed dark longer than the site's NFPA 110 type), trip:<reason> with reasons overload,
cell_overvoltage, over_temperature, h2_in_o2, over_pressure, fault.

A condition event has state "start" when it begins and "clear" when it ends; an `info` event marks a
moment (a generator started, service restored). `EventLog.active()` lists conditions still open.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITY = {
    "utility_lost": "major",
    "transfer_to_generator": "minor",
    "ups_on_battery": "major",
    "battery_low": "critical",
    "load_dropped": "critical",
    "supply_lost": "major",
    "frequency_deviation": "major",
    "generator_start": "info",
    "restored": "info",
    "nfpa110_missed": "major",
}


@dataclass(frozen=True)
class Event:
    t: float  # simulation time, s
    component: str
    type: str  # e.g. "utility_lost", "trip:h2_in_o2"
    state: str  # "start" | "clear" | "info"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return "critical" if self.type.startswith("trip:") else SEVERITY.get(self.type, "minor")

    @property
    def key(self) -> tuple[str, str]:
        return self.component, self.type

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity
        return d


class EventLog:
    def __init__(self):
        self.all: list[Event] = []
        self._pending: list[Event] = []
        self._active: dict[tuple[str, str], Event] = {}

    def _add(self, ev: Event) -> None:
        self.all.append(ev)
        self._pending.append(ev)

    def start(self, t: float, component: str, type_: str, **detail) -> None:
        if (component, type_) in self._active:
            return
        ev = Event(t, component, type_, "start", detail)
        self._active[ev.key] = ev
        self._add(ev)

    def clear(self, t: float, component: str, type_: str, **detail) -> None:
        if self._active.pop((component, type_), None) is not None:
            self._add(Event(t, component, type_, "clear", detail))

    def set(self, t: float, component: str, type_: str, on: bool, **detail) -> None:
        (self.start if on else self.clear)(t, component, type_, **detail)

    def info(self, t: float, component: str, type_: str, **detail) -> None:
        self._add(Event(t, component, type_, "info", detail))

    def is_active(self, component: str, type_: str) -> bool:
        return (component, type_) in self._active

    def active(self) -> list[Event]:
        return list(self._active.values())

    def drain(self) -> list[Event]:
        out, self._pending = self._pending, []
        return out
