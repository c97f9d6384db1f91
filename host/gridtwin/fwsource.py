"""Facts the host reads from the firmware's own source, so that each has one home (issue #14).

The firmware is MicroPython and the host cannot import it as a package (it needs `micropython`,
`machine`, a 96 KB heap), but some of what it holds the host must know too: the role table
(gt/roles/__init__.py ``ROLES``), the config schema's keys with their types, defaults and ranges
(gt/config.py ``schema()``), and pure arithmetic such as the INA2xx current LSB
(gt/drivers/ina219.py ``current_lsb``). Rather than copy them, the host reads them here: literal
tables with ``ast.literal_eval``, the schema by running gt/config.py (plain Python) in isolation,
and a pure function by compiling its definition alone. The virtual board's shim's pure
helpers are read the same way.

    firmware_literal("gt/roles/__init__.py", "ROLES")   # {"sensor": "base", ...}
    firmware_row("queue")                                # Row(type=int, default=16, lo=4, ...)
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
from dataclasses import dataclass
from functools import cache
from typing import Any


def _firmware_dir() -> pathlib.Path:
    from gridtwin import resources  # the shipped firmware; an installation without it says so

    return resources.firmware_dir()


def _shim_dir() -> pathlib.Path:
    from gridtwin import resources

    return resources.shim_dir()


@cache
def _tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _literal(path: pathlib.Path, name: str) -> Any:
    for node in _tree(path).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"{path} defines no literal {name}")


def firmware_literal(rel: str, name: str) -> Any:
    """The value of a module-level literal assignment ``name = ...`` in firmware/<rel>."""
    return _literal(_firmware_dir() / rel, name)


def class_constants(rel: str, cls: str) -> dict[str, Any]:
    """The literal class attributes (``K = 0.04096``) of class `cls` in firmware/<rel>."""
    path = _firmware_dir() / rel
    for node in _tree(path).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            out = {}
            for st in node.body:
                if (
                    isinstance(st, ast.Assign)
                    and len(st.targets) == 1
                    and isinstance(st.targets[0], ast.Name)
                ):
                    try:
                        out[st.targets[0].id] = ast.literal_eval(st.value)
                    except ValueError:
                        pass
            return out
    raise LookupError(f"{path} defines no class {cls}")


def _function(path: pathlib.Path, name: str):
    # the definition alone, compiled with nothing but the builtins: only pure functions qualify
    for node in _tree(path).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            namespace: dict[str, Any] = {}
            exec(compile(ast.Module([node], []), str(path), "exec"), namespace)  # noqa: S102 - our source
            return namespace[name]
    raise LookupError(f"{path} defines no function {name}")


@cache
def firmware_function(rel: str, name: str):
    """A pure function of firmware/<rel> (one that uses only its arguments and the builtins)."""
    return _function(_firmware_dir() / rel, name)


@cache
def shim_function(rel: str, name: str):
    """A pure function of the virtual board's shim (gridtwin.resources.SHIM_DIR/<rel>)."""
    return _function(_shim_dir() / rel, name)


# --- the node's config schema (gt/config.py) ------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One config key as the firmware validates it: type, default, help, and a range or choices."""

    type: Any
    default: Any
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None


@cache
def _config_module():
    # gt/config.py is plain Python (json, and hashlib/binascii when hashing): it runs on CPython as
    # it is, under a private name so nothing else can mistake it for a host module
    path = _firmware_dir() / "gt" / "config.py"
    spec = importlib.util.spec_from_file_location("gridtwin._firmware_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_bounds(check) -> dict:
    # between(lo, hi) and one_of(*names) keep their arguments in the closure
    if check is None or not getattr(check, "__closure__", None):
        return {}
    names = check.__code__.co_freevars
    cells = dict(zip(names, (c.cell_contents for c in check.__closure__)))
    if {"lo", "hi"} <= set(cells):
        return {"lo": cells["lo"], "hi": cells["hi"]}
    if "names" in cells:
        return {"choices": tuple(cells["names"])}
    return {}


def firmware_row(dotted: str) -> Row:
    """The firmware's row for config key `dotted` ("queue", "mqtt.keepalive", "pins.led")."""
    rows = _config_module().schema()
    *parents, leaf = dotted.split(".")
    for p in parents:
        rows = rows[p][0]
    typ, default, check, help_ = rows[leaf]
    return Row(typ, default, help=help_, **_check_bounds(check))
