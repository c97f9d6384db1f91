"""`gridtwin flash`: put MicroPython on a board with esptool (image downloaded once, SHA-256
checked)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--board", default="esp32s3", help="board file name in boards/ (default esp32s3)"
    )
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0")
    parser.add_argument(
        "--image", help="image file or URL instead of the board file's (needs --sha256)"
    )
    parser.add_argument(
        "--sha256", help="expected SHA-256 of the image (overrides the board file's)"
    )
    parser.add_argument(
        "--baud", type=int, help="flashing baud rate (default: the board file's flash_baud)"
    )
    parser.add_argument(
        "--no-erase", action="store_true", help="write without erasing the whole flash first"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="fetch and verify the image, print the esptool commands",
    )


def run(args) -> int:
    from gridtwin import flash

    cmds = flash.flash(
        args.board,
        args.port,
        image=args.image,
        sha256=args.sha256,
        baud=args.baud,
        erase=not args.no_erase,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        for cmd in cmds:
            print(" ".join(cmd))
    else:
        print(f"MicroPython is on {args.port}; next: make deploy NODE=<id> PORT={args.port}")
    return 0
