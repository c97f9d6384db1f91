"""The twin's topology in site.toml: nodes are components, [[twin.components]] gives parameters and
node-less components, and every mistake is one ConfigError naming the file and the key."""

from pathlib import Path

import pytest

from gridtwin.cli import main
from gridtwin.errors import ConfigError
from gridtwin.site import example_site_path, load_site
from gridtwin.twin.topology import KINDS, ROLE_KIND, build

BASE = '''[site]
id = "s1"

[[nodes]]
id = "util"
role = "utility"

[[nodes]]
id = "ups"
role = "ups"
parent = "util"

[[nodes]]
id = "srv"
role = "server"
parent = "ups"

[[nodes]]
id = "pv"
role = "pv"

[[nodes]]
id = "el"
role = "electrolyser"
parent = "pv"
'''


def load(tmp_path, extra: str):
    p = tmp_path / "site.toml"
    p.write_text(BASE + extra)
    return load_site(p)


def error_of(tmp_path, extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    return info.value


def test_example_site_topology():
    topo = build(load_site(example_site_path()))
    kinds = {c.id: c.kind for c in topo.components}
    assert (
        kinds["sw_a"] == "transfer_switch"
        and kinds["grid1"] == "grid_bus"
        and kinds["tank1"] == "h2_tank"
    )
    # Parents come before children; the converter is spliced between the PV node and its stacks.
    pos = {c.id: i for i, c in enumerate(topo.components)}
    for c in topo.components:
        assert all(pos[p] < pos[c.id] for p in c.parents)
    assert topo.by_id["EL1"].parents == ["buck1"] and topo.by_id["buck1"].parents == ["pv1"]
    assert topo.by_id["EL1"].node == "EL1" and topo.by_id["tank1"].node is None
    # Parameters from the file, the rest from the kind's defaults.
    assert topo.by_id["srv_a"].params["load_kw"] == 12.0
    assert topo.by_id["gen_a"].params["start_delay_s"] == 8.0
    assert (
        topo.by_id["EL1"].params["u_cell_max_v"]
        == KINDS["electrolyser"].params["u_cell_max_v"].default
    )


def test_every_role_has_a_kind_and_nodes_alone_make_a_twin(tmp_path):
    from gridtwin.site import ROLES

    assert set(ROLE_KIND) <= ROLES
    assert {"utility", "ups", "server", "pv", "electrolyser", "grid_monitor"} <= set(ROLE_KIND)
    topo = build(load(tmp_path, ""))
    assert [c.kind for c in topo.components] == [
        "utility",
        "ups",
        "server",
        "pv_array",
        "electrolyser",
    ]
    assert topo.twin.step_s == 0.1 and topo.twin.seed == 1


@pytest.mark.parametrize(
    "extra, key, words",
    [
        # cycle through node-less components
        (
            '[[twin.components]]\nid = "a"\nkind = "pdu"\nparent = "b"\n'
            '[[twin.components]]\nid = "b"\nkind = "pdu"\nparent = "a"\n',
            "twin.components[0].parent",
            "loop: a -> b -> a",
        ),
        (
            '[[twin.components]]\nid = "t"\nkind = "h2_tank"\nparent = "sep9"\nparams = { '
            'volume_m3 = 1.0 }\n',
            "twin.components[0].parent",
            "no component 'sep9'",
        ),
        (
            '[[twin.components]]\nid = "t"\nkind = "h2_tank"\nparent = "el"\n',
            "twin.components[0].params.volume_m3",
            "is missing",
        ),
        (
            '[[twin.components]]\nid = "ups"\nparams = { capacity_kw = -3.0 }\n',
            "twin.components[0].params.capacity_kw",
            "out of range",
        ),
        (
            '[[twin.components]]\nid = "ups"\nparams = { capacity_kw = "big" }\n',
            "twin.components[0].params.capacity_kw",
            "expected a number",
        ),
        (
            '[[twin.components]]\nid = "ups"\nparams = { capacty_kw = 3.0 }\n',
            "twin.components[0].params.capacty_kw",
            "unknown parameter",
        ),
        (
            '[[twin.components]]\nid = "ups"\nkind = "server"\n',
            "twin.components[0].kind",
            "does not fit node 'ups'",
        ),
        (
            '[[twin.components]]\nid = "x"\nkind = "transfomer"\nparent = "util"\n',
            "twin.components[0].kind",
            "unknown kind",
        ),
        (
            '[[twin.components]]\nid = "x"\nparent = "util"\n',
            "twin.components[0].kind",
            "needs a kind",
        ),
        (
            '[[twin.components]]\nid = "x"\nkind = "pdu"\n',
            "twin.components[0].parent",
            "missing its parent",
        ),
        (
            '[[twin.components]]\nid = "t"\nkind = "h2_tank"\nparent = "ups"\nparams = { '
            'volume_m3 = 1.0 }\n',
            "twin.components[0].parent",
            "cannot be fed by 'ups' (ups)",
        ),
        (
            '[[twin.components]]\nid = "g"\nkind = "generator"\nparent = "util"\n',
            "twin.components[0].parent",
            "takes no parent",
        ),
        (
            '[[twin.components]]\nid = "x"\nkind = "pdu"\nparent = "pv"\n',
            "twin.components[0].parent",
            "different systems",
        ),
        (
            '[[twin.components]]\nid = "el"\nparent = "pv2"\n[[twin.components]]\nid = '
            '"pv2"\nkind = "pv_array"\n',
            "twin.components[0].parent",
            "not upstream",
        ),
        (
            '[[twin.components]]\nid = "el"\nparams = { cells = 2.5 }\n',
            "twin.components[0].params.cells",
            "expected an integer",
        ),
        (
            '[[twin.components]]\nid = "el"\nparams = { f2 = 1.2 }\n',
            "twin.components[0].params.f2",
            "out of range",
        ),
        (
            '[[twin.components]]\nid = "el"\nparams = { r1 = "low" }\n',
            "twin.components[0].params.r1",
            "expected a number",
        ),
        ('[twin]\nstep_s = 0\n', "twin.step_s", "out of range"),
        ('[twin]\nclear_sky = "perez"\n', "twin.clear_sky", "unknown clear-sky model"),
        ('[twin]\nlinke_turbidity = 0.5\n', "twin.linke_turbidity", "out of range"),
        ('[twin]\nstart = "yesterday"\n', "twin.start", "not an ISO 8601"),
        ('[twin]\nsede = 3\n', "twin.sede", "did you mean 'seed'"),
    ],
)
def test_bad_topologies_name_file_and_key(tmp_path, extra, key, words):
    err = error_of(tmp_path, extra)
    assert err.key == key, str(err)
    assert words in err.problem or words in (err.fix or ""), str(err)
    assert err.file == str(tmp_path / "site.toml")


def test_topology_error_is_one_line_from_the_cli(tmp_path, capsys):
    p = tmp_path / "site.toml"
    p.write_text(BASE + '[[twin.components]]\nid = "t"\nkind = "h2_tank"\nparent = "el"\n')
    assert main(["--site", str(p), "pki", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"gridtwin: {p}: twin.components[0].params.volume_m3: is missing")


def test_repository_site_still_equals_the_example():
    root = Path(__file__).resolve().parents[2]
    assert (root / "site.toml").read_text() == example_site_path().read_text()


def test_aliases_and_a_sensor_node_standing_for_any_kind(tmp_path):
    topo = build(
        load(
            tmp_path,
            '''
[[nodes]]
id = "probe"
role = "sensor"
parent = "el"

[[twin.components]]
id = "sep"
kind = "separator"
parent = "el"

[[twin.components]]
id = "probe"
kind = "hydrogen_tank"
parent = "sep"
params = { volume_m3 = 3.0 }
''',
        )
    )
    assert topo.by_id["sep"].kind == "gas_separator"
    assert topo.by_id["probe"].kind == "h2_tank" and topo.by_id["probe"].parents == ["sep"]
    assert topo.by_id["probe"].params["volume_m3"] == 3.0


def test_an_electrolyser_node_counts_the_cells_of_its_twin_stack():
    from gridtwin.nodeconfig import render
    from gridtwin.site import load_site

    site = load_site(example_site_path())
    assert render(site, "EL1")["params"]["cells"] == 21
    assert "params" not in render(site, "srv_a")
