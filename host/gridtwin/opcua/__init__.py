"""OPC UA (issue #16): the twin's assets as an encrypted OPC UA server organised by ISA-95, and a
collector that stores every point with its unit and quality. `docs/opcua.md`."""
