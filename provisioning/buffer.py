"""`cimedge buffer inspect`: what waits in a gateway's buffer, read-only, daemon running or not."""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from cimedge.edge import quota
from cimedge.edge.errors import StoreError
from cimedge.provisioning import bufferdb
from cimedge.provisioning.clikit import Subparsers, add_where, buffer_path, command
from cimedge.provisioning.tail import iso


def inspect(db: Path, quota_bytes: int | None, max_batches: int = 20) -> dict[str, Any]:
    con = bufferdb.connect(db)
    try:
        return _inspect(con, db, quota_bytes, max_batches)
    except sqlite3.Error as e:
        raise StoreError(f"cannot read the buffer {db}: {e}") from None
    finally:
        con.close()


def _inspect(con: sqlite3.Connection, db: Path, quota_bytes: int | None,
             max_batches: int) -> dict[str, Any]:
    m = bufferdb.meta(con)
    now = time.time()
    lo, hi = con.execute("SELECT min(id), max(id) FROM readings").fetchone()
    oldest = _ts(con, lo)
    newest = _ts(con, hi)
    batches = con.execute("SELECT seq, topic, n, length(payload), created_ns, first_id, last_id "
                          "FROM batches ORDER BY seq").fetchall()
    in_batches = sum(b[2] for b in batches if b[1] == "batch")
    gaps = con.execute("SELECT ts_ns, point, value, msg FROM events WHERE kind = 'gap' "
                       "ORDER BY id").fetchall()
    used = quota.used_bytes(con)
    return {
        "path": str(db), "sqlite_version": sqlite3.sqlite_version,
        "bytes_on_disk": sum(p.stat().st_size for p in db.parent.glob(db.name + "*")
                             if p.is_file() and "corrupt" not in p.name),
        "used_bytes": used, "quota_bytes": quota_bytes,
        "quota_used": round(used / quota_bytes, 3) if quota_bytes else None,
        "readings": m.get("readings", 0), "readings_unbatched": max(
            0, m.get("readings", 0) - in_batches),
        "events": con.execute("SELECT count(*) FROM events").fetchone()[0],
        "oldest": iso(oldest) if oldest else None,
        "oldest_age_s": round(now - oldest, 1) if oldest else None,
        "newest": iso(newest) if newest else None,
        "batches_unacked": len(batches),
        "batches_unacked_bytes": sum(b[3] for b in batches),
        "batches": [{"seq": s, "topic": t, "records": n, "bytes": size,
                     "age_s": round(now - c / 1e9, 1)} for s, t, n, size, c, _, _ in
                    batches[:max_batches]],
        "next_seq": m.get("next_seq"), "acked_batches": m.get("acked", 0),
        "evicted_readings": m.get("evicted", 0), "live_lane": bool(m.get("live_start")),
        "gap_events": [{"time": iso(t / 1e9), "point": p, "dropped": int(v or 0), "msg": msg}
                       for t, p, v, msg in gaps],
        "moved_aside": sorted(str(p) for p in db.parent.glob(db.name + ".corrupt-*")
                              if not p.name.endswith(("-wal", "-shm"))),
    }


def _ts(con: sqlite3.Connection, rid: int | None) -> float | None:
    if rid is None:
        return None
    row = con.execute("SELECT ts_ns FROM readings WHERE id = ?", (rid,)).fetchone()
    return row[0] / 1e9 if row else None


def render(r: dict[str, Any]) -> str:
    q = r["quota_bytes"]
    quota_line = (f"{r['used_bytes']} of {q} bytes ({100 * r['quota_used']:.0f}%)" if q else
                  f"{r['used_bytes']} bytes in use, no quota" if q == 0 else
                  f"{r['used_bytes']} bytes in use (quota unknown: no site config)")
    age = "-" if r["oldest_age_s"] is None else f"{r['oldest']} ({r['oldest_age_s']:.0f} s ago)"
    lines = [f"buffer      {r['path']}  (SQLite {r['sqlite_version']}, "
             f"{r['bytes_on_disk']} bytes on disk)",
             f"quota       {quota_line}",
             f"depth       {r['readings']} readings ({r['readings_unbatched']} not yet in a "
             f"batch), {r['events']} events; oldest {age}",
             f"batches     {r['batches_unacked']} unacked, {r['batches_unacked_bytes']} bytes; "
             f"next seq {r['next_seq']}, {r['acked_batches']} acked so far"
             + ("; newest data has its own lane (draining a backlog)" if r["live_lane"] else ""),
             f"evictions   {r['evicted_readings']} readings dropped at the quota, "
             f"{len(r['gap_events'])} gap events unsent"]
    for b in r["batches"]:
        lines.append(f"  seq {b['seq']:<8} {b['topic']:<6} {b['records']:>6} records "
                     f"{b['bytes']:>8} bytes  {b['age_s']:.0f} s old")
    if r["batches_unacked"] > len(r["batches"]):
        lines.append(f"  ... and {r['batches_unacked'] - len(r['batches'])} more")
    for g in r["gap_events"]:
        lines.append(f"  gap {g['point']}: {g['msg']}")
    for p in r["moved_aside"]:
        lines.append(f"CORRUPT     a damaged buffer was moved aside to {p}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    db, site = buffer_path(args)
    q = site.store.quota_bytes if site is not None else None  # type: ignore[attr-defined]
    report = inspect(db, q, args.batches)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def add_parsers(sub: Subparsers) -> None:
    b = sub.add_parser("buffer", help="look into a gateway's SQLite buffer",
                       description="Look into a gateway's SQLite buffer (read-only).",
                       epilog="example: cimedge buffer inspect --state-dir /var/lib/cimedge",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = b.add_subparsers(dest="buffer_command", required=True, metavar="COMMAND")
    p = command(bsub, "inspect", "depth, unacked batches (seq, size), oldest reading, quota, "
                "evictions and gap events", "cimedge buffer inspect --state-dir "
                "/var/lib/cimedge --json", description=__doc__.split(": ", 1)[1])
    add_where(p)
    p.add_argument("--batches", type=int, default=20, metavar="N",
                   help="list at most N unacked batches (default 20)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=run)
