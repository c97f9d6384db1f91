"""`gridtwin demo`: the whole system on one machine (see gridtwin.demo.runner)."""
