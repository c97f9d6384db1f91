"""How a node reaches the broker: the ``[network]`` section of site.toml and its config.json keys.

Importing this module registers the section (``gridtwin.site.EXTENSIONS`` lists it) and adds a
contributor to ``gridtwin.nodeconfig.CONTRIBUTORS`` that writes the keys the firmware's schema
(firmware/gt/config.py: wifi, mqtt, ntp, spill_kb, queue, health_s, log_level) accepts::

    [network]
    wifi_ssid = "plant-iot"
    wifi_psk = "..."              # stored on the node's flash (config.json), as any Wi-Fi password
    # mqtt_host = "gridtwin.lan"  # default: the broker's first LAN IPv4 address, else broker.hosts[0]
    # keepalive = 30
    # health_s = 60               # heap, RSSI, uptime, outbox, drops on <root>/<node>/status
    # log_level = "info"          # default "warn": problems only on <root>/<node>/log

The node's certificate, key and the site CA go to its flash as ``cert.der``, ``key.der`` and
``ca.der`` (``gridtwin deploy``), the names the rendered config gives.
"""

from __future__ import annotations

from gridtwin.nodeconfig import CONTRIBUTORS
from gridtwin.site import SCHEMA, Key, Section, in_range, one_of

SCHEMA.setdefault("network", Section({
    "wifi_ssid": Key(str, "", help="Wi-Fi network the nodes join; empty: none (virtual nodes use the host's network)"),
    "wifi_psk": Key(str, "", help="Wi-Fi password (written into each node's config.json)"),
    "mqtt_host": Key(str, "", help="broker host name or address the nodes dial; empty: the broker's first "
                                   "non-loopback IPv4 address (no DNS on the node), else the first of broker.hosts"),
    "server_name": Key(str, "", help="name checked on the broker certificate; empty: the first of broker.hosts"),
    "ntp": Key(str, "", help="NTP server for the nodes; empty: the broker host (the Pi), where `gridtwin daemon` "
                             "answers SNTP (ntp_serve)"),
    "ntp_serve": Key(bool, True, help="the daemon answers SNTP with the host's clock, the one it judges readings "
                                      "by (gridtwin.daemon.sntp); false when chrony/ntpd serves the nodes"),
    "ntp_port": Key(int, 0, check=in_range(0, 65535),
                    help="UDP port of the daemon's SNTP responder; 0: 123 (what boards ask), or 10123 when the "
                         "daemon may not bind 123 (not root and no CAP_NET_BIND_SERVICE)"),
    "ntp_bind": Key(str, "", help="address the SNTP responder binds; empty: every IPv4 address"),
    "keepalive": Key(int, 30, check=in_range(5, 3600), help="MQTT keepalive in seconds"),
    "queue": Key(int, 16, check=in_range(4, 4096), help="readings a node keeps in RAM before spilling to flash"),
    "spill_kb": Key(int, 64, check=in_range(0, 1024), help="outbox spill file on a node's flash, KB; 0: none"),
    "replay_per_s": Key(int, 20, check=in_range(1, 1000), help="backlog readings a node replays a second"),
    "health_s": Key(int, 60, check=in_range(0, 86400),
                    help="seconds between a node's health reports on its status topic (heap, RSSI, uptime, "
                         "outbox, drops); 0: only the birth at each connect"),
    "log_level": Key(str, "warn", check=one_of("info", "warn", "error"),
                     help="least level a node sends on its log topic; info adds what it does (commands, "
                          "recoveries), warn: problems only"),
}, help="how nodes reach the broker"))


def _dial_address(site) -> str | None:
    # Nodes dial an address when the site gives one: a name means a DNS lookup on the node, and
    # MicroPython's getaddrinfo blocks the event loop for as long as lwIP waits. Loopback addresses
    # are for the host's own clients, never for a board.
    import ipaddress

    for a in site.broker.addresses:
        ip = ipaddress.ip_address(a)
        if not ip.is_loopback and ip.version == 4:
            return a
    return None


def contribute(site, node, board, cfg: dict) -> None:
    net = site.sections.get("network")
    get = (lambda k: net.get(k)) if net is not None else (lambda k: SCHEMA["network"].keys[k].default)
    hosts = list(site.broker.hosts) or ["localhost"]
    host = get("mqtt_host") or _dial_address(site) or hosts[0]
    cfg["wifi"] = {"ssid": get("wifi_ssid"), "psk": get("wifi_psk")}
    cfg["mqtt"] = {
        "host": host,
        "port": site.broker.port,
        "server_hostname": get("server_name") or hosts[0],
        "keepalive": get("keepalive"),
        "replay_per_s": get("replay_per_s"),
        "ca": "ca.der",
        "cert": "cert.der",
        "key": "key.der",
    }
    cfg["ntp"] = get("ntp")
    cfg["queue"] = get("queue")
    cfg["spill_kb"] = get("spill_kb")
    cfg["health_s"] = get("health_s")
    cfg["log_level"] = get("log_level")


if contribute not in CONTRIBUTORS:
    CONTRIBUTORS.append(contribute)
