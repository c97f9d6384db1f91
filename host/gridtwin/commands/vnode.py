"""`gridtwin vnode NODE`: one node of the site as a virtual node, in the foreground.

The real firmware (compiled, as deployed) runs under the MicroPython unix port with the fake-
hardware shim, joins the broker with the node's own certificate and samples the chips of its
sensors; their values come from a live JSON file (``--live``, written by the twin in the demo) or
stay at plausible constants. Its console is printed here; Ctrl-C stops it.
"""

from __future__ import annotations

import shutil
import sys

from gridtwin.errors import UsageError


def add_arguments(p):
    p.add_argument("node", help="node id from the site file")
    p.add_argument("--broker", default=None, help="HOST:PORT of the broker (default: 127.0.0.1 and the site's port)")
    p.add_argument("--speed", type=float, default=1.0, help="the node's clock x real time (default 1)")
    p.add_argument("--heap", default=None, help="the firmware's heap (default 128k: see gridtwin.vboard.NODE_HEAP)")
    p.add_argument("--dir", default=None, help="the board's folder (default: <var>/vnodes/NODE)")


def run(args) -> int:
    from gridtwin.fleet import VirtualNode
    from gridtwin.micropython import compile_firmware
    from gridtwin.pki import PKI
    from gridtwin.site import load_site

    site = load_site(args.site)
    site.node(args.node)  # a clear error for an unknown node
    host, port = "127.0.0.1", site.broker.port
    if args.broker:
        host, _, p = args.broker.rpartition(":")
        if not host or not p.isdigit():
            raise UsageError(f"--broker {args.broker!r} is not HOST:PORT", hint="e.g. --broker 127.0.0.1:8883")
        port = int(p)
    pki = PKI.for_site(site)
    pki.ensure(site)
    root = site.var_dir / "vnodes" / args.node if args.dir is None else args.dir
    fw = site.var_dir / "vnodes" / "firmware"
    shutil.rmtree(fw, ignore_errors=True)  # no module left over from an older firmware
    compile_firmware(fw)
    node = VirtualNode(site, pki, args.node, root, broker=(host, port), firmware_dir=fw,
                       speed=args.speed, **({"heap": args.heap} if args.heap else {}))
    print(f"gridtwin: {args.node} on a virtual board in {root} (live values: {node.live_path}); "
          f"Ctrl-C stops it", file=sys.stderr)
    node.board.on_line = lambda line: print(line, flush=True)
    node.start()
    try:
        node.board.wait_exit(timeout=None)  # until the board stops by itself, or Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0
