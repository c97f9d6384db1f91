"""How a node reaches the broker: the ``[network]`` section of site.toml and its config.json keys.

``NETWORK`` is the section (gridtwin.schema lists it) and ``network(site)`` the config.json keys
it renders to (gridtwin.nodeconfig's pipeline), the keys the firmware's schema
(firmware/gt/config.py: wifi, mqtt, ntp, spill_kb, queue, health_s, log_level) accepts. The keys
rendered as they are take
their type, default and range from that schema (``firmware_key``), so host and node agree::

    [network]
    wifi_ssid = "plant-iot"
    wifi_psk = "..."              # stored on the node's flash (config.json), as any Wi-Fi password
    # mqtt_host = "gridtwin.lan"  # default: the broker's first LAN IPv4, else broker.hosts[0]
    # keepalive = 30
    # health_s = 60               # heap, RSSI, uptime, outbox, drops on <root>/<node>/status
    # log_level = "info"          # default "warn": problems only on <root>/<node>/log

The node's certificate, key and the site CA go to its flash as ``cert.der``, ``key.der`` and
``ca.der`` (``gridtwin deploy``), the names the rendered config gives.
"""

from __future__ import annotations

from gridtwin.site import Key, Section, firmware_key, in_range

NETWORK = Section(
    {
        "wifi_ssid": Key(
            str,
            "",
            help="Wi-Fi network the nodes join; empty: none (virtual nodes use the host's network)",
        ),
        "wifi_psk": Key(str, "", help="Wi-Fi password (written into each node's config.json)"),
        "mqtt_host": Key(
            str,
            "",
            help="broker host name or address the nodes dial; empty: the broker's first "
            "non-loopback IPv4 address (no DNS on the node), else the first of broker.hosts",
        ),
        "server_name": Key(
            str, "", help="name checked on the broker certificate; empty: the first of broker.hosts"
        ),
        "ntp": Key(
            str,
            "",
            help="NTP server for the nodes; empty: the broker host (the Pi), where `gridtwin "
            "daemon` answers SNTP (ntp_serve)",
        ),
        "ntp_serve": Key(
            bool,
            True,
            help="the daemon answers SNTP with the host's clock, the one it judges readings "
            "by (gridtwin.daemon.sntp); false when chrony/ntpd serves the nodes",
        ),
        "ntp_port": Key(
            int,
            0,
            check=in_range(0, 65535),
            help="UDP port of the daemon's SNTP responder; 0: 123 (what boards ask), or 10123 when "
            "the daemon may not bind 123 (not root and no CAP_NET_BIND_SERVICE)",
        ),
        "ntp_bind": Key(
            str, "", help="address the SNTP responder binds; empty: every IPv4 address"
        ),
        "keepalive": firmware_key("mqtt.keepalive", "MQTT keepalive in seconds"),
        "queue": firmware_key("queue", "readings a node keeps in RAM before spilling to flash"),
        "spill_kb": firmware_key("spill_kb", "outbox spill file on a node's flash, KB; 0: none"),
        "replay_per_s": firmware_key(
            "mqtt.replay_per_s", "backlog readings a node replays a second"
        ),
        "health_s": firmware_key(
            "health_s",
            "seconds between a node's health reports on its status topic (heap, RSSI, "
            "uptime, outbox, drops); 0: only the birth at each connect",
        ),
        "log_level": firmware_key(
            "log_level",
            "least level a node sends on its log topic; info adds what it does "
            "(commands, recoveries), warn: problems only",
        ),
    },
    help="how nodes reach the broker",
)


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


def setting(site, key: str):
    """A `[network]` value of the site, or its default when the site was built without the
    section."""
    net = site.sections.get("network")
    return net.get(key) if net is not None else NETWORK.keys[key].default


def network(site) -> dict:
    """The config.json keys of the link to the broker; the same for every node of the site."""

    def get(k):
        return setting(site, k)

    hosts = list(site.broker.hosts) or ["localhost"]
    host = get("mqtt_host") or _dial_address(site) or hosts[0]
    return {
        "wifi": {"ssid": get("wifi_ssid"), "psk": get("wifi_psk")},
        "mqtt": {
            "host": host,
            "port": site.broker.port,
            "server_hostname": get("server_name") or hosts[0],
            "keepalive": get("keepalive"),
            "replay_per_s": get("replay_per_s"),
            "ca": "ca.der",
            "cert": "cert.der",
            "key": "key.der",
        },
        "ntp": get("ntp"),
        "queue": get("queue"),
        "spill_kb": get("spill_kb"),
        "health_s": get("health_s"),
        "log_level": get("log_level"),
    }
