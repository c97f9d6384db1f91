"""The site schema's composition root: every section of site.toml, every key of a ``[[nodes]]``
entry and every whole-site check, listed here by name from the module that owns it.

The modules only define their rows (a `Section`, a dict of `Key`s, a check function); importing
one registers nothing anywhere. `gridtwin.site.load_site` validates against ``SCHEMA`` and then
runs ``CHECKS`` in order. A new section is a `Section` in its module and one line below.
"""

from __future__ import annotations

from gridtwin import nodenet, sensors_site, site
from gridtwin.analytics import config as analytics_config
from gridtwin.daemon import config as daemon_config
from gridtwin.opcua import config as opcua_config
from gridtwin.stack import config as stack_config
from gridtwin.twin import topology
from gridtwin.web import config as web_config

# a [[nodes]] entry: its own keys, then the sensor layer's (sensors, display, pins)
NODE_KEYS = {**site.NODE_KEYS, **sensors_site.NODE_KEYS}

# the sections in the order they are validated (the first problem is the one reported)
SCHEMA: dict[str, site.Section] = {
    "site": site.SITE,
    "broker": site.BROKER,
    "pki": site.PKI,
    "nodes": site.Section(NODE_KEYS, help="telemetry nodes", many=True),
    "storage": daemon_config.STORAGE,  # issue #6
    "daemon": daemon_config.DAEMON,
    "stack": stack_config.STACK,  # issue #8
    "twin": topology.TWIN,  # issue #7
    "network": nodenet.NETWORK,  # issue #4
    "analytics": analytics_config.ANALYTICS,  # issue #15
    "opcua": opcua_config.OPCUA,  # issue #16
    "web": web_config.WEB,  # issue #18
}

# whole-site checks that rows cannot express: fn(site) raises ConfigError
CHECKS = (
    site.check_nodes,  # ids, parents, the power topology
    *daemon_config.CHECKS,  # storage windows, instance ports
    topology.check_site,  # the twin's components (builds the topology the renderer reuses)
    sensors_site.check_sensors,  # sensors against their type's rows and the chips' limits
    analytics_config.check_site,  # the nodes analytics rows name
)
