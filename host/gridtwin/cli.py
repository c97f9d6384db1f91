"""The `gridtwin` command: a table of verbs and the one place that turns errors into messages.

Each verb lives in ``gridtwin.commands.<module>`` and provides ``add_arguments(parser)`` and
``run(args) -> int | None``. The table below is the whole CLI; a verb is added by adding a row and
its module. Modules are imported only when their verb runs, so a slow import never taxes the rest.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from gridtwin import __version__
from gridtwin.errors import GridTwinError, NotBuiltError, UsageError

# verb -> (module under gridtwin.commands, one-line help, issue that builds it)
VERBS: dict[str, tuple[str, str, int]] = {
    "pki": ("pki", "site PKI: init, issue, rotate, revoke, list", 3),
    "broker": ("broker", "Mosquitto configuration: config, install, run", 3),
    "vnode": ("vnode", "run a virtual node: the real firmware under the MicroPython unix port", 7),
    "daemon": ("daemon", "ingest, storage, registry and twin engine", 6),
    "nodes": ("nodes", "the fleet at a glance", 6),
    "cmd": ("cmd", "send a command to a node and wait for its acknowledgement", 6),
    "tail": ("tail", "live readings", 6),
    "logs": ("logs", "what a node logged (warnings, errors; --follow)", 11),
    "query": ("query", "stored readings of a node's metric", 6),
    "maintenance": (
        "maintenance",
        "when each thermometer's trend reaches its maintenance threshold",
        15,
    ),
    "alerts": (
        "alerts",
        "alerts from node health, the twin and analytics (--active, --follow)",
        15,
    ),
    "kpi": ("kpi", "energy KPIs: kWh per node, renewable share, PUE, electrolyser efficiency", 15),
    "opcua": ("opcua", "the twin as an encrypted OPC UA server (ISA-95) and its collector", 16),
    "demo": ("demo", "the whole system on loopback with virtual nodes", 7),
    "stack": ("stack", "Telegraf, InfluxDB 2 and Grafana: render, install, provision, doctor", 8),
    "deploy": ("deploy", "put firmware, config and certificate on a board", 8),
    "ota": ("ota", "update nodes over the air (firmware, config), with rollback; status", 17),
    "flash": ("flash", "put MicroPython on a board with esptool", 8),
    "doctor": ("doctor", "check this machine and the site", 2),
}


def _load(verb: str):
    module, _help, issue = VERBS[verb]
    try:
        return importlib.import_module(f"gridtwin.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"gridtwin.commands.{module}":
            raise NotBuiltError(f"'{verb}' is not built yet", hint=f"see issue #{issue}") from None
        raise


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, its width found as `shutil.get_terminal_size` finds it: argparse makes
    one for every argument it adds, and importing shutil for it cost every command 3 ms."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            try:
                width = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                width = 0
            if width <= 0:
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    width = 0
            width = (width or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the CLI's one clear line (usage and all would be three)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        verb = self.prog.partition(" ")[2]
        raise UsageError(
            f"{verb}: {message}" if verb else message, hint=f"see `{self.prog} --help`"
        )


def positive(kind=float, what="a number greater than 0"):
    """An argparse type: a number > 0 (a speed, a duration), refused with what it must be."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


def port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1..65535)")
    return int(text)


def _join_dashed_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--since -5m` as `--since=-5m`: argparse takes a value that starts with '-' and is not a
    plain negative number for an option and fails with "expected one argument"."""
    options = parser._option_string_actions  # noqa: SLF001 (argparse keeps no public table)
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        action = options.get(a)
        if (
            action is not None
            and action.nargs is None
            and i + 1 < len(argv)
            and re.match(r"^-[0-9.]", argv[i + 1])
        ):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _verb(argv: list[str]) -> str | None:
    """The verb argparse will pick: the first word that is not an option or --site's value."""
    take_value = False
    for a in argv:
        if take_value:
            take_value = False
        elif a.startswith("--s") and "--site".startswith(a):  # argparse takes --si for --site
            take_value = True
        elif a in ("-h", "--help"):
            return None  # the top-level help lists every verb
        elif not a.startswith("-"):
            return a if a in VERBS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the chosen verb's module is imported and only its parser built (every verb's cost a
    # query 7 ms); with no verb, an unknown one or --help first, every verb is listed.
    verb = _verb(argv)
    parser = _Parser(prog="gridtwin", description="GridTwin host tools")
    parser.add_argument("--version", action="version", version=f"gridtwin {__version__}")
    parser.add_argument("--site", default="site.toml", help="site file (default: ./site.toml)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show tracebacks and debug logs"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    verbose = "-v" in argv or "--verbose" in argv
    try:
        for name, (_module, help_text, _issue) in VERBS.items():
            if verb is None or name == verb:
                p = sub.add_parser(name, help=help_text, description=help_text)
            if name == verb:
                _load(name).add_arguments(p)
                argv = _join_dashed_values(p, argv)
        args = parser.parse_args(argv)
        if not args.verb:
            parser.print_help()
            return 2
        result = _load(args.verb).run(args)
        return int(result or 0)
    except GridTwinError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"gridtwin: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gridtwin: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


# Verbs that are short, read-only and close what they open (issue #20): their process runs without
# the cyclic GC (31 passes in a query's imports and rows) and ends as soon as its output is
# flushed, without the interpreter's teardown of the modules it loaded: 4 ms of a query.
QUICK = {"query"}


def run() -> None:
    """The process's entry (`python -m gridtwin`, which disables the GC before importing this):
    main(), then exit; a verb in QUICK at once, when nothing is left to run at exit (no atexit
    callback, no other thread)."""
    import gc

    quick = _verb(sys.argv[1:]) in QUICK
    if not quick:
        gc.enable()
    code = main()
    if quick:
        import atexit

        threading = sys.modules.get("threading")
        if not atexit._ncallbacks() and (threading is None or threading.active_count() == 1):  # noqa: SLF001
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # the ordinary exit reports it, as it always has
            else:
                os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    run()
