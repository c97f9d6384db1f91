"""The web view of the live system, served by the daemon's HTTP server (issue #18): see
gridtwin.web.view."""

from gridtwin.web.view import WebView

__all__ = ["WebView"]
