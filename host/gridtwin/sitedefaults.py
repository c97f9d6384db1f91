"""Defaults that both the site loader and the read-only verbs' fast path (`sitequick`) need, in one
place that imports nothing."""

VAR = "var"  # [site] var: runtime data, relative to the site file
CERTS = "certs"  # [site] certs: the PKI, relative to the site file
DB_FILE = "gridtwin.db"  # the daemon's database in var/ when [storage] path is empty
# [daemon] receive_maximum: unacknowledged QoS 1 messages the broker may send the daemon. Above
# ingest's SPILL_AT, so a backlog is spilled in batches of thousands while the broker refills the
# rest of the window (issue #20's notes: 2,000 held a burst to about half the rate)
RECEIVE_MAXIMUM = 10000
