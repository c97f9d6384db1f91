"""The names of the site's service identities: one home for the PKI that issues their certificates,
the broker's ACL that grants them topics, and the site check that keeps nodes off them (a node named
like a service could not be told from it). No imports: the site check reads it without the PKI."""

SERVER_IDENTITY = "broker"
HOST_IDENTITY = "gridtwin-host"
TELEGRAF_IDENTITY = "telegraf"
GRAFANA_IDENTITY = "grafana"
# `gridtwin ota`: the one identity the broker lets write a node's update topic (docs/ota.md)
OTA_IDENTITY = "gridtwin-ota"
SERVICE_IDENTITIES = (HOST_IDENTITY, TELEGRAF_IDENTITY, GRAFANA_IDENTITY, OTA_IDENTITY)
# what a node may not be called: every identity above, and the CA's folder name
RESERVED_IDS = frozenset({SERVER_IDENTITY, *SERVICE_IDENTITIES, "ca"})
