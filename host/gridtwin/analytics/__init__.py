"""Analytics: what the daemon learns from the readings ingest has committed.

``base`` is the interface every detector implements (``Finding``, ``Detector``, ``Context``); the
engine (``engine``) feeds detectors from a bounded queue off the writer's critical path and turns
their findings into alerts (``gridtwin.daemon.alerts``). See docs/analytics.md.
"""

from gridtwin.analytics.base import Context, Detector, Finding, Reading

__all__ = ["Context", "Detector", "Finding", "Reading"]
