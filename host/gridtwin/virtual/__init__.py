"""Virtual boards. ``shim/`` is not Python for the host: it is the fake ESP32 (``machine``,
``network``, ``esp32``, ...) and its register-level chip models (``shim/fakes/``) that the
MicroPython unix port imports ahead of the firmware; it ships as package data (see
gridtwin.resources)."""
