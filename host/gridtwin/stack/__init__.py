"""The full monitoring stack on the Pi: Telegraf -> InfluxDB 2 -> Grafana, set up by one command.

- ``telegraf``: renders Telegraf's MQTT consumer (its own client certificate, persistent session,
  QoS 1, topic parsing into site/node tags, json_v2 with ``ts`` as unix_ms) and InfluxDB 2 output
  (token from an environment file).
- ``influx``: provisions InfluxDB 2 over its HTTP API (setup, bucket with retention, a write-only
  token for Telegraf and a read-only token for Grafana, each written straight from the creating
  response into a root-only environment file; never printed).
- ``grafana``: datasource and dashboard provisioning, the dashboards, the MQTT live datasource.
- ``install``: the file plan (paths, modes, owners), the 64-bit check, SD-card-sparing settings.
- ``doctor``: checks each service and the data path, and says what to fix.

Every path is placed under a ``root`` folder ("/" on the Pi, a temp folder in tests and for
``stack render``), so the same code writes the real files and the ones tests parse.
"""
