from gridtwin.cli import run

run()
