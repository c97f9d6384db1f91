"""`gridtwin vnode NODE`: one node of the site as a virtual node, in the foreground.

The real firmware (compiled, as deployed) runs under the MicroPython unix port with the fake-
hardware shim, joins the broker with the node's own certificate and samples the chips of its
sensors; their values come from a live JSON file (``--live``, written by the twin in the demo) or
stay at plausible constants. Its console is printed here; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from pathlib import Path

from gridtwin.errors import GridTwinError, UsageError
from gridtwin.vboard import NODE_HEAP

# The smallest firmware heap in which a node of the example site boots, connects over TLS and
# keeps publishing (measured with `gridtwin vnode NODE --heap N` against `gridtwin broker run`:
# MIN_HEAP_NOTE). Below it the board crash-loops into safe mode, so the flag is refused up front.
MIN_HEAP = "80k"
MIN_HEAP_NOTE = "pdu_a needs 80k, EL1 (INA226, ADC, DS18B20, OLED) 96k"


def heap_size(text: str) -> str:
    """An argparse type for --heap: bytes with an optional k or m, at least MIN_HEAP."""
    from gridtwin.vboard import heap_bytes

    if not re.fullmatch(r"\d+[kKmM]?", text.strip()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a heap size: a number of bytes with k or m, e.g. 128k"
        )
    if heap_bytes(text) < heap_bytes(MIN_HEAP):
        raise argparse.ArgumentTypeError(
            f"{text} is below the {MIN_HEAP} the firmware needs ({MIN_HEAP_NOTE}); "
            f"leave it out for the default {NODE_HEAP}"
        )
    return text.strip()


def certificate_problem(pki, node: str) -> str | None:
    """Why the broker will refuse this node's certificate (expired, revoked, another CA), or
    None."""
    try:
        rows = {r.identity: r for r in pki.list()}
        sentences = pki.warnings()
    except GridTwinError as exc:
        return str(exc)
    for who in (node, "ca"):
        row = rows.get(who)
        if row is not None and row.status in ("expired", "revoked", "foreign"):
            said = next((w for w in sentences if w.startswith(f"{who}:")), None)
            what = f"{node}'s certificate" if who == node else "the site CA"
            return said or (
                f"{what} is {row.status} ({row.not_after:%Y-%m-%d}): the broker will refuse it; "
                f"run `gridtwin pki rotate {node}`"
            )
    return None


def add_arguments(p):
    from gridtwin.cli import positive

    p.add_argument("node", help="node id from the site file")
    p.add_argument(
        "--broker",
        default=None,
        help="HOST:PORT of the broker (default: 127.0.0.1 and the site's port)",
    )
    p.add_argument(
        "--speed", type=positive(), default=1.0, help="the node's clock x real time (default 1)"
    )
    p.add_argument(
        "--heap",
        type=heap_size,
        default=None,
        help=f"the firmware's heap, at least {MIN_HEAP} (default {NODE_HEAP}: see "
        "gridtwin.vboard.NODE_HEAP)",
    )
    p.add_argument("--dir", default=None, help="the board's folder (default: <var>/vnodes/NODE)")


def run(args) -> int:
    from gridtwin import procs
    from gridtwin.fleet import VirtualNode
    from gridtwin.micropython import build_firmware
    from gridtwin.pki import PKI
    from gridtwin.site import load_site
    from gridtwin.vboard import hold_folder

    site = load_site(args.site)
    site.node(args.node)  # a clear error for an unknown node
    host, port = "127.0.0.1", site.broker.port
    if args.broker:
        host, _, p = args.broker.rpartition(":")
        if not host or not p.isdigit():
            raise UsageError(
                f"--broker {args.broker!r} is not HOST:PORT", hint="e.g. --broker 127.0.0.1:8883"
            )
        port = int(p)
    root = Path(site.var_dir / "vnodes" / args.node if args.dir is None else args.dir)
    # The folder is this process's before anything in it (or the PKI) is touched: a second vnode of
    # the node would share its flash and steal its MQTT session in a loop.
    hold_folder(root, args.node)
    pki = PKI.for_site(site)
    pki.ensure(site)
    problem = certificate_problem(pki, args.node)
    if problem:  # it will start, and the broker will refuse it: say so before the first failure
        print(f"gridtwin: warning: {problem}", file=sys.stderr)
    # one build per firmware content, shared by every vnode of the site and never rebuilt under a
    # running one (several started at once used to delete each other's: issue #19, item 10)
    fw = build_firmware(site.var_dir / "firmware-builds")
    node = VirtualNode(
        site,
        pki,
        args.node,
        root,
        broker=(host, port),
        firmware_dir=fw,
        speed=args.speed,
        **({"heap": args.heap} if args.heap else {}),
    )
    print(
        f"gridtwin: {args.node} on a virtual board in {root} (live values: {node.live_path}); "
        f"Ctrl-C stops it",
        file=sys.stderr,
    )
    noted = []

    def echo(line: str) -> None:
        stopping = node.board.stopped_at is not None  # our Ctrl-C was sent (VirtualBoard.stop)
        if stopping and line.endswith("KeyboardInterrupt"):
            line = line[
                : -len("KeyboardInterrupt")
            ]  # the REPL's answer to our own Ctrl-C, not news
            if not line:
                return
        if stopping and "heap is locked" in line:
            # Our own Ctrl-C can land inside a garbage collection: the unix port then leaves its
            # heap locked, and what the node does next fails with "heap is locked" (a CI run's
            # docs test printed it as a crash). An artifact of the stop, not news about the node.
            if not noted:
                noted.append(True)
                print(
                    "(the Ctrl-C landed inside a garbage collection; the board's last lines are "
                    f"in {root}/console.log)",
                    flush=True,
                )
            return
        if noted and line.startswith(("Traceback (most recent call last):", "  File ")):
            return  # (that unwinding's traceback)
        print(line, flush=True)

    node.board.on_line = echo
    # Ctrl-C, SIGTERM and SIGHUP stop the board; the closing line says so ("stopped virtual board
    # ...")
    with procs.stop_on_signals() as session:
        session.note = f"; its console: {root}/console.log"
        try:
            node.start()
            # until the board stops by itself, falls into safe mode, or Ctrl-C
            node.board.wait_for(r"SAFE MODE", timeout=threading.TIMEOUT_MAX / 2)
            why = "fell into safe mode"
        except TimeoutError:
            why = f"stopped by itself (status {node.board.exit_code})"
        except KeyboardInterrupt:
            why = None
        finally:
            node.stop()
    if why is None:
        return 0
    last = "\n".join(node.board.lines[-8:])
    if "MemoryError" in last:
        raise GridTwinError(
            f"{args.node} ran out of its {node.board.heap} heap and {why}",
            hint=f"give it more with --heap, e.g. --heap 128k ({MIN_HEAP_NOTE})",
        )
    raise GridTwinError(
        f"{args.node} {why}: {node.board.lines[-1] if node.board.lines else 'no output'}",
        hint=f"see {root}/console.log",
    )
