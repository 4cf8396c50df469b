"""The SQLite buffer: the only hand-off between polling and sync, written by one thread.

Durability: WAL with ``synchronous=FULL``, so every commit has reached the disk before the
caller goes on. A power cut can lose only a tick whose commit had not returned; those
readings were never committed and nothing (rules aside) had acted on them. With
``synchronous=NORMAL`` a power cut could also roll back the last commits that *had*
returned, and a reading the poller counted as committed could vanish, so FULL it is; the
cost is measured in bench/store_bench.py and is far above any site's rate.

Each poll tick commits whole, in one transaction, before append() returns. Ticks that
arrive while the writer is busy (ten devices polled on the same beat) share one
transaction and so one fsync: group commit, as databases do; a tick that cannot be written
(a value SQLite cannot bind) makes the group retry tick by tick, so it fails alone.

A batch row (seq, row range and the exact signed bytes) is committed before its first
publish, so a resend after any crash is byte-identical, and ``next_seq`` moves in the same
transaction. Seqs are also reserved in blocks in a side file (``seq.reserve``), so that
even a buffer that had to be moved aside as corrupt never makes a seq repeat.

Only one connection ever writes or checkpoints this file (Python 3.11's SQLite 3.40.1
has the WAL-reset bug); it lives in a single worker thread. A commit handed to that
thread completes even if the awaiting task is cancelled: the store decides what is
committed, not the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from cimedge.edge import quota
from cimedge.edge.errors import StoreError
from cimedge.edge.model import Event, Quality, Reading

log = logging.getLogger(__name__)
T = TypeVar("T")

# AUTOINCREMENT: row ids must never be reused after acked rows are deleted, because the
# batching cursors in meta are row ids.
SCHEMA = """
CREATE TABLE IF NOT EXISTS points(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
                                  vtype TEXT NOT NULL DEFAULT 'n');
CREATE TABLE IF NOT EXISTS readings(id INTEGER PRIMARY KEY AUTOINCREMENT,
                                    point_id INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
                                    value, quality INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ns INTEGER NOT NULL,
                                  point TEXT NOT NULL, kind TEXT NOT NULL, rule TEXT NOT NULL,
                                  value REAL, msg TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,
                                   first_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
                                   n INTEGER NOT NULL, payload BLOB NOT NULL,
                                   created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alarms(rule TEXT PRIMARY KEY, active INTEGER NOT NULL,
                                  since_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS control(key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, point TEXT NOT NULL,
                                 ts_ns INTEGER NOT NULL, value);
"""

# meta keys. "batched_reading" is the backlog cursor: readings up to it are in a batch.
# While the newest data has a lane of its own (after an outage), "live_start" is the
# first row id of that lane (0 when there is none) and "live_mark" its cursor.
_NEXT_SEQ, _READ_MARK, _EVENT_MARK = "next_seq", "batched_reading", "batched_event"
_LIVE_START, _LIVE_MARK, _ACKED, _EVICTED = "live_start", "live_mark", "acked", "evicted"
_ROWS = "readings"  # how many readings the table holds, kept exact in every transaction
_META_DEFAULTS = {_NEXT_SEQ: 1, _READ_MARK: 0, _EVENT_MARK: 0, _LIVE_START: 0, _LIVE_MARK: 0,
                  _ACKED: 0, _EVICTED: 0, _ROWS: 0}
SEQ_BLOCK = 10_000
# With a quota, the WAL is checkpointed every WAL_PAGES pages and cut back to that size,
# and eviction starts when the file system has less than DISK_MARGIN free, whatever the
# quota says: the database must never be the one to fill the disk.
WAL_PAGES = 256
DISK_MARGIN = 3 * WAL_PAGES * 4096


class Batch(msgspec.Struct, frozen=True):
    """One signed message as recorded before its first publish."""

    seq: int
    topic: str  # "batch" | "event"
    payload: bytes
    n: int


class Depth(msgspec.Struct, frozen=True):
    """What waits in the buffer, for status and the demo view."""

    readings: int
    events: int
    batches: int
    oldest_ts_ns: int | None
    next_seq: int
    acked: int
    evicted: int
    used_bytes: int
    quota_bytes: int
    live_lane: bool
    error: str


class _Tick(msgspec.Struct):
    """One append(): a poll tick's readings, events, alarm and control state."""

    readings: Sequence[Reading]
    events: Sequence[Event]
    alarms: dict[str, tuple[bool, int]]
    now_ns: int
    state: Mapping[str, bytes | None] | None


class _Group(msgspec.Struct):
    """Ticks committed in one transaction; ``done`` resolves when it has committed."""

    ticks: list[_Tick]
    done: asyncio.Future[list[Exception | None]] | None = None


class Store:
    """The gateway buffer; open with ``async with Store(path) as store``.

    ``quota_bytes`` (0 = none) bounds the database: past it the oldest unsent readings are
    evicted and a ``gap`` event per point says exactly what went. An unusable file system
    (full, read-only) never raises out of open(): ``error`` says why, append() raises
    StoreError, and the next append() tries again.
    """

    def __init__(self, path: str | Path, quota_bytes: int = 0, *, audit: bool = False) -> None:
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.audit = audit or os.environ.get("CIMEDGE_STORE_AUDIT") == "1"
        self.error = ""
        self.moved_aside: Path | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        self._point_ids: dict[str, int] = {}
        self._vtypes: dict[str, str] = {}
        self._seq_reserved = 0
        self._ticks_since_reserve = 0
        self._txn_points: list[str] = []  # points whose cache rows this transaction wrote
        # Group commit: appends that arrive while one is waiting for the worker join it, so
        # one transaction (and one fsync) commits them all; each tick stays whole.
        self._group_lock = threading.Lock()
        self._open_group: _Group | None = None

    async def __aenter__(self) -> Store:
        await self._call(self._open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._call(self._close)
        self._pool.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # shield: the worker finishes a started commit even when the awaiting task is cancelled
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        return await asyncio.shield(fut)

    # -- worker-thread side: opening ----------------------------------------------------
    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_corruption(e):
                self.error = f"cannot open the buffer {self.path}: {e}"
                log.error("%s", self.error)
                return
            self.moved_aside = _move_aside(self.path)
            self.error = f"buffer was corrupt ({e}); moved to {self.moved_aside}"
            log.error("%s", self.error)
            db = self._connect()
        except OSError as e:
            self.error = f"cannot open the buffer {self.path}: {e.strerror or e}"
            log.error("%s", self.error)
            return
        self._db = db
        self._hold_reserve()
        for pid, name, vtype in db.execute("SELECT id, name, vtype FROM points"):
            self._point_ids[name], self._vtypes[name] = pid, vtype
        self._reserve_seqs(db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # keep the WAL from growing for good; with a quota, keep it small
            pages = WAL_PAGES if self.quota_bytes else 1000
            db.execute(f"PRAGMA wal_autocheckpoint={pages}")
            db.execute(f"PRAGMA journal_size_limit={pages * 4096}")
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
            db.executescript(SCHEMA + (AUDIT_SCHEMA if self.audit else ""))
            db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", _META_DEFAULTS.items())
        except BaseException:
            db.close()
            raise
        return db

    def _reserve_seqs(self, db: sqlite3.Connection) -> None:
        """Never hand out a seq below the side file's reservation (a fresh or moved-aside db)."""
        side = self.path.with_name("seq.reserve")
        try:
            reserved = int(side.read_text().strip() or 0)
        except (OSError, ValueError):
            reserved = 0
        next_seq = self._meta(_NEXT_SEQ)
        # A buffer that never built a batch, while the side file says seqs were handed out,
        # is not the one that handed them out: it was new or moved aside.
        if next_seq < reserved and (next_seq == 1 or self.moved_aside is not None):
            log.warning("seq continues at %d from %s (the buffer was new or moved aside)",
                        reserved, side)
            self._set_meta(_NEXT_SEQ, reserved)
        self._seq_reserved = max(reserved, next_seq)

    def _bump_reservation(self, seq: int) -> None:
        if seq < self._seq_reserved:
            return
        side = self.path.with_name("seq.reserve")
        new = seq + SEQ_BLOCK
        tmp = side.with_name("seq.reserve.new")
        with open(tmp, "w") as f:
            f.write(f"{new}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, side)
        self._seq_reserved = new

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._open()
            if self._db is None:
                raise StoreError(self.error)
            self.error = ""
        return self._db

    def _meta(self, key: str) -> int:
        return int(self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._conn().execute("UPDATE meta SET value=? WHERE key=?", (value, key))

    def _txn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn in one IMMEDIATE transaction; a full or read-only disk becomes StoreError."""
        db = self._conn()
        self._txn_points.clear()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._forget_points(db)  # the rows the cache points at were rolled back
                raise
        except sqlite3.OperationalError as e:
            self.error = f"buffer write failed: {e}"
            raise StoreError(f"{self.error} ({self.path})") from None
        self.error = ""
        return out

    def _forget_points(self, db: sqlite3.Connection) -> None:
        for name in self._txn_points:
            self._point_ids.pop(name, None)
            self._vtypes.pop(name, None)
            with contextlib.suppress(sqlite3.Error):
                for pid, vtype in db.execute("SELECT id, vtype FROM points WHERE name=?",
                                             (name,)):
                    self._point_ids[name], self._vtypes[name] = pid, vtype
        self._txn_points.clear()

    # -- worker-thread side: the data path ----------------------------------------------
    def _point_id(self, db: sqlite3.Connection, name: str, value: object) -> int:
        pid = self._point_ids.get(name)
        vtype = "b" if isinstance(value, bool) else "s" if isinstance(value, str) else "n"
        if pid is None:
            pid = db.execute("INSERT INTO points(name, vtype) VALUES (?, ?)",
                             (name, vtype)).lastrowid
            assert pid is not None
            self._point_ids[name], self._vtypes[name] = pid, vtype
            self._txn_points.append(name)
        elif value is not None and self._vtypes[name] != vtype:
            db.execute("UPDATE points SET vtype=? WHERE id=?", (vtype, pid))
            self._vtypes[name] = vtype
            self._txn_points.append(name)
        return pid

    def _append_group(self, group: _Group) -> list[Exception | None]:
        """Commit the group's ticks in one transaction; per tick, None or why it failed."""
        with self._group_lock:  # from here on, new appends open the next group
            if self._open_group is group:
                self._open_group = None
            ticks = list(group.ticks)
        try:
            self._append(ticks)
            return [None] * len(ticks)
        except StoreError as e:
            return [e] * len(ticks)  # the disk: every tick would fail alike
        except Exception as e:  # noqa: BLE001  # a bad tick must not take the others down
            if len(ticks) == 1:
                return [e]
            log.warning("a group of %d ticks failed to commit (%s); committing one by one",
                        len(ticks), e)
            return [self._append_alone(t) for t in ticks]

    def _append_alone(self, tick: _Tick) -> Exception | None:
        try:
            self._append([tick])
        except Exception as e:  # noqa: BLE001
            return e
        return None

    def _append(self, ticks: Sequence[_Tick]) -> None:
        def write(db: sqlite3.Connection) -> None:
            for t in ticks:
                rows = [(self._point_id(db, r.point, r.value), r.ts_ns, r.value,
                         int(r.quality)) for r in t.readings]
                db.executemany("INSERT INTO readings(point_id, ts_ns, value, quality) "
                               "VALUES (?, ?, ?, ?)", rows)
                db.execute("UPDATE meta SET value = value + ? WHERE key=?", (len(rows), _ROWS))
                _insert_events(db, t.events)
                db.executemany("INSERT OR REPLACE INTO alarms VALUES (?, ?, ?)",
                               [(k, int(a), ts) for k, (a, ts) in t.alarms.items()])
                if t.state:  # edge/control.py's rule, action and nonce state (None deletes)
                    db.executemany("INSERT OR REPLACE INTO control VALUES (?, ?)",
                                   [(k, v) for k, v in t.state.items() if v is not None])
                    db.executemany("DELETE FROM control WHERE key=?",
                                   [(k,) for k, v in t.state.items() if v is None])
                if self.audit:
                    db.executemany("INSERT INTO audit(point, ts_ns, value) VALUES (?, ?, ?)",
                                   [(r.point, r.ts_ns, r.value) for r in t.readings])
        now_ns = ticks[-1].now_ns
        try:
            self._txn(write)
        except StoreError:
            if not self.quota_bytes or not self._evict(now_ns, disk_full=True):
                raise
            self._txn(write)  # room was made: one more try
        if self.quota_bytes:
            self._evict(now_ns, disk_full=self._disk_low())
            self._ticks_since_reserve = (self._ticks_since_reserve + 1) % 1000
            if self._ticks_since_reserve == 0:
                self._hold_reserve()

    def _evict(self, now_ns: int, *, disk_full: bool = False) -> bool:
        """Bring the buffer under its quota by dropping the oldest unsent readings."""
        db = self._conn()
        used = quota.used_bytes(db)
        if used <= self.quota_bytes and not disk_full:
            return False
        log.warning("evicting: %d bytes used of a %d byte quota%s", used, self.quota_bytes,
                    ", and the disk is nearly full" if disk_full else "")
        if disk_full:
            # Deleting needs room too (WAL pages): give back the space held in reserve and
            # fold the WAL into the database before trying.
            self._reserve_path.unlink(missing_ok=True)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass
        live_start = self._meta(_LIVE_START)
        ranges = [(self._meta(_READ_MARK), live_start - 1 if live_start else None)]
        if live_start:  # a second outage can fill the newest lane too
            ranges.append((max(self._meta(_LIVE_MARK), live_start - 1), None))
        plan = quota.plan_eviction(db, used, self.quota_bytes, ranges, disk_full=disk_full)
        if plan is None:
            return False
        first, last = plan
        gaps: list[Event] = []

        def drop(db: sqlite3.Connection) -> None:
            gaps[:] = quota.record_gaps(db, first, last, now_ns, self._meta(_EVENT_MARK),
                                        self._meta(_NEXT_SEQ))
            n = db.execute("DELETE FROM readings WHERE id BETWEEN ? AND ?", (first, last)).rowcount
            db.execute("UPDATE meta SET value = value + ? WHERE key=?", (n, _EVICTED))
            db.execute("UPDATE meta SET value = value - ? WHERE key=?", (n, _ROWS))
        self._txn(drop)
        log.error("buffer quota: %s", "; ".join(e.msg for e in gaps))
        return True

    def _disk_low(self) -> bool:
        """Whether the file system is about to fill before the quota does (quota set too big)."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < DISK_MARGIN

    @property
    def _reserve_path(self) -> Path:
        return self.path.with_name(self.path.name + ".reserve")

    def _hold_reserve(self) -> None:
        """Keep some disk space in a file, so that a full disk still leaves room to evict."""
        size = min(256 << 10, self.quota_bytes // 50)
        if not self.quota_bytes or self._reserve_path.exists():
            return
        st = os.statvfs(self.path.parent)
        if st.f_bavail * st.f_frsize < 4 * size:
            return  # the disk is nearly full already: take it back once there is room
        try:
            with open(self._reserve_path, "wb") as f:
                f.truncate(0)
                os.posix_fallocate(f.fileno(), 0, size)
        except OSError:
            self._reserve_path.unlink(missing_ok=True)  # no room for it now: later

    def _lane_rows(self, lane: str, limit: int) -> tuple[list[Any], int]:
        db = self._conn()
        live_start = self._meta(_LIVE_START)
        if lane == "newest" and live_start:
            lo, hi = max(self._meta(_LIVE_MARK), live_start - 1), None
        else:
            lo, hi = self._meta(_READ_MARK), (live_start - 1 if live_start else None)
        rows = db.execute(
            "SELECT r.id, p.name, r.ts_ns, r.value, r.quality, p.vtype FROM readings r "
            "JOIN points p ON p.id = r.point_id WHERE r.id > ? AND r.id <= ? "
            "ORDER BY r.id LIMIT ?", (lo, hi if hi is not None else 2**62, limit)).fetchall()
        if not rows and live_start and lane != "newest":
            # the backlog is all in batches: the two lanes become one again
            self._txn(lambda db: (self._set_meta(_READ_MARK, max(self._meta(_LIVE_MARK),
                                                                 live_start - 1)),
                                  self._set_meta(_LIVE_START, 0)))
            return self._lane_rows(lane, limit)
        quality = _QUALITY  # a dict lookup: Quality(n) costs more than the rest of a row
        return [Reading(name, ts, _typed(v, vtype) if vtype == "b" else v, quality[q])
                for _, name, ts, v, q, vtype in rows], (rows[-1][0] if rows else 0)

    def _build(self, topic: str, limit: int, make: Callable[[int, list[Any]], bytes],
               now_ns: int, lane: str) -> Batch | None:
        db = self._conn()
        if topic == "event":
            rows = db.execute("SELECT id, ts_ns, point, kind, rule, value, msg FROM events "
                              "WHERE id > ? ORDER BY id LIMIT ?",
                              (self._meta(_EVENT_MARK), limit)).fetchall()
            items: list[Any] = [Event(r[1], r[2], r[3], r[4], r[6], r[5]) for r in rows]
            first, last = (rows[0][0], rows[-1][0]) if rows else (0, 0)
            mark = _EVENT_MARK
        else:
            items, last = self._lane_rows(lane, limit)
            first = 0
            mark = _LIVE_MARK if lane == "newest" and self._meta(_LIVE_START) else _READ_MARK
        if not items:
            return None
        seq = self._meta(_NEXT_SEQ)
        payload = make(seq, items)
        self._bump_reservation(seq)

        def record(db: sqlite3.Connection) -> None:
            lo = first or db.execute("SELECT value FROM meta WHERE key=?", (mark,)).fetchone()[0] + 1
            db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (seq, topic, lo, last, len(items), payload, now_ns))
            self._set_meta(_NEXT_SEQ, seq + 1)
            self._set_meta(mark, last)
        self._txn(record)
        return Batch(seq, topic, payload, len(items))

    def _split(self) -> bool:
        """Give the newest data a lane of its own from the next row on (after an outage)."""
        if self._meta(_LIVE_START):
            return False
        top = self._conn().execute("SELECT max(id) FROM readings").fetchone()[0] or 0
        self._txn(lambda db: (self._set_meta(_LIVE_START, top + 1), self._set_meta(_LIVE_MARK, top)))
        return True

    def _pending(self, exclude: frozenset[int], limit: int) -> list[Batch]:
        out: list[Batch] = []
        for seq, topic, payload, n in self._conn().execute(
                "SELECT seq, topic, payload, n FROM batches ORDER BY seq"):
            if seq not in exclude:
                out.append(Batch(seq, topic, bytes(payload), n))
                if len(out) >= limit:
                    break
        return out

    def _has_unbatched(self, n: int) -> bool:
        lo = self._meta(_READ_MARK)
        live = self._meta(_LIVE_START)
        hi = live - 1 if live else 2**62
        return self._conn().execute("SELECT 1 FROM readings WHERE id > ? AND id <= ? ORDER BY id "
                                    "LIMIT 1 OFFSET ?", (lo, hi, n - 1)).fetchone() is not None

    def _ack(self, seq: int, check: Callable[[bytes], bool] | None = None) -> str:
        row = self._conn().execute("SELECT topic, first_id, last_id, payload FROM batches "
                                   "WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return "unknown"  # a repeated ack, or one for a seq we never sent
        topic, first, last, payload = row
        if check is not None and not check(bytes(payload)):
            return "mismatch"
        table = "events" if topic == "event" else "readings"

        def drop(db: sqlite3.Connection) -> None:
            n = db.execute(f"DELETE FROM {table} WHERE id BETWEEN ? AND ?",  # noqa: S608
                           (first, last)).rowcount
            if table == "readings":
                db.execute("UPDATE meta SET value = value - ? WHERE key=?", (n, _ROWS))
            db.execute("DELETE FROM batches WHERE seq=?", (seq,))
            db.execute("UPDATE meta SET value = value + 1 WHERE key=?", (_ACKED,))
        self._txn(drop)
        return "acked"

    def _depth(self) -> Depth:
        if self._db is None:
            return Depth(0, 0, 0, None, 0, 0, 0, 0, self.quota_bytes, False, self.error)
        db = self._db
        # min(id) is O(log n); count(*) would scan a week's backlog, so the count is in meta
        lo = db.execute("SELECT min(id) FROM readings").fetchone()[0]
        oldest = db.execute("SELECT ts_ns FROM readings WHERE id=?", (lo,)).fetchone() if lo else None
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        batches = db.execute("SELECT count(*) FROM batches").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta"))
        return Depth(meta[_ROWS], events, batches, oldest[0] if oldest else None, meta[_NEXT_SEQ],
                     meta[_ACKED], meta[_EVICTED], quota.used_bytes(db), self.quota_bytes,
                     bool(meta[_LIVE_START]), self.error)

    def _alarms(self) -> dict[str, tuple[bool, int]]:
        if self._db is None:
            return {}
        return {r: (bool(a), ts) for r, a, ts in self._db.execute("SELECT * FROM alarms")}

    # -- async API ----------------------------------------------------------------------
    async def append(self, readings: Sequence[Reading], events: Sequence[Event] = (),
                     alarms: dict[str, tuple[bool, int]] | None = None, *,
                     state: Mapping[str, bytes | None] | None = None) -> None:
        """Commit one poll tick (its readings, events, alarm and control state) in one
        transaction; ``state`` rows with value None are deleted."""
        item = _Tick(readings, events, alarms or {}, time.time_ns(), state)
        with self._group_lock:
            group = self._open_group
            if group is not None:
                mine = len(group.ticks)
                group.ticks.append(item)  # the worker has not taken this group yet
            else:
                mine, group = 0, _Group([item])
                self._open_group = group
                group.done = asyncio.ensure_future(self._call(self._append_group, group))
        errors = await asyncio.shield(group.done)
        if errors[mine] is not None:
            raise errors[mine]

    async def build_batch(self, topic: str, limit: int, make: Callable[[int, list[Any]], bytes],
                          now_ns: int, lane: str = "oldest") -> Batch | None:
        """Take the next unbatched rows, sign them with ``make(seq, rows)``, record durably.

        ``lane`` "newest" takes the rows after the backlog when the newest data has a lane
        of its own (see split_live); otherwise both lanes are the same.
        """
        return await self._call(self._build, topic, limit, make, now_ns, lane)

    async def split_live(self) -> bool:
        """Open a lane for the newest data, so it is not starved behind a backlog."""
        return await self._call(self._split)

    async def lane_open(self) -> bool:
        """Whether the newest data has its own lane (a backlog is draining)."""
        return await self._call(lambda: bool(self._meta(_LIVE_START)))

    async def pending(self, exclude: frozenset[int] = frozenset(), limit: int = 16) -> list[Batch]:
        """Recorded, unacknowledged batches in seq order, skipping ``exclude``."""
        return await self._call(self._pending, exclude, limit)

    async def has_unbatched(self, n: int) -> bool:
        """Whether at least ``n`` readings of the backlog lane wait to be put in a batch."""
        return await self._call(self._has_unbatched, n)

    async def mark_acked(self, seq: int) -> bool:
        """Drop an acknowledged batch and its rows; False when it was not pending."""
        return await self._call(self._ack, seq) == "acked"

    async def ack_if(self, seq: int, check: Callable[[bytes], bool]) -> str:
        """Drop batch ``seq`` if ``check(its recorded bytes)`` holds: "acked", or "unknown"
        (no such batch pending) or "mismatch" (check refused it; nothing changed)."""
        return await self._call(self._ack, seq, check)

    async def depth(self) -> Depth:
        return await self._call(self._depth)

    async def alarms(self) -> dict[str, tuple[bool, int]]:
        """Persisted alarm states by rule name: (active, since_ns)."""
        return await self._call(self._alarms)

    async def readings_between(self, points: Sequence[str], start_ns: int, end_ns: int,
                               limit: int = 100_000) -> list[Reading]:
        """Readings of ``points`` stamped in [start_ns, end_ns), oldest first, at most ``limit``.

        What the buffer still holds: readings not yet acknowledged by the backend (acked ones
        are pruned). For history queries of other uplinks (HJ 212's 2051/2061/2031).
        """
        def read() -> list[Reading]:
            if self._db is None or not points:
                return []
            marks = ",".join("?" * len(points))
            rows = self._db.execute(
                "SELECT p.name, r.ts_ns, r.value, r.quality, p.vtype FROM readings r "
                f"JOIN points p ON p.id = r.point_id WHERE p.name IN ({marks}) "
                "AND r.ts_ns >= ? AND r.ts_ns < ? ORDER BY r.ts_ns, r.id LIMIT ?",
                (*points, start_ns, end_ns, limit))
            return [Reading(n, ts, _typed(v, vt), _QUALITY.get(q, Quality.COMM))
                    for n, ts, v, q, vt in rows]
        return await self._call(read)

    async def state(self) -> dict[str, bytes]:
        """The control state rows committed with ``append(state=...)``, by key."""
        def read() -> dict[str, bytes]:
            if self._db is None:
                return {}
            return {k: bytes(v) for k, v in self._db.execute("SELECT key, value FROM control")}
        return await self._call(read)


def _insert_events(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    db.executemany("INSERT INTO events(ts_ns, point, kind, rule, value, msg) VALUES (?,?,?,?,?,?)",
                   [(e.ts_ns, e.point, e.kind, e.rule, e.value, e.msg) for e in events])


_QUALITY = {int(q): q for q in Quality}


def _typed(value: Any, vtype: str) -> Any:
    return bool(value) if vtype == "b" and value is not None else value


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    text = str(e).lower()
    return any(s in text for s in ("not a database", "malformed", "quick_check", "corrupt"))


def _move_aside(path: Path) -> Path:
    """Rename a corrupt buffer (and its WAL) out of the way, keeping it for inspection."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(target) + suffix))
    return target
