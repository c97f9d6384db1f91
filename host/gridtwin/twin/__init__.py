"""The digital twin: topology (topology.py), AC power flow (powerflow.py), PV (pv.py), electrolyser
(electrolyser.py, plant.py), grid frequency (grid.py), events (events.py), the engine (engine.py)
and scenarios (scenario.py). See engine.py for the API and docs/twin-models.md for the equations.

Names are imported lazily: loading a site imports gridtwin.twin.topology (its schema rows) and
should not pay for numpy and the engine.
"""

import importlib

_EXPORTS = {
    "Twin": "engine",
    "TwinCommandError": "engine",
    "unit_of": "engine",
    "Event": "events",
    "Action": "scenario",
    "Scenario": "scenario",
    "demo_scenario": "scenario",
    "run_realtime": "scenario",
    "DEMO_SEQUENCE": "scenario",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"gridtwin.twin.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
