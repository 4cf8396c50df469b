"""Read-only queries on a gateway's SQLite buffer, safe while the daemon writes it.

The daemon's connection is the only one that writes or checkpoints the file (SQLite 3.40.1
has the WAL-reset bug), so every connection here is ``mode=ro``. Rows leave the buffer when
their batch is acknowledged: what these queries see is what has not been acknowledged yet.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from cimedge.edge.errors import StoreError
from cimedge.edge.model import Quality

RECENT = 200_000  # rows scanned back for a point's last value (readings has no point index)


def connect(db: Path) -> sqlite3.Connection:
    """A read-only connection; StoreError naming the file when it is missing or not a buffer."""
    if not db.exists():
        raise StoreError(f"no buffer at {db}: the gateway has not run here yet "
                         "(or --state-dir/--config points elsewhere)")
    uri = f"file:{urllib.parse.quote(str(db.absolute()))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=5.0)
        con.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise StoreError(f"cannot read the buffer {db}: {e}") from None
    return con


def meta(con: sqlite3.Connection) -> dict[str, int]:
    return {k: int(v) for k, v in con.execute("SELECT key, value FROM meta")}


def readings_after(con: sqlite3.Connection, after: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Readings with id > ``after``, oldest first."""
    rows = con.execute(
        "SELECT r.id, p.name, r.ts_ns, r.value, r.quality, p.vtype FROM readings r "
        "JOIN points p ON p.id = r.point_id WHERE r.id > ? ORDER BY r.id LIMIT ?",
        (after, limit)).fetchall()
    return [_reading(r) for r in rows]


def events_after(con: sqlite3.Connection, after: int, limit: int = 1000) -> list[dict[str, Any]]:
    rows = con.execute("SELECT id, ts_ns, point, kind, rule, value, msg FROM events "
                       "WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
    return [{"id": r[0], "ts": r[1] / 1e9, "point": r[2], "kind": r[3], "rule": r[4],
             "value": r[5], "msg": r[6]} for r in rows]


def last_ids(con: sqlite3.Connection) -> tuple[int, int]:
    """The newest reading and event ids (0 when empty)."""
    r = con.execute("SELECT max(id) FROM readings").fetchone()[0] or 0
    e = con.execute("SELECT max(id) FROM events").fetchone()[0] or 0
    return r, e


def tail_start(con: sqlite3.Connection, n: int) -> tuple[int, int]:
    """Ids to start after so that the last ``n`` readings and events are shown first."""
    r, e = last_ids(con)
    return max(0, r - n), max(0, e - n)


def last_values(con: sqlite3.Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each point's newest reading still in the buffer, looking back RECENT rows at most."""
    ids = dict(con.execute("SELECT name, id FROM points"))
    top = con.execute("SELECT max(id) FROM readings").fetchone()[0] or 0
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        pid = ids.get(name)
        if pid is None:
            continue
        row = con.execute(
            "SELECT r.id, p.name, r.ts_ns, r.value, r.quality, p.vtype FROM readings r "
            "JOIN points p ON p.id = r.point_id WHERE r.point_id = ? AND r.id > ? "
            "ORDER BY r.id DESC LIMIT 1", (pid, top - RECENT)).fetchone()
        if row:
            out[name] = _reading(row)
    return out


def _reading(row: tuple[Any, ...]) -> dict[str, Any]:
    """(id, name, ts_ns, value, quality, vtype) as tail and points show it."""
    rid, name, ts_ns, value, quality, vtype = row
    if vtype == "b" and value is not None:
        value = bool(value)
    try:
        q = Quality(quality).name.lower()
    except ValueError:
        q = str(quality)
    return {"id": rid, "point": name, "ts": ts_ns / 1e9, "value": value, "quality": q}
