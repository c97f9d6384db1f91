"""`gridtwin query NODE METRIC [--since 1h] [--until T] [--every 1m] [--csv | --json]`: stored
readings of one metric, raw or as mean/min/max per time bucket.

Old readings live only as 1-minute rollups (the daemon's retention folds them), so a bucket is made
from the rollups and the raw readings it covers; the rollups give its minimum and maximum exactly
and minute resolution only. A metric the node does not have is an error that lists the ones it has.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter

from gridtwin.errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_HINT = "use a number and s/m/h/d/w, e.g. 90s, 15m, 1h, 7d"


def parse_duration(text: str, flag: str = "--since") -> float:
    """'15m' -> 900.0 s. A leading '-' is allowed and means the same ('-5m': five minutes ago, as
    InfluxDB and Grafana write it)."""
    m = re.fullmatch(r"-?(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not m:
        raise UsageError(f"{flag} {text!r} is not a duration", hint=DURATION_HINT)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_time(text: str, flag: str, now_s: float) -> int:
    """A point in time in Unix ms: a duration back from now ('15m', '-15m'), 'now', or an ISO-8601
    time (UTC when it has no offset, as `query` prints them)."""
    t = text.strip()
    if t == "now":
        return int(now_s * 1000)
    if re.fullmatch(r"-?\d+(?:\.\d+)?[smhdw]", t):
        return int((now_s - parse_duration(t, flag)) * 1000)
    import datetime as dt  # here, not at the top: a query by duration never needs it

    try:
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag} {text!r} is neither a duration nor a time",
            hint=f"{DURATION_HINT}, or a time like 2026-03-01T12:00 (UTC)",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node")
    parser.add_argument("metric")
    parser.add_argument(
        "--since",
        default="1h",
        help="from when: a duration back (default 1h; e.g. 15m, 7d) or an ISO time (UTC)",
    )
    parser.add_argument(
        "--until", default=None, help="to when, the same forms or 'now' (default: no end)"
    )
    parser.add_argument(
        "--every",
        default=None,
        metavar="DURATION",
        help="mean, min, max and count per bucket of this length (e.g. 1m, 15m, 1h)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV with ISO-8601 UTC time")
    out.add_argument("--json", action="store_true", help="one JSON object per line (ts in Unix ms)")


def _iso(ms: int, _cache={}) -> str:  # noqa: B006 (a per-process cache of the minute's text)
    """ISO-8601 UTC with milliseconds. The minute's text is cached and the seconds appended: rows
    come a second apart or closer, so a cache by second formatted every row anew (strftime per row
    was a fifth of a query's time). Unix time has no leap seconds: a minute is 60 of them. The
    seconds are one float format (ms / 1000 to 3 places is exact for every ms of a minute)."""
    minute = ms // 60_000
    head = _cache.get(minute)
    if head is None:
        if len(_cache) > 4096:
            _cache.clear()
        head = _cache[minute] = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
    return f"{head}{ms % 60_000 / 1000:06.3f}+00:00"


def buckets(
    store, node: str, metric: str, since_ms: int, until_ms: int, every_ms: int
) -> list[dict]:
    """[{ts, mean, min, max, n}] per bucket of every_ms (aligned to the Unix epoch), oldest
    first."""
    rolled = store.rollups(node, metric, since_ms, until_ms)
    # `query` gives the raw readings and one (bucket, mean) per rollup: take those out again (a
    # multiset, so a raw reading equal to a rollup's mean is still counted once)
    raw = Counter(store.query(node, metric, since_ms, until_ms))
    raw.subtract(Counter((b, vsum / n) for b, n, _lo, _hi, vsum in rolled))
    acc: dict[int, list] = {}

    def add(ts, n, lo, hi, total):
        a = acc.setdefault(ts - ts % every_ms, [0, lo, hi, 0.0])
        a[0] += n
        a[1], a[2] = min(a[1], lo), max(a[2], hi)
        a[3] += total

    for b, n, lo, hi, vsum in rolled:
        add(b, n, lo, hi, vsum)
    for (ts, v), times in raw.items():
        for _ in range(times):
            add(ts, 1, v, v, v)
    return [
        {"ts": b, "mean": a[3] / a[0], "min": a[1], "max": a[2], "n": a[0]}
        for b, a in sorted(acc.items())
    ]


def unknown_metric(store, node: str, metric: str, also=()) -> UsageError | None:
    """The error for a metric the node does not have (from what the store holds for it and what it
    said it publishes in its birth, and `also`: an OPC UA machine's tags), or None when it has it or
    nothing is known about the node."""
    known = set(store.metric_names(node)) | set(also)
    row = next((r for r in store.nodes() if r["id"] == node), {})
    try:
        known |= set(json.loads(row.get("sensors") or "{}"))  # the birth's {metric: unit}
    except (TypeError, ValueError):
        pass
    if not known or metric in known:
        return None
    import difflib  # only on this error path

    near = difflib.get_close_matches(metric, sorted(known), n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    return UsageError(
        f"{node} has no metric '{metric}'; it has: {', '.join(sorted(known))}",
        hint=f"{hint}see `gridtwin nodes {node}`",
    )


def run(args) -> int:
    from gridtwin.daemon.store_sqlite import SqliteStore
    from gridtwin.errors import GridTwinError
    from gridtwin.sitequick import db_and_nodes

    # fast path: the database path and node ids straight from the TOML (validating the whole site
    # cost most of a query); anything unusual, an unknown node included, goes through load_site,
    # which says precisely what is wrong
    quick = db_and_nodes(args.site)
    if quick is not None and args.node in quick[1]:
        path = quick[0]
    else:
        from gridtwin.daemon.config import db_path
        from gridtwin.site import load_site

        from gridtwin.opcua.points import is_machine

        site = load_site(args.site)
        path = db_path(site)
        if not is_machine(site, args.node, path):  # an OPC UA machine is named as a node
            site.node(args.node)  # unknown node: a ConfigError naming the site file and a near id
    now = time.time()
    since_ms = parse_time(args.since, "--since", now)
    # no --until: no end, as the store's own default (a node whose clock runs ahead is still shown)
    until_ms = (
        parse_time(args.until, "--until", now) if args.until else int(now * 1000) + 86_400_000
    )
    if since_ms >= until_ms:
        raise UsageError(
            f"--since {args.since} is not before --until {args.until}",
            hint="--since is the start of the window, e.g. --since 2h --until 1h",
        )
    every_ms = None
    if args.every is not None:
        every_ms = int(parse_duration(args.every, "--every") * 1000)
        if every_ms < 1000:
            raise UsageError(
                f"--every {args.every!r} is shorter than a second", hint="e.g. --every 1m"
            )
    if not path.exists():
        raise GridTwinError(
            f"no data yet: {path} does not exist",
            hint="start the daemon (`gridtwin daemon`) so it can store what the nodes send",
        )
    store = SqliteStore(path)
    try:
        if sys.stderr.isatty():
            from rich.console import Console

            with Console(stderr=True).status(
                f"reading {args.node}.{args.metric} since {args.since} ..."
            ):
                rows = _rows(store, args, since_ms, until_ms, every_ms)
        else:
            rows = _rows(store, args, since_ms, until_ms, every_ms)
        # a metric the node does not have is an error; asked only when nothing came back (the
        # names come from the node's rollups and latest reading: not worth reading for every query)
        problem = None
        if not rows:  # an OPC UA point: machine as node, tag as metric (gridtwin/opcua/points.py)
            tags = store.opcua_tags(args.node)
            if args.metric in tags:
                from gridtwin.opcua.points import PointView

                rows = _rows(PointView(store), args, since_ms, until_ms, every_ms)
            else:
                problem = unknown_metric(store, args.node, args.metric, also=tags)
        if problem:
            raise problem
    finally:
        store.close()
    _print(args, rows, every_ms)
    if not rows:
        window = f"since {args.since}" + (f" until {args.until}" if args.until else "")
        print(f"no readings of {args.metric!r} from {args.node} {window}", file=sys.stderr)
    return 0


def _rows(store, args, since_ms, until_ms, every_ms) -> list:
    """Buckets as dicts with --every, else the (ts, value) pairs as the store returns them."""
    if every_ms:
        return buckets(store, args.node, args.metric, since_ms, until_ms, every_ms)
    return store.query(args.node, args.metric, since_ms, until_ms)


def _print(args, rows: list, every_ms: int | None) -> None:
    if not every_ms:
        _print_raw(args, rows)
        return
    cols = ("mean", "min", "max", "n")
    if args.json:
        for r in rows:
            print(json.dumps({"ts": r["ts"], "time": _iso(r["ts"]), **{c: r[c] for c in cols}}))
    elif args.csv:
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["time", *cols])
        w.writerows([_iso(r["ts"]), *(r[c] for c in cols)] for r in rows)
    else:
        if rows:
            print(f"{'time (UTC)':<29}  {'  '.join(c.rjust(10) for c in cols)}")
        for r in rows:
            print(f"{_iso(r['ts'])}  {'  '.join(f'{r[c]:>10g}' for c in cols)}")


def _print_raw(args, rows: list) -> None:
    """(ts, value) rows, written at once: a print or a csv row per reading was most of the time a
    query of an hour at 1 Hz spent after its imports."""
    out = sys.stdout
    if args.json:
        out.write(
            "".join(json.dumps({"ts": ts, "time": _iso(ts), "value": v}) + "\n" for ts, v in rows)
        )
    elif args.csv:
        # numbers as the csv module writes them (str), and a metric name it would not quote, are
        # written here; anything else goes through it for quoting (importing it cost 0.6 ms)
        plain_name = args.metric and not any(c in args.metric for c in ',"\r\n')
        if plain_name and all(type(v) is float or type(v) is int for _ts, v in rows):
            out.write(f"time,{args.metric}\n")
            out.write("".join(f"{_iso(ts)},{v}\n" for ts, v in rows))
        else:
            import csv

            w = csv.writer(out, lineterminator="\n")
            w.writerow(["time", args.metric])
            w.writerows([_iso(ts), v] for ts, v in rows)
    else:
        out.write("".join(f"{_iso(ts)}  {v:g}\n" for ts, v in rows))
