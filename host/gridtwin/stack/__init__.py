"""The full monitoring stack on the Pi: Telegraf -> InfluxDB 2 -> Grafana, set up by one command.

- ``telegraf``: renders Telegraf's one MQTT input (its own client certificate, one persistent
  session, QoS 1, every topic it stores), the Starlark processor that turns telemetry, births,
  logs, twin state and alerts into points (the daemon's schema for telemetry) and the InfluxDB 2
  output (token from an environment file).
- ``influx``: provisions InfluxDB 2 over its HTTP API (setup, bucket with retention, a write-only
  token for Telegraf and a read-only token for Grafana, each written straight from the creating
  response into a root-only environment file; never printed).
- ``grafana``: datasource and dashboard provisioning, the MQTT live datasource, and the dashboards,
  built from gridtwin.catalog (what each node's firmware publishes) and the twin's state.
- ``install``: the file plan (paths, modes, owners), the 64-bit check, SD-card-sparing settings.
- ``doctor``: checks each service and the data path, and says what to fix.

Every path is placed under a ``root`` folder ("/" on the Pi, a temp folder in tests and for
``stack render``), so the same code writes the real files and the ones tests parse.
"""
