"""The site file: the example loads, defaults apply, every mistake is named with file, key and
fix."""

from pathlib import Path

import pytest

from gridtwin import site as site_mod
from gridtwin.cli import main
from gridtwin.errors import ConfigError
from gridtwin import schema as schema_mod
from gridtwin.site import Key, Section, example_site_path, load_site, one_of

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = '[site]\nid = "s1"\n\n[[nodes]]\nid = "n1"\nrole = "pdu"\n'


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "site.toml"
    p.write_text(text)
    return p


def error_of(tmp_path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_site(write(tmp_path, text))
    return info.value


def test_example_site_loads_with_the_demo_topology():
    s = load_site(example_site_path())
    assert s.id == "demo" and s.topic_root == "gridtwin/demo"
    chain = ["util_a", "trf_a", "sw_a", "dist_a", "ups_a", "pdu_a", "srv_a"]
    for up, down in zip(chain, chain[1:]):
        assert up in s.node(down).parents
    assert s.node("sw_a").parents == ["trf_a", "gen_a"]
    assert {n.id for n in s.children("pv1")} == {"EL1", "EL2"}
    assert s.node("grid1").role == "grid_monitor"
    assert s.broker.hosts == ["localhost"] and s.broker.addresses == ["127.0.0.1", "::1"]


def test_repository_site_equals_the_packaged_example():
    assert (ROOT / "site.toml").read_text() == example_site_path().read_text()


def test_defaults_and_paths_relative_to_the_site_file(tmp_path):
    s = load_site(write(tmp_path, MINIMAL))
    assert s.topic_root == "gridtwin/s1" and s.name == "s1"
    assert s.var_dir == tmp_path / "var" and s.certs_dir == tmp_path / "certs"
    n = s.node("n1")
    assert (n.board, n.interval_ms, n.parent, n.parents) == ("esp32s3", 1000, None, [])
    assert s.broker.port == 8883 and s.broker.ws_port == 0 and s.broker.max_packet_size == 32768
    assert s.topic("n1", "telemetry") == "gridtwin/s1/n1/telemetry"


@pytest.mark.parametrize(
    "text, key, words",
    [
        ('[site]\nid = "s1"\ntopic_rot = "x"\n', "site.topic_rot", "did you mean 'topic_root'"),
        ('[site]\nid = "s1"\n[brokr]\nport = 1\n', "brokr", "did you mean [broker]"),
        ('[site]\nname = "x"\n', "site.id", "is missing"),
        ('[broker]\nport = 1\n', "[site]", "section is missing"),
        ('[site]\nid = "s1"\n[broker]\nport = "8883"\n', "broker.port", "expected an integer"),
        ('[site]\nid = "s1"\n[broker]\nport = 70000\n', "broker.port", "not a TCP port"),
        (
            '[site]\nid = "s1"\n[broker]\naddresses = ["10.0.0.300"]\n',
            "broker.addresses[0]",
            "not an IP address",
        ),
        ('[site]\nid = "s1"\ntopic_root = "a/#"\n', "site.topic_root", "wildcard"),
        ('[site]\nid = "s/1"\n', "site.id", "not a valid id"),
        (MINIMAL.replace('"n1"', '"n+1"'), "nodes[0].id", "not a valid id"),
        (MINIMAL.replace('"n1"', '"n/1"'), "nodes[0].id", "not a valid id"),
        (MINIMAL.replace('"n1"', '"' + "n" * 33 + '"'), "nodes[0].id", "not a valid id"),
        (MINIMAL.replace('"n1"', '"telegraf"'), "nodes[0].id", "reserved"),
        (MINIMAL.replace('"n1"', '"_host"'), "nodes[0].id", "starts with '_'"),
        (MINIMAL.replace('"pdu"', '"pdv"'), "nodes[n1].role", "unknown role 'pdv'"),
        (MINIMAL + 'board = "ESP 32"\n', "nodes[n1].board", "not a board name"),
        (MINIMAL + 'interval_ms = 5\n', "nodes[n1].interval_ms", "out of range"),
        (MINIMAL + 'colour = "red"\n', "nodes[n1].colour", "unknown key"),
        (
            MINIMAL + '\n[[nodes]]\nid = "n1"\nrole = "ups"\n',
            "nodes[1].id",
            "already used by nodes[0]",
        ),
        (
            MINIMAL + 'parent = "n2"\n\n[[nodes]]\nid = "n_2"\nrole = "ups"\n',
            "nodes[n1].parent",
            "no node 'n2'",
        ),
        (MINIMAL + 'parent = "n1"\n', "nodes[n1].parent", "its own parent"),
        (
            MINIMAL + 'parent = "n2"\n\n[[nodes]]\nid = "n2"\nrole = "ups"\nparent = "n1"\n',
            "parent",
            "loop",
        ),
        (MINIMAL + 'parent = 3\n', "nodes[n1].parent", "expected a string or a list"),
    ],
)
def test_mistakes_name_file_key_and_fix(tmp_path, text, key, words):
    err = error_of(tmp_path, text)
    assert err.file == str(tmp_path / "site.toml")
    assert key in err.key
    assert words in str(err)
    assert err.fix, "every error says how to fix it"


def test_unknown_parent_suggests_the_near_id(tmp_path):
    err = error_of(tmp_path, MINIMAL + 'parent = "n2"\n\n[[nodes]]\nid = "n_2"\nrole = "ups"\n')
    assert "did you mean 'n_2'" in str(err)


def test_bad_toml_and_missing_file(tmp_path):
    err = error_of(tmp_path, '[site\nid = "x"\n')
    assert "not valid TOML" in str(err) and err.key is None
    with pytest.raises(ConfigError, match="no such site file"):
        load_site(tmp_path / "nope.toml")


def test_node_lookup_suggests(tmp_path):
    s = load_site(example_site_path())
    with pytest.raises(ConfigError, match="did you mean 'pdu_a'"):
        s.node("pdu_b")


def test_a_section_or_node_key_is_one_row_in_the_composition_root(tmp_path, monkeypatch):
    # gridtwin.schema lists the sections and node keys; a new one is a row there, not an import
    monkeypatch.setitem(
        schema_mod.SCHEMA,
        "archive",
        Section(
            {
                "backend": Key(
                    str, "sqlite", check=one_of("sqlite", "influxdb2"), help="where readings go"
                ),
                "path": Key("path", "var/readings.db", help="SQLite file"),
            }
        ),
    )
    monkeypatch.setitem(
        schema_mod.NODE_KEYS,
        "tags",
        Key(
            list,
            [],
            item=Key(
                dict,
                keys={
                    "kind": Key(str, site_mod.REQUIRED, check=one_of("lm75", "ina219")),
                    "addr": Key(int, 0x48),
                },
            ),
        ),
    )
    s = load_site(
        write(tmp_path, MINIMAL + 'tags = [{kind = "lm75"}]\n\n[archive]\nbackend = "sqlite"\n')
    )
    assert s.archive.backend == "sqlite" and s.archive.path == tmp_path / "var/readings.db"
    assert s.node("n1").tags[0].kind == "lm75" and s.node("n1").tags[0].addr == 0x48
    err = error_of(tmp_path, MINIMAL + 'tags = [{kind = "lm76"}]\n')
    assert err.key == "nodes[n1].tags[0].kind" and "did you mean 'lm75'" in str(err)
    err = error_of(tmp_path, MINIMAL + '[archive]\nbackend = "influx"\n')
    assert err.key == "archive.backend"


def test_site_errors_are_one_line_with_nonzero_exit(tmp_path, capsys):
    bad = write(tmp_path, MINIMAL.replace('"pdu"', '"pdv"'))
    for argv in (["pki", "list"], ["broker", "config"], ["pki", "init"]):
        assert main(["--site", str(bad), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert (
            err.startswith(f"gridtwin: {bad}: nodes[n1].role: unknown role 'pdv'")
            and "did you mean" in err
        )
    assert main(["--site", str(tmp_path / "missing.toml"), "pki", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such site file" in err


def test_every_section_of_the_root_is_known_to_every_load_and_no_import_registers_one(tmp_path):
    # In a fresh interpreter, as `gridtwin pki ...` sees it: load_site alone knows every section the
    # composition root lists, and importing a section's module changes no table of another module
    # (the schema is assembled in gridtwin.schema, not by import side effects).
    import subprocess
    import sys

    p = write(tmp_path, MINIMAL)
    code = (
        "import gridtwin.site as s, gridtwin.nodeconfig as nc\n"
        "before = (dict(vars(s)), dict(vars(nc)))\n"
        "import gridtwin.nodenet, gridtwin.sensors_site, gridtwin.twin.topology, "
        "gridtwin.daemon.config\nimport gridtwin.stack.config\n"
        "assert not hasattr(s, 'SCHEMA') and not hasattr(s, 'EXTENSIONS') and not hasattr(nc, "
        "'CONTRIBUTORS')\nassert set(vars(s)) == set(before[0]) and s.NODE_KEYS == "
        "before[0]['NODE_KEYS']\nfrom gridtwin import schema\n"
        f"site = s.load_site({str(p)!r})\n"
        "print([sorted(schema.SCHEMA), sorted(type(site.section(n)).__name__ for n in "
        "schema.SCHEMA)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names, kinds = eval(out.stdout)  # noqa: S307 - our own output
    assert {
        "site",
        "broker",
        "pki",
        "nodes",
        "storage",
        "daemon",
        "stack",
        "twin",
        "network",
    } <= set(names)
    assert kinds.count("Record") == len(names) - 1  # and nodes, a list


def test_reserved_ids_cover_the_pki_identities():
    from gridtwin.pki import SERVER_IDENTITY, SERVICE_IDENTITIES

    assert {SERVER_IDENTITY, *SERVICE_IDENTITIES} <= site_mod.RESERVED_IDS


@pytest.mark.parametrize(
    "text, key, words",
    [
        ('[daemon]\ninstances = 0\n', "daemon.instances", ""),
        ('[daemon]\ninstances = 17\n', "daemon.instances", ""),
        ('[daemon]\ninstances = "2"\n', "daemon.instances", ""),
        (
            '[daemon]\ninstances = 3\nmetrics_port = 65534\n',
            "daemon.metrics_port",
            "one port per instance",
        ),
        ('[daemon]\nshared_group = "a/b"\n', "daemon.shared_group", "share name"),
    ],
)
def test_daemon_instances_are_validated(tmp_path, text, key, words):
    err = error_of(tmp_path, MINIMAL + text)
    assert err.key == key and words in f"{err.problem} {err.fix}"


def test_host_instance_names_are_reserved_for_any_count(tmp_path):
    for name in ("gridtwin-host-2", "gridtwin-host-9"):  # also beyond today's instances
        err = error_of(tmp_path, MINIMAL + f'\n[[nodes]]\nid = "{name}"\nrole = "pdu"\n')
        assert "host daemon instance" in err.problem and err.key.endswith(".id")
    load_site(write(tmp_path, MINIMAL + '\n[[nodes]]\nid = "gridtwin-hostess"\nrole = "pdu"\n'))


def test_daemon_instances_give_identities_groups_and_clear_errors(tmp_path):
    from gridtwin.daemon.config import shared_group
    from gridtwin.pki import host_identities, host_identity

    one = load_site(write(tmp_path, MINIMAL))
    assert (
        one.daemon.instances == 1
        and host_identities(one) == ["gridtwin-host"]
        and shared_group(one) == ""
    )
    three = load_site(write(tmp_path, MINIMAL + "[daemon]\ninstances = 3\n"))
    assert host_identities(three) == ["gridtwin-host", "gridtwin-host-2", "gridtwin-host-3"]
    assert host_identity(three, 3) == "gridtwin-host-3" and shared_group(three) == "ingest"
    with pytest.raises(ConfigError) as info:
        host_identity(three, 4)
    assert info.value.key == "daemon.instances" and "instances = 4" in info.value.fix


@pytest.mark.parametrize(
    "key, text",
    [
        ("nodes[0].id", '[site]\nid = "s1"\n\n[[nodes]]\nid = "n1\\n"\nrole = "pdu"\n'),
        ("site.id", '[site]\nid = "s1\\n"\n\n[[nodes]]\nid = "n1"\nrole = "pdu"\n'),
        (
            "site.topic_root",
            '[site]\nid = "s1"\ntopic_root = "gt/s1\\nuser evil\\ntopic readwrite #"\n\n'
            '[[nodes]]\nid = "n1"\nrole = "pdu"\n',
        ),
        (
            "site.topic_root",
            '[site]\nid = "s1"\ntopic_root = "gt/s 1"\n\n[[nodes]]\nid = "n1"\nrole = "pdu"\n',
        ),
        (
            "broker.hosts",
            '[site]\nid = "s1"\n\n[broker]\nhosts = ["pi.lan\\n"]\n\n[[nodes]]\nid = "n1"\nrole = '
            '"pdu"\n',
        ),
    ],
)
def test_values_that_would_escape_into_the_broker_config_are_refused(tmp_path, key, text):
    """A trailing newline passed `^...$` patterns: the rendered ACL then stopped Mosquitto from
    starting, and a topic_root with a newline injected ACL rules for another user (issue #19)."""
    err = error_of(tmp_path, text)
    assert err.key.replace("nodes[n1\n]", "nodes[0]").startswith(key.split("[")[0]), err


def test_the_acl_renderer_refuses_a_line_break_whatever_validation_let_through(tmp_path):
    from gridtwin.broker import render_acl
    from gridtwin.errors import BrokerError

    s = load_site(write(tmp_path, MINIMAL))
    s.topic_root = "gt/s1\nuser evil"
    with pytest.raises(BrokerError, match="line break"):
        render_acl(s)


def test_config_json_is_one_pipeline_and_the_twin_topology_is_built_once_per_site(monkeypatch):
    # rendering every node reuses the topology the site's load built (it used to be rebuilt per
    # node)
    from gridtwin.nodeconfig import render
    from gridtwin.twin import topology

    calls = []
    build = topology.build
    monkeypatch.setattr(topology, "build", lambda site: calls.append(1) or build(site))
    s = load_site(example_site_path())
    configs = {n: render(s, n) for n in s.node_ids}
    assert len(calls) == 1 and len(configs) == len(s.node_ids) > 10
    assert configs["EL1"]["params"]["cells"] == 21 and "params" not in configs["srv_a"]
    assert {"wifi", "mqtt", "queue", "pins", "display", "sensors"} <= set(configs["EL1"])
