"""The site file (`site.toml`): load it, validate every value, and hand out a `Site`.

Validation is declarative. A section is a `Section` (a table of `Key` rows: type, default, check,
help); this module holds the loader and the sections every site has (`SITE`, `BROKER`, `PKI`, the
core `NODE_KEYS` of a `[[nodes]]` entry). The schema as a whole is listed in one place, the
composition root gridtwin.schema: each section, each node key and each whole-site check by name,
from the module that owns it (`[network]` from gridtwin.nodenet, `[twin]` from
gridtwin.twin.topology, ...). Those modules only define their rows: importing one registers
nothing. A new section is a `Section` in its module and one line in gridtwin.schema::

    STORAGE = Section({
        "backend": Key(str, "sqlite", check=one_of("sqlite", "influxdb2"), help="where readings
        go"), "path": Key("path", "var/readings.db", help="SQLite file, relative to the site file"),
    }, help="telemetry storage")

Every error is a `ConfigError(file, key, problem, fix)` whose key is a dotted path such as
``nodes[3].parent``; `load_site` names a node by its id (``nodes[pdu_a].parent``).

Unknown keys are errors with a "did you mean" suggestion. Relative paths are resolved against the
folder that holds the site file; `var/` (runtime data) and `certs/` (the PKI) default there.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gridtwin import fwsource
from gridtwin.errors import ConfigError
from gridtwin.identities import RESERVED_IDS  # a node may not take a service's name
from gridtwin.sitedefaults import CERTS, VAR

# Node ids become MQTT topic levels, certificate CNs and broker usernames: no wildcards, no '/',
# nothing a shell or a file name would choke on.
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
BOARD_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


# Extra host daemons (`[daemon] instances`) get `gridtwin-host-2`, `-3`, ...: the whole pattern is
# reserved, not only the instances configured today, so raising `instances` later never collides.
HOST_INSTANCE_RE = re.compile(r"^gridtwin-host-[0-9]+$")

# Roles a node may play: the firmware's role table (firmware/gt/roles/__init__.py, role -> module),
# the one list of roles; a role whose module is "plant" is a simulated component of the power chain.
ROLE_MODULES: dict[str, str] = fwsource.firmware_literal("gt/roles/__init__.py", "ROLES")
ROLES = frozenset(ROLE_MODULES)
PLANT_ROLES = frozenset(r for r, m in ROLE_MODULES.items() if m == "plant")


class _Required:
    def __repr__(self):
        return "REQUIRED"


# Default of a mandatory key.
REQUIRED = _Required()


@dataclass
class Key:
    """One row of the schema.

    type: str, int, float, bool, list, dict, or "path" (a string resolved against the site folder).
    default: value when absent; `REQUIRED` (the function) makes the key mandatory. Callables are
        called with the partially built section dict (so a default may depend on another key).
    check: fn(value) -> None | problem string | (problem, fix); runs after the type check.
    item: for lists, the row each element must satisfy.  keys: for dicts, a nested row table.
    fix: what to tell the user when the type or check fails (defaults to `help`).
    """

    type: Any
    default: Any = None
    check: Callable[[Any], Any] | None = None
    help: str = ""
    item: "Key | None" = None
    keys: "dict[str, Key] | None" = None
    fix: str | None = None


@dataclass
class Section:
    """A top-level table of the site file. many=True makes it an array of tables ([[name]])."""

    keys: dict[str, Key]
    help: str = ""
    many: bool = False
    required: bool = False


class Record:
    """A validated table: attribute and item access, plus `get` and `as_dict`."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__["_values"] = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self._values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"


class Node(Record):
    """One `[[nodes]]` entry. Always has id, board, role, parent, parents (a list), interval_ms."""


# --- checks (reusable by extensions) -------------------------------------------------------------


def one_of(*choices: str) -> Callable[[Any], Any]:
    def check(value):
        if value not in choices:
            near = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            return (
                f"'{value}' is not one of {', '.join(choices)}",
                f"{hint}use one of: {', '.join(choices)}",
            )
        return None

    return check


def in_range(lo: float | None = None, hi: float | None = None) -> Callable[[Any], Any]:
    def check(value):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            return f"{value} is out of range", f"use a value in {span}"
        return None

    return check


def check_id(value: str):
    if not ID_RE.fullmatch(value):
        return (
            f"'{value}' is not a valid id",
            "use 1 to 32 letters, digits, '_' or '-' (no '/', '+', '#' or spaces)",
        )
    return None


def check_node_id(value: str):
    problem = check_id(value)
    if problem:
        return problem
    if value.startswith("_"):
        return (
            f"'{value}' starts with '_'",
            "ids starting with '_' are reserved for host topics (_host); rename it",
        )
    if value in RESERVED_IDS:
        return (
            f"'{value}' is reserved for a service identity",
            f"rename the node; reserved: {', '.join(sorted(RESERVED_IDS))}",
        )
    if HOST_INSTANCE_RE.fullmatch(value):
        return (
            f"'{value}' is reserved for a host daemon instance ([daemon] instances)",
            "rename the node; gridtwin-host-<number> names the extra host daemons",
        )
    return None


def check_port(value: int):
    if not 0 <= value <= 65535:
        return f"{value} is not a TCP port", "use 1..65535 (0 disables an optional listener)"
    return None


# the whole root, every character: it is written into the broker's ACL lines, where a newline
# would start a rule of its own (issue #19)
TOPIC_ROOT_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def check_topic_root(value: str):
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        return (
            f"{value!r} is not a usable topic root",
            "use levels separated by '/', e.g. 'gridtwin/demo'",
        )
    if any(c in value for c in "+#\0") or value.startswith("$"):
        return (
            f"{value!r} contains a wildcard or starts with '$'",
            "remove '+', '#' and a leading '$'",
        )
    if not TOPIC_ROOT_RE.fullmatch(value):
        return (
            f"{value!r} has characters a topic root may not hold",
            "use letters, digits, '_', '-', '.' in levels separated by '/', e.g. 'gridtwin/demo'",
        )
    return None


def check_hostname(value: str):
    if not HOSTNAME_RE.fullmatch(value):
        return (
            f"'{value}' is not a DNS host name",
            "use a name like 'localhost' or 'pi.lan'; IPs go in broker.addresses",
        )
    return None


def check_ip(value: str):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return (
            f"'{value}' is not an IP address",
            "use an IPv4 or IPv6 address like 192.168.1.10 or ::1",
        )
    return None


def check_board(value: str):
    if not BOARD_RE.fullmatch(value):
        return (
            f"'{value}' is not a board name",
            "use the name of a file in boards/ without extension, e.g. 'esp32s3'",
        )
    from gridtwin.resources import BOARDS_DIR, known_boards

    # caught here, not when a node's config is first rendered (by then the demo has its broker up);
    # an installation without board files is an error of its own (known_boards says where it looked)
    known = known_boards()
    if value not in known:
        near = difflib.get_close_matches(value, known, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        return (
            f"unknown board '{value}': there is no {BOARDS_DIR / value}.json",
            f"{hint}use one of: {', '.join(known)}, or add a board file",
        )
    return None


def check_role(value: str):
    if value not in ROLES:
        near = difflib.get_close_matches(value, sorted(ROLES), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        return f"unknown role '{value}'", f"{hint}use one of: {', '.join(sorted(ROLES))}"
    return None


def check_parents(what: str, example: str) -> Callable[[Any], Any]:
    """A check for `parent`: one id or a list of ids (what: "node", "component")."""

    def check(value):
        ids = [value] if isinstance(value, str) else value
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return f"must be a {what} id or a list of {what} ids", example
        for i in ids:
            problem = check_id(i)
            if problem:
                return problem
        return None

    return check


check_parent = check_parents("node", 'e.g. parent = "trf_a" or parent = ["trf_a", "gen_a"]')


_FIRMWARE_DEFAULT = object()


def firmware_key(
    dotted: str, help: str | None = None, default: Any = _FIRMWARE_DEFAULT, check=None
) -> Key:
    """A site key rendered into the firmware's config key `dotted` ("queue", "mqtt.keepalive"): its
    type, default and range are the firmware's (gt/config.py's schema), so the two agree by
    construction. `default` overrides the firmware's (None: absent, the board file's value
    stands); `check` replaces the range; `help` says what the key means in site.toml."""
    return row_key(fwsource.firmware_row(dotted), help, default, check)


def row_key(
    row: fwsource.Row, help: str | None = None, default: Any = _FIRMWARE_DEFAULT, check=None
) -> Key:
    """The site key of a firmware row (gridtwin.fwsource.Row): its range or choices as the check."""
    if check is None and row.lo is not None:
        check = in_range(row.lo, row.hi)
    elif check is None and row.choices:
        check = (
            one_of(*row.choices)
            if all(isinstance(c, str) for c in row.choices)
            else _number_of(row)
        )
    return Key(
        row.type,
        row.default if default is _FIRMWARE_DEFAULT else default,
        check=check,
        help=help or row.help,
    )


def _number_of(row) -> Callable[[Any], Any]:
    def check(v):
        if v not in row.choices:
            what = getattr(row, "what", "") or f"one of {', '.join(str(x) for x in row.choices)}"
            return f"{v} is not {what}", f"use one of: {', '.join(str(x) for x in row.choices)}"
        return None

    return check


def parents_first(parents: dict[str, list[str]]) -> tuple[list[str], list[str] | None]:
    """The ids ordered so that each comes after its parents, and the first loop met: its ids from
    the one met twice back to it ("a", "b", "a"), or None. Used by the site's power topology and the
    twin's (gridtwin.twin.topology)."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(i: str, trail: list[str]) -> list[str] | None:
        if state.get(i) == 2:
            return None
        if state.get(i) == 1:
            return trail[trail.index(i) :] + [i]
        state[i] = 1
        for p in parents[i]:
            loop = visit(p, trail + [i])
            if loop:
                return loop
        state[i] = 2
        order.append(i)
        return None

    for i in parents:
        loop = visit(i, [])
        if loop:
            return order, loop
    return order, None


# --- the schema ----------------------------------------------------------------------------------

SITE = Section(
    {
        "id": Key(
            str,
            REQUIRED,
            check=check_id,
            help="short site id, used in the topic root and the CA name",
        ),
        "name": Key(str, lambda s: s.get("id"), help="human-readable site name"),
        "topic_root": Key(
            str,
            lambda s: f"gridtwin/{s.get('id')}",
            check=check_topic_root,
            help="MQTT topic root (default gridtwin/<site id>)",
        ),
        "var": Key(
            "path",
            VAR,
            help="runtime data folder (databases, broker state), relative to the site file",
        ),
        "certs": Key("path", CERTS, help="PKI folder, relative to the site file"),
    },
    help="who this site is",
    required=True,
)
BROKER = Section(
    {
        "hosts": Key(
            list,
            ["localhost"],
            item=Key(str, check=check_hostname),
            help="DNS names clients use for the broker (server certificate SANs)",
        ),
        "addresses": Key(
            list,
            ["127.0.0.1", "::1"],
            item=Key(str, check=check_ip),
            help="IP addresses clients use for the broker (server certificate SANs)",
        ),
        "port": Key(int, 8883, check=check_port, help="MQTT over TLS port"),
        "ws_port": Key(
            int, 0, check=check_port, help="MQTT over TLS WebSockets port for browsers; 0 = off"
        ),
        "dev_port": Key(
            int,
            1883,
            check=check_port,
            help="plain loopback listener, only with `broker run --dev`",
        ),
        "listen": Key(str, "", help="address `broker install` binds to; empty = all interfaces"),
        "max_packet_size": Key(
            int,
            32768,
            check=in_range(1024, 268435455),
            help="bytes; larger packets are refused and the sender disconnected",
        ),
        "max_queued_messages": Key(
            int,
            100000,
            check=in_range(100, None),
            help="QoS 1 messages queued per client (the host subscriber sees every node)",
        ),
        "max_queued_bytes": Key(
            int,
            64 * 1024 * 1024,
            check=in_range(0, None),
            help="bytes queued per client; 0 = no byte limit",
        ),
        "max_inflight_messages": Key(
            int,
            100,
            check=in_range(1, 65535),
            help="unacknowledged QoS 1 messages per MQTT 3.1.1 client (the daemon, on MQTT 5, "
            "asks for [daemon] receive_maximum)",
        ),
        "persistent_client_expiration": Key(
            str,
            "14d",
            check=lambda v: (
                None
                if re.fullmatch(r"\d+[hdwmy]", v)
                else (f"'{v}' is not a duration", "use a number and h/d/w/m/y, e.g. '14d'")
            ),
            help="drop sessions of clients gone this long",
        ),
    },
    help="the Mosquitto broker",
)
PKI = Section(
    {
        "ca_days": Key(int, 3650, check=in_range(1, 36500), help="CA validity in days"),
        "days": Key(
            int,
            825,
            check=in_range(1, 36500),
            help="validity of node, service and server certificates",
        ),
        "crl_days": Key(
            int, 365, check=in_range(1, 3650), help="how far ahead each CRL's next-update lies"
        ),
        "warn_days": Key(
            int,
            30,
            check=in_range(0, 3650),
            help="`pki list` warns when a certificate expires sooner",
        ),
    },
    help="the site PKI",
)

# a [[nodes]] entry's own keys; gridtwin.schema adds the sensor layer's (sensors, display, pins)
NODE_KEYS: dict[str, Key] = {
    "id": Key(
        str,
        REQUIRED,
        check=check_node_id,
        help="node id: certificate CN, MQTT username and topic level",
    ),
    "board": firmware_key("board", "board file name in boards/", check=check_board),
    "role": Key(str, REQUIRED, check=check_role, help="what the node stands for in the plant"),
    "parent": Key(
        (str, list),
        None,
        check=check_parent,
        help="upstream node(s) in the power topology: an id or a list of ids",
    ),
    "interval_ms": firmware_key("sample_ms", "sampling interval in milliseconds"),
    "description": Key(str, "", help="free text"),
}


class Site:
    """A validated site. Sections are `Record`s (site.broker.port); nodes are `Node`s in file
    order."""

    def __init__(self, path: Path, sections: dict[str, Any]):
        self.path = path
        self.dir = path.parent
        self.sections = sections
        meta = sections["site"]
        self.id: str = meta.id
        self.name: str = meta.name
        self.topic_root: str = meta.topic_root
        self.var_dir: Path = meta.var
        self.certs_dir: Path = meta.certs
        self.broker: Record = sections["broker"]
        self.pki: Record = sections["pki"]
        self.nodes: list[Node] = sections["nodes"]

    def __getattr__(self, name: str) -> Any:
        # Sections added by extensions: site.storage, site.twin, site.stack ...
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def section(self, name: str) -> Any:
        return self.sections[name]

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def node(self, node_id: str) -> Node:
        """The node with this id, or a ConfigError naming the site file and suggesting a near id."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        near = difflib.get_close_matches(node_id, self.node_ids, n=1)
        fix = (
            f"did you mean '{near[0]}'?"
            if near
            else f"known nodes: {', '.join(self.node_ids) or 'none'}"
        )
        raise ConfigError(self.path, "nodes", f"no node '{node_id}'", fix)

    def topic(self, node_id: str, leaf: str) -> str:
        return f"{self.topic_root}/{node_id}/{leaf}"

    def children(self, node_id: str) -> list[Node]:
        return [n for n in self.nodes if node_id in n.parents]


def check_nodes(site: Site) -> None:
    """Node ids unique, parents known, the power topology without loops (a whole-site check)."""
    seen: dict[str, int] = {}
    for i, n in enumerate(site.nodes):
        if n.id in seen:
            raise ConfigError(
                site.path,
                f"nodes[{i}].id",
                f"'{n.id}' is already used by nodes[{seen[n.id]}]",
                "give every node its own id",
            )
        seen[n.id] = i
    for i, n in enumerate(site.nodes):
        for p in n.parents:
            if p == n.id:
                raise ConfigError(
                    site.path,
                    f"nodes[{i}].parent",
                    f"node '{n.id}' is its own parent",
                    "name the node upstream",
                )
            if p not in seen:
                near = difflib.get_close_matches(p, list(seen), n=1)
                fix = f"did you mean '{near[0]}'?" if near else "name a node defined in this file"
                raise ConfigError(site.path, f"nodes[{i}].parent", f"no node '{p}'", fix)
    # The power topology must be a DAG.
    _, loop = parents_first({n.id: n.parents for n in site.nodes})
    if loop:
        raise ConfigError(
            site.path,
            f"nodes[{seen[loop[0]]}].parent",
            f"the power topology has a loop: {' -> '.join(loop)}",
            "remove one parent link of the loop",
        )


# --- loader --------------------------------------------------------------------------------------

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
    "path": "a path string",
}


def _type_ok(value: Any, typ: Any) -> bool:
    if isinstance(typ, tuple):
        return any(_type_ok(value, t) for t in typ)
    if typ == "path":
        return isinstance(value, str) and value != ""
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is Any:
        return True
    return isinstance(value, typ)


def _type_name(typ: Any) -> str:
    if isinstance(typ, tuple):
        return " or ".join(_type_name(t) for t in typ)
    return _TYPE_NAMES.get(typ, getattr(typ, "__name__", str(typ)))


class _Loader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str | None, problem: str, fix: str | None = None):
        raise ConfigError(self.path, key, problem, fix)

    def value(self, value: Any, key: Key, where: str) -> Any:
        if not _type_ok(value, key.type):
            self.fail(
                where,
                f"is {type(value).__name__} {value!r}, expected {_type_name(key.type)}",
                key.fix or key.help or None,
            )
        if key.type is float:
            value = float(value)
        if key.type == "path":
            p = Path(value).expanduser()
            value = p if p.is_absolute() else (self.path.parent / p)
        if isinstance(value, list) and key.item is not None:
            value = [self.value(v, key.item, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict) and key.keys is not None:
            value = self.table(value, key.keys, where)
        if key.check is not None:
            result = key.check(value)
            if result:
                problem, fix = (result, key.fix or key.help) if isinstance(result, str) else result
                self.fail(where, problem, fix)
        return value

    def table(self, raw: dict, keys: dict[str, Key], where: str, cls=Record) -> Record:
        out: dict[str, Any] = {}
        for name in raw:
            if name not in keys:
                near = difflib.get_close_matches(name, list(keys), n=1)
                fix = (
                    f"did you mean '{near[0]}'?"
                    if near
                    else f"known keys: {', '.join(keys) or 'none'}"
                )
                self.fail(f"{where}.{name}" if where else name, "unknown key", fix)
        for name, key in keys.items():
            dotted = f"{where}.{name}" if where else name
            if name in raw:
                out[name] = self.value(raw[name], key, dotted)
            elif key.default is REQUIRED:
                self.fail(dotted, "is missing", f"add it: {key.help}" if key.help else "add it")
            else:
                default = key.default(out) if callable(key.default) else key.default
                # Mutable defaults are copied so one site's edits never leak into another's.
                default = (
                    list(default)
                    if isinstance(default, list)
                    else dict(default)
                    if isinstance(default, dict)
                    else default
                )
                if key.type == "path" and isinstance(default, str):
                    default = self.path.parent / default
                out[name] = default
        return cls(out)

    def site(self, raw: dict, schema: dict[str, Section], checks) -> Site:
        for name in raw:
            if name not in schema:
                near = difflib.get_close_matches(name, list(schema), n=1)
                fix = (
                    f"did you mean [{near[0]}]?" if near else f"known sections: {', '.join(schema)}"
                )
                self.fail(name, "unknown section", fix)
        sections: dict[str, Any] = {}
        for name, section in schema.items():
            value = raw.get(name)
            if section.many:
                value = [] if value is None else value
                if not isinstance(value, list):
                    self.fail(name, "must be an array of tables", f"write each entry as [[{name}]]")
                items = []
                for i, entry in enumerate(value):
                    if not isinstance(entry, dict):
                        self.fail(
                            f"{name}[{i}]", "must be a table", f"write each entry as [[{name}]]"
                        )
                    label = f"{name}[{i}]"
                    cls = Node if name == "nodes" else Record
                    rec = self.table(entry, section.keys, label, cls)
                    if name == "nodes":
                        p = rec.parent
                        rec.parents = [] if p is None else [p] if isinstance(p, str) else list(p)
                    items.append(rec)
                sections[name] = items
            else:
                if value is None:
                    if section.required:
                        self.fail(
                            f"[{name}]",
                            "section is missing",
                            f"add a [{name}] table: {section.help}",
                        )
                    value = {}
                if not isinstance(value, dict):
                    self.fail(name, "must be a table", f"write it as [{name}]")
                sections[name] = self.table(value, section.keys, name)
        site = Site(self.path, sections)
        for check in checks:
            check(site)
        return site


def load_site(path: str | Path = "site.toml") -> Site:
    """Read and validate a site file against the whole schema (gridtwin.schema, the composition
    root). Raises ConfigError naming file, key, problem and fix."""
    from gridtwin import schema  # the root imports the sections' modules, which import this one

    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path,
            None,
            "no such site file",
            f"run from the folder that holds site.toml, pass --site PATH, or start from the "
            f"example: cp {example_site_path()} site.toml",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            path, None, f"cannot read it: {exc}", "check the path and its permissions"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            path, None, f"not valid TOML: {exc}", "fix the syntax at that line"
        ) from None
    try:
        return _Loader(path).site(raw, schema.SCHEMA, schema.CHECKS)
    except ConfigError as exc:
        raise _by_node_id(exc, raw) from None


_NODE_INDEX = re.compile(r"\bnodes\[(\d+)\]")


def _by_node_id(exc: ConfigError, raw: dict) -> ConfigError:
    """`nodes[6].role` -> `nodes[pdu_a].role`: the id says which node, the index only counts tables.

    One place for every check (the loader's and the schema's CHECKS); a node keeps its index
    when its id is missing, invalid or used twice."""
    entries = raw.get("nodes") if isinstance(raw.get("nodes"), list) else []
    ids = [e.get("id") if isinstance(e, dict) else None for e in entries]

    def name(m: re.Match) -> str:
        i = int(m.group(1))
        nid = ids[i] if i < len(ids) else None
        ok = isinstance(nid, str) and ID_RE.fullmatch(nid) and ids.count(nid) == 1
        return f"nodes[{nid}]" if ok else m.group(0)

    if not exc.key or not _NODE_INDEX.search(exc.key) or re.fullmatch(r"nodes\[\d+\]\.id", exc.key):
        return exc  # a wrong id is better named by its place
    return ConfigError(
        exc.file, _NODE_INDEX.sub(name, exc.key), _NODE_INDEX.sub(name, exc.problem), exc.fix
    )


def example_site_path() -> Path:
    """The packaged example site (the demo's data centre, electrolyser plant and grid monitor)."""
    from gridtwin.resources import EXAMPLE_SITE

    return EXAMPLE_SITE
