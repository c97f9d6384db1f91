"""GridTwin host: PKI, broker, ingest, digital twin and tooling for MicroPython telemetry nodes."""

__version__ = "0.1.0"
