"""Buffer quota: how much the database uses, which oldest unsent rows to drop, and the gap events.

Acknowledged rows are deleted at ack time, so "evict acknowledged data first" costs
nothing here: everything the quota counts is unacknowledged. What goes first is the oldest
readings not yet in a batch (a recorded batch is already on its way and stays). Eviction
brings the buffer down to 90% of the quota, so it runs in chunks, not on every tick.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from cimedge.edge.model import Event

LOW_WATER = 0.9
MIN_CHUNK = 100


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the database in use: its pages less the free ones (the file keeps its size)."""
    page = db.execute("PRAGMA page_size").fetchone()[0]
    count = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return int(page * (count - free))


def plan_eviction(db: sqlite3.Connection, used: int, quota: int,
                  ranges: list[tuple[int, int | None]], *,
                  disk_full: bool = False) -> tuple[int, int] | None:
    """The id range (first, last) of the oldest unsent readings to drop, or None.

    ``ranges`` are the unbatched id ranges (after, up_to) in the order they may be evicted.
    """
    lo_id, hi_id = db.execute("SELECT min(id), max(id) FROM readings").fetchone()
    if lo_id is None:
        return None
    per_row = max(1.0, used / (hi_id - lo_id + 1))
    # A full disk before the quota: free a quarter, as pages the database reuses.
    excess = used * 0.25 if disk_full else used - LOW_WATER * quota
    want = max(MIN_CHUNK, int(excess / per_row) + 1)
    for after, up_to in ranges:
        top = up_to if up_to is not None else 2**62
        first = db.execute("SELECT min(id) FROM readings WHERE id > ? AND id <= ?",
                           (after, top)).fetchone()[0]
        if first is None:
            continue
        row = db.execute("SELECT id FROM readings WHERE id >= ? AND id <= ? ORDER BY id "
                         "LIMIT 1 OFFSET ?", (first, top, want - 1)).fetchone()
        last = row[0] if row else db.execute(
            "SELECT max(id) FROM readings WHERE id >= ? AND id <= ?", (first, top)).fetchone()[0]
        return first, last
    return None


OPEN_GAPS = """
CREATE TABLE IF NOT EXISTS open_gaps(point TEXT PRIMARY KEY, event_id INTEGER NOT NULL,
                                     n INTEGER NOT NULL, t0 INTEGER NOT NULL,
                                     seq_mark INTEGER NOT NULL);
"""


def record_gaps(db: sqlite3.Connection, first: int, last: int, now_ns: int, event_mark: int,
                seq_mark: int) -> list[Event]:
    """Write one ``gap`` event per point for readings ``first..last`` (about to be deleted).

    While a point's last gap event is still unsent and no batch was made since (the
    dropped span is then contiguous), it is widened instead of adding another, so a week
    of eviction costs one event per point, not one per eviction. Returns what was written.
    """
    db.execute(OPEN_GAPS)
    rows = db.execute(
        "SELECT p.name, count(*), min(r.ts_ns), max(r.ts_ns) FROM readings r "
        "JOIN points p ON p.id = r.point_id WHERE r.id BETWEEN ? AND ? "
        "GROUP BY p.name ORDER BY p.name", (first, last)).fetchall()
    out = []
    for name, n, t0, t1 in rows:
        prev = db.execute("SELECT event_id, n, t0, seq_mark FROM open_gaps WHERE point=?",
                          (name,)).fetchone()
        if prev and prev[0] > event_mark and prev[3] == seq_mark:
            event_id, n, t0 = prev[0], n + prev[1], prev[2]
            e = _gap(now_ns, name, n, t0, t1)
            db.execute("UPDATE events SET value=?, msg=? WHERE id=?", (e.value, e.msg, event_id))
        else:
            e = _gap(now_ns, name, n, t0, t1)
            event_id = db.execute(
                "INSERT INTO events(ts_ns, point, kind, rule, value, msg) VALUES (?,?,?,?,?,?)",
                (e.ts_ns, e.point, e.kind, e.rule, e.value, e.msg)).lastrowid
        db.execute("INSERT OR REPLACE INTO open_gaps VALUES (?, ?, ?, ?, ?)",
                   (name, event_id, n, t0, seq_mark))
        out.append(e)
    return out


def _gap(now_ns: int, point: str, n: int, t0: int, t1: int) -> Event:
    return Event(now_ns, point, "gap", "quota",
                 f"buffer quota reached: dropped {n} readings from {_iso(t0)} to {_iso(t1)}",
                 float(n))


def _iso(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")
