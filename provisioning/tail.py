"""`cimedge tail`: new readings and events as the gateway commits them, read from its buffer.

Reads the buffer read-only and polls it for rows with ids above the last one shown, so it
never disturbs the daemon. Rows leave the buffer once their batch is acknowledged, usually
a second or two after they are committed; tail polls four times a second to see them first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from cimedge.provisioning import bufferdb
from cimedge.provisioning.clikit import Subparsers, UsageError, add_where, buffer_path, command

POLL_S = 0.25
CLOCK_POINT = "gateway.clock"  # the wall-clock watch's events (edge/wallclock.py)


def matcher(patterns: list[str], known: list[str] | None) -> Any:
    """A predicate on point names for --point (exact names or globs such as ps1.*)."""
    if known is not None:
        for p in patterns:
            if not fnmatch.filter([*known, CLOCK_POINT], p):
                raise UsageError("--point", f"no configured point matches {p!r} (points: "
                                            f"{', '.join(sorted(known)[:12])}"
                                            f"{', ...' if len(known) > 12 else ''})")
    if not patterns:
        return lambda name: True
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def line(row: dict[str, Any], units: dict[str, str]) -> str:
    if row["type"] == "event":
        value = "" if row["value"] is None else f"={row['value']:g}"
        return (f"{iso(row['ts'])}  EVENT {row['kind']:<6} {row['rule']:<16} "
                f"{row['point']}{value}  {row['msg']}")
    v = row["value"]
    text = "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v).lower() \
        if isinstance(v, bool) else str(v)
    unit = units.get(row["point"], "")
    q = "" if row["quality"] == "good" else f"  [{row['quality']}]"
    return f"{iso(row['ts'])}  {row['point']:<24} {text:>12} {unit}{q}".rstrip()


class Tail:
    """Follows one buffer file; reopens it when the daemon replaced it (moved aside)."""

    def __init__(self, db: Path, want: Any, n: int) -> None:
        self.db, self.want, self.n = db, want, n
        self.con: sqlite3.Connection | None = None
        self.after: tuple[int, int] | None = None

    def rows(self) -> list[dict[str, Any]]:
        if self.con is None:
            self.con = bufferdb.connect(self.db)
            if self.after is None:
                self.after = bufferdb.tail_start(self.con, self.n)
        assert self.after is not None
        try:
            readings = bufferdb.readings_after(self.con, self.after[0])
            events = bufferdb.events_after(self.con, self.after[1])
        except sqlite3.Error:
            self.con.close()
            self.con = None
            return []
        self.after = (readings[-1]["id"] if readings else self.after[0],
                      events[-1]["id"] if events else self.after[1])
        out = [{"type": "reading", **r} for r in readings] + \
              [{"type": "event", **e} for e in events]
        return sorted((r for r in out if self.want(r["point"])), key=lambda r: r["ts"])


def run(args: argparse.Namespace) -> int:
    db, site = buffer_path(args)
    units: dict[str, str] = dict(site.units) if site is not None else {}  # type: ignore[attr-defined]
    want = matcher(args.point, list(units) if site is not None else None)
    tail = Tail(db, want, args.lines)
    end = None if args.duration is None else time.monotonic() + args.duration
    try:
        while True:
            for row in tail.rows():
                sys.stdout.write((json.dumps(row) if args.json else line(row, units)) + "\n")
            sys.stdout.flush()
            if args.no_follow or (end is not None and time.monotonic() >= end):
                return 0
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `cimedge tail | head`
        sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - no flush error at exit
        return 0


def add_parsers(sub: Subparsers) -> None:
    p = command(sub, "tail", "show live readings and events from the gateway's buffer",
                "cimedge tail --point 'ps1.*' --point gateway.clock",
                description=__doc__.split("\n\n")[0].split(": ", 1)[1] + "\n\n"
                + __doc__.split("\n\n")[1])
    add_where(p)
    p.add_argument("--point", action="append", default=[], metavar="P",
                   help="only this point (a name or a glob like 'ps1.*'; repeatable)")
    p.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                   help="start with the last N readings and events (default 10)")
    p.add_argument("--no-follow", action="store_true", help="print what is there and stop")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop following after this long (default: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=run)
