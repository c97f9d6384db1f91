"""What the fake chips cost the board's heap.

The chip models in tests/shim/fakes/ run inside the board's MicroPython heap, but a real board has
no such code: a test that puts several chips in its world gives the board 96 KB *plus* what those
models take (measured here, once per session, under the same interpreter), so the firmware's own
share stays held to the 96 KB an ESP32 node plans for. The base shim (machine, _world, time, ...)
stays inside the 96 KB, as in every other firmware test."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from gridtwin.micropython import SHIM_DIR, find_micropython

BASE_KB = 96
_SPECS = {
    "ina219": {"addr": 64}, "ina226": {"addr": 64}, "ade7953": {"addr": 56}, "bme280": {"addr": 118},
    "ads1115": {"addr": 72}, "lm75": {"addr": 72}, "ssd1306": {"addr": 60}, "sh1106": {"addr": 60},
    "ds18b20": {"rom": "28ff641e8216c3a1", "pin": 4},
}
_cost: dict[str, int] = {}


def _measure(models: list[str]) -> int:
    script = "import gc, _world, machine, onewire\ngc.collect(); a = gc.mem_alloc(); keep = []\n"
    for name in models:
        script += f"keep.append(_world.device_model({name!r})({json.dumps(_SPECS[name])}))\n"
    script += "gc.collect(); print(gc.mem_alloc() - a)\n"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "cost.py")
        with open(path, "w") as f:
            f.write(script)
        env = dict(os.environ, MICROPYPATH=str(SHIM_DIR), GT_WORLD=os.path.join(d, "none.json"),
                   GT_BOARD_STATE=os.path.join(d, "state"))
        out = subprocess.run([find_micropython(), "-X", "heapsize=512k", path], env=env,
                             capture_output=True, text=True, check=True, timeout=60).stdout
    return int(out.strip().splitlines()[-1])


def fakes_bytes(world: dict) -> int:
    """Live heap the world's chip models take together (their modules, shared bases once, and
    one instance per chip), measured in a fresh interpreter."""
    models = [c["model"] for c in world.get("i2c", ())] + [c["model"] for c in world.get("onewire", ())]
    key = ",".join(sorted(models))
    if key not in _cost:
        _cost[key] = _measure(sorted(models)) if models else 0
    return _cost[key]


def heap_for(world: dict) -> str:
    """The -X heapsize for a board living in `world`: 96 KB plus its fake chips."""
    return f"{BASE_KB * 1024 + fakes_bytes(world)}"
