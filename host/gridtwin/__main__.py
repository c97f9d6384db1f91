import gc

gc.disable()  # until gridtwin.cli.run knows the verb: a short one runs without it (cli.QUICK)

from gridtwin.cli import run  # noqa: E402

run()
