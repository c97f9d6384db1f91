"""Issue #14 item 5: the firmware's seams, read from its source (ast), imports made inside
functions included (a module loaded per use is still a dependency):

- no import cycle among the gt modules (config -> sensors -> drivers/options -> config was one,
  net <-> connect another);
- the RAM helpers have one home (gt/__init__.py's unload), and the outbox and its spill import
  nothing of the link;
- gt/connect.py returns a session (its Session: no methods, so nothing of the module stays in RAM
  with it); it and gt/connack.py import neither gt/net.py nor gt/link.py, and write no attribute
  of the Net they are handed;
- the publisher drives the outbox: gt/net.py neither imports gt/outbox.py nor touches app.outbox;
- the documents a node publishes are built in gt/wire.py alone (json.dumps and JSON literals)."""

import ast

from gridtwin.resources import FIRMWARE_DIR

GT = FIRMWARE_DIR / "gt"
# the OTA acks are built by gt/ota.py, gt/otactl.py and gt/otasw.py, each loaded only while its
# part of an update runs (docs/ota.md)
DOCS_ELSEWHERE = {"gt.ota", "gt.otactl", "gt.otasw"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for p in sorted(GT.rglob("*.py")):
        parts = p.relative_to(FIRMWARE_DIR).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(p.read_text(), str(p))
    return out


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The gt modules `name` imports, anywhere in its source."""
    deps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gt"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                deps.add(sub if sub in known else node.module)
    deps.discard(name)
    return deps


def _graph():
    mods = _modules()
    return mods, {n: _imports(n, t, set(mods)) for n, t in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(n, path):
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                found.append(path[path.index(d) :] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


def test_the_checker_sees_imports_and_cycles():
    # the check has teeth: a lazy import is an edge, and a loop through three modules is found
    tree = ast.parse("def f():\n    from gt import net\n    from gt.outbox import fields\n")
    assert _imports("gt.x", tree, {"gt", "gt.net", "gt.outbox"}) == {"gt.net", "gt.outbox"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_firmware_has_no_import_cycle():
    _, graph = _graph()
    assert "gt.net" in graph and "gt.config" in graph and "gt.drivers.options" in graph
    assert _cycles(graph) == []


def test_ram_helpers_and_the_outbox_import_nothing_of_the_link():
    mods, graph = _graph()
    for n in ("gt.outbox", "gt.spool", "gt.spoolload"):
        assert not graph[n] & {"gt.net", "gt.connect", "gt.link"}, (n, graph[n])
    defs = [
        n
        for n, t in mods.items()
        for d in ast.walk(t)
        if isinstance(d, ast.FunctionDef) and d.name == "unload"
    ]
    assert defs == ["gt"]  # one home: the package module, always loaded


def test_connect_returns_a_session_and_writes_nothing_into_net():
    mods, graph = _graph()
    for n in ("gt.connect", "gt.connack"):
        assert not graph[n] & {"gt.net", "gt.link"}, (n, graph[n])
    assert "gt.net" not in graph["gt.link"], graph["gt.link"]
    (ses,) = [c for c in mods["gt.connect"].body if isinstance(c, ast.ClassDef)]
    assert ses.name == "Session" and not [f for f in ses.body if isinstance(f, ast.FunctionDef)]
    written = sorted(
        {
            f"{t.value.id}.{t.attr}"
            for m in ("gt.connect", "gt.connack")
            for node in ast.walk(mods[m])
            if isinstance(node, (ast.Assign, ast.AugAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            for t in (t.elts if isinstance(t, ast.Tuple) else [t])
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
        }
    )
    assert not [w for w in written if w.startswith("net.")], written


def test_net_does_not_drive_the_outbox():
    mods, graph = _graph()
    assert "gt.outbox" not in graph["gt.net"]
    touched = [
        node.lineno
        for node in ast.walk(mods["gt.net"])
        if isinstance(node, ast.Attribute) and node.attr == "outbox"
    ]
    assert touched == [], f"gt/net.py touches app.outbox at lines {touched}"


def test_the_wire_documents_are_built_in_one_module():
    mods, _ = _graph()
    builders = {}
    for n, t in mods.items():
        for node in ast.walk(t):
            dumps = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "dumps"
                and not node.keywords  # the outbox packs a reading's metrics, compact
            )
            literal = isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
            literal = literal and node.value[:2] in ("{\"", b'{"')
            if dumps or literal:
                builders.setdefault(n, []).append(node.lineno)
    assert set(builders) - DOCS_ELSEWHERE == {"gt.wire"}, builders
