"""Defaults that both the site loader and the read-only verbs' fast path (`sitequick`) need, in one
place that imports nothing."""

VAR = "var"  # [site] var: runtime data, relative to the site file
CERTS = "certs"  # [site] certs: the PKI, relative to the site file
DB_FILE = "gridtwin.db"  # the daemon's database in var/ when [storage] path is empty
