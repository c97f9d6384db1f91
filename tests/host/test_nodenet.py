"""site.toml [network] -> the link keys of a node's config.json (issue #4)."""

import pytest

from gridtwin.errors import ConfigError
from gridtwin.nodeconfig import render
from gridtwin.site import load_site

SITE = """
[site]
id = "lab"

[broker]
hosts = ["pi.lan", "localhost"]
port = 8884

[network]
wifi_ssid = "plant-iot"
wifi_psk = "s3cret"
keepalive = 45
spill_kb = 128

[[nodes]]
id = "env1"
role = "sensor"
board = "esp32"
"""


def test_render_writes_the_link_keys_the_firmware_reads(tmp_path):
    (tmp_path / "site.toml").write_text(SITE)
    cfg = render(load_site(tmp_path / "site.toml"), "env1")
    assert cfg["wifi"] == {"ssid": "plant-iot", "psk": "s3cret"}
    assert cfg["mqtt"] == {
        "host": "pi.lan",
        "port": 8884,
        "server_hostname": "pi.lan",
        "keepalive": 45,
        "replay_per_s": 20,
        "ca": "ca.der",
        "cert": "cert.der",
        "key": "key.der",
    }
    assert cfg["ntp"] == "" and cfg["spill_kb"] == 128 and cfg["queue"] == 16
    assert (
        cfg["health_s"] == 60 and cfg["log_level"] == "warn"
    )  # defaults: health every minute, INFO off


def test_health_interval_and_info_logs_reach_the_nodes_config(tmp_path):
    (tmp_path / "site.toml").write_text(
        SITE.replace("spill_kb = 128", 'health_s = 15\nlog_level = "info"')
    )
    cfg = render(load_site(tmp_path / "site.toml"), "env1")
    assert cfg["health_s"] == 15 and cfg["log_level"] == "info"


@pytest.mark.parametrize(
    "line, key",
    [("health_s = -1", "network.health_s"), ('log_level = "debug"', "network.log_level")],
)
def test_a_bad_health_or_log_setting_names_the_key(tmp_path, line, key):
    (tmp_path / "site.toml").write_text(SITE.replace("spill_kb = 128", line))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_site(tmp_path / "site.toml")


def test_defaults_without_a_network_section(tmp_path):
    (tmp_path / "site.toml").write_text(
        SITE.split("[network]")[0] + '[[nodes]]\nid = "env1"\nrole = "sensor"\n'
    )
    cfg = render(load_site(tmp_path / "site.toml"), "env1")
    assert (
        cfg["wifi"]["ssid"] == ""
        and cfg["mqtt"]["host"] == "pi.lan"
        and cfg["mqtt"]["keepalive"] == 30
    )


def test_a_bad_value_names_the_key(tmp_path):
    (tmp_path / "site.toml").write_text(SITE.replace("keepalive = 45", "keepalive = 2"))
    with pytest.raises(ConfigError, match=r"network\.keepalive"):
        load_site(tmp_path / "site.toml")


def test_nodes_dial_the_brokers_lan_address_not_a_name(tmp_path):
    # a name would mean a blocking DNS lookup on the node; loopback is never a board's broker
    site = SITE.replace(
        'port = 8884', 'port = 8884\naddresses = ["127.0.0.1", "::1", "192.168.10.2"]'
    )
    (tmp_path / "site.toml").write_text(site)
    cfg = render(load_site(tmp_path / "site.toml"), "env1")
    assert cfg["mqtt"]["host"] == "192.168.10.2" and cfg["mqtt"]["server_hostname"] == "pi.lan"
