"""The receiver's store: each verified message once, a group of them per durable transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from cimedge.cloud_sync.receiver import schema
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.verify import Verified
from cimedge.edge.errors import StoreError

T = TypeVar("T")
Outcome = Literal["stored", "duplicate"]
Result = Outcome | Reject  # per verified message: a Reject only for seq_conflict


class Refusal(NamedTuple):
    """A rejected message to count: its reason, its device when enrolled, and a detail."""

    reason: str
    dev: str | None
    detail: str = ""


@dataclass(frozen=True)
class StoredReading:
    """One stored SenML record, for tests, views and export."""

    dev: str
    seq: int
    name: str
    t: float
    value: float | bool | str | None
    unit: str | None
    quality: str


@dataclass
class DeviceStats:
    """Per device: highest seq, messages, last arrival, missing seqs as ranges, rejects."""

    dev: str
    last_seq: int
    messages: int
    last_seen: float | None = None  # epoch seconds of the latest stored message's arrival
    gaps: list[tuple[int, int]] = field(default_factory=list)
    rejects: dict[str, int] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        """How many seqs below last_seq were never stored."""
        return sum(b - a + 1 for a, b in self.gaps)


class Store(Protocol):
    """What the receiver needs of a store: SqliteStore or PostgresStore.

    Every method runs on one thread (StoreThread). commit() returns only after its
    transaction is durable, since the acks follow it.
    """

    schema_version: int

    def commit(self, verified: Sequence[Verified],
               refusals: Sequence[Refusal] = ()) -> list[Result]: ...
    def store(self, verified: Verified) -> Outcome: ...
    def count_reject(self, reason: str, dev: str | None, detail: str = "") -> None: ...
    def readings(self, dev: str | None = None) -> list[StoredReading]: ...
    def iter_readings(self, dev: str, since: float | None = None,
                      until: float | None = None) -> Iterator[StoredReading]: ...
    def events(self, dev: str | None = None) -> list[tuple[str, int, str, str]]: ...
    def rejects(self) -> dict[tuple[str, str], int]: ...
    def conflicts(self) -> list[tuple[str, int]]: ...
    def message_count(self) -> int: ...
    def stats(self) -> dict[str, DeviceStats]: ...
    def close(self) -> None: ...


def value_columns(value: object) -> tuple[float | None, str | None, bool | None]:
    """A reading's value split over the v, vs and vb columns."""
    if isinstance(value, bool):  # before int: bool is an int
        return None, None, value
    if isinstance(value, int | float):
        return float(value), None, None
    if isinstance(value, str):
        return None, value, None
    return None, None, None


def conflict(v: Verified) -> Reject:
    """The refusal for a (dev, seq) already stored with other bytes (DESIGN.md section 4)."""
    return Reject("seq_conflict", f"seq {v.seq} already stored with other bytes",
                  dev=v.dev, seq=v.seq)


def unstorable(v: Verified) -> Reject | None:
    """A bad_field refusal for text no store can keep as sent, else None.

    PostgreSQL text cannot hold NUL; SQLite refuses it too, so both stores keep the same
    data. Names, points and units are already limited to printable characters.
    """
    texts = [r.value for r in v.records if isinstance(r.value, str)]
    texts += [t for e in v.events for t in (e.rule, e.msg)]
    if any("\0" in t for t in texts):
        return Reject("bad_field", "a text value holds NUL, which the store cannot keep",
                      dev=v.dev, seq=v.seq)
    return None


def single(results: list[Result]) -> Outcome:
    """store()'s answer from commit()'s: the outcome, or the seq_conflict raised."""
    if isinstance(results[0], Reject):
        raise results[0]
    return results[0]


def tally(refusals: Sequence[Refusal]) -> list[tuple[str, str, int, str]]:
    """(reason, dev or "", count, last detail) per key, sorted so writers lock in one order."""
    counts = Counter((r.reason, r.dev or "") for r in refusals)
    detail = {(r.reason, r.dev or ""): r.detail[:500] for r in refusals}
    return [(reason, dev, n, detail[reason, dev]) for (reason, dev), n in sorted(counts.items())]


def gather_stats(per_dev: Iterator[tuple[str, int, int, float | None]],
                 gaps: Iterator[tuple[str, int, int]],
                 rejects: Iterator[tuple[str, str, int]]) -> dict[str, DeviceStats]:
    """Assemble DeviceStats from the three queries both stores run."""
    out = {d: DeviceStats(d, int(last), int(n), seen) for d, last, n, seen in per_dev}
    for d, a, b in gaps:
        out[d].gaps.append((int(a), int(b)))
    for reason, d, n in rejects:
        if d:  # rejects of unknown devices are in rejects() under ""
            out.setdefault(d, DeviceStats(d, 0, 0)).rejects[reason] = int(n)
    return dict(sorted(out.items()))


class SqliteStore:
    """The embedded store: SQLite in WAL mode with synchronous=FULL, one writing connection.

    readonly=True opens an existing database for views (stats, export) from another
    process: it never writes, so it never checkpoints (DESIGN.md section 3).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.is_file():
                    raise StoreError(f"{self.path}: no receiver database there")
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                           isolation_level=None)
                self.schema_version = schema.sqlite_version(self._db)
                if self.schema_version > schema.LATEST:
                    raise schema._too_new(str(self.path), self.schema_version)  # noqa: SLF001
                return
            # check_same_thread stays on: it enforces the one-writer-thread rule.
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self.schema_version = schema.migrate_sqlite(self._db, str(self.path))
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open the receiver database: {e}") from None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def commit(self, verified: Sequence[Verified],
               refusals: Sequence[Refusal] = ()) -> list[Result]:
        """Store each new (dev, seq) and count refusals in one transaction; one result each.

        A resend (same digest) is "duplicate"; other bytes under a stored (dev, seq) give a
        seq_conflict Reject in the results and an alarm row in `conflicts`.
        """
        db = self._db
        # Reject counters alone may lose their last increments on a power cut: an fsync per
        # garbage message would let any publisher drive the disk. The next commit syncs them.
        db.execute(f"PRAGMA synchronous={'FULL' if verified else 'NORMAL'}")
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                return self._commit(verified, refusals)
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def _commit(self, verified: Sequence[Verified], refusals: Sequence[Refusal]) -> list[Result]:
        db, now_ns = self._db, time.time_ns()
        results: list[Result] = []
        digests: dict[tuple[str, int], bytes] = {}  # this group's, and those looked up
        messages, readings, events, conflicts = [], [], [], []
        for v in verified:
            key = (v.dev, v.seq)
            if (refused := unstorable(v)) is not None:
                results.append(refused)
                continue
            if key not in digests:
                row = db.execute("SELECT digest FROM messages WHERE dev = ? AND seq = ?",
                                 key).fetchone()
                if row is None:
                    digests[key] = v.digest
                    messages.append((v.dev, v.seq, v.kind, v.kid, v.digest, v.ts, now_ns))
                    readings += [(v.dev, v.seq, r.name, r.t, *value_columns(r.value), r.unit,
                                  r.quality or "") for r in v.records]
                    events += [(v.dev, v.seq, e.ts_ns / 1e9, e.point, e.kind, e.rule, e.value,
                                e.msg) for e in v.events]
                    results.append("stored")
                    continue
                digests[key] = bytes(row[0])
            if digests[key] == v.digest:
                results.append("duplicate")
            else:
                conflicts.append((v.dev, v.seq, v.kind, v.kid, digests[key], v.digest, now_ns))
                results.append(conflict(v))
        db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", messages)
        db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", readings)
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", events)
        db.executemany("INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?)", conflicts)
        db.executemany(
            "INSERT INTO rejects VALUES (?, ?, ?, ?, ?) ON CONFLICT (reason, dev) "
            "DO UPDATE SET count = count + excluded.count, last_ns = excluded.last_ns, "
            "detail = excluded.detail",
            [(reason, dev, n, now_ns, detail) for reason, dev, n, detail in tally(
                [*refusals, *(Refusal(r.reason, r.dev, r.detail) for r in results
                              if isinstance(r, Reject))])])
        return results

    def store(self, verified: Verified) -> Outcome:
        """Store one message; raises Reject("seq_conflict") after recording the alarm."""
        return single(self.commit([verified]))

    def count_reject(self, reason: str, dev: str | None, detail: str = "") -> None:
        """Count one rejected message by reason and device ("" when the device is unknown)."""
        self.commit([], [Refusal(reason, dev, detail)])

    def rejects(self) -> dict[tuple[str, str], int]:
        """Return reject counts by (reason, dev)."""
        rows = self._db.execute("SELECT reason, dev, count FROM rejects")
        return {(r, d): n for r, d, n in rows}

    def conflicts(self) -> list[tuple[str, int]]:
        """Return the (dev, seq) of every seq_conflict alarm, oldest first."""
        return list(self._db.execute("SELECT dev, seq FROM conflicts ORDER BY rowid"))

    def readings(self, dev: str | None = None) -> list[StoredReading]:
        """Return stored readings, of one device or all, in (dev, seq, arrival) order."""
        return [_reading(row) for row in self._db.execute(
            "SELECT dev, seq, name, t, v, vs, vb, unit, q FROM readings "
            "WHERE ?1 IS NULL OR dev = ?1 ORDER BY dev, seq, rowid", (dev,))]

    def iter_readings(self, dev: str, since: float | None = None,
                      until: float | None = None) -> Iterator[StoredReading]:
        """Yield one device's readings with since <= t < until, in time order, streaming."""
        rows = self._db.execute(
            "SELECT dev, seq, name, t, v, vs, vb, unit, q FROM readings WHERE dev = ? "
            "AND t >= ? AND t < ? ORDER BY t, seq, rowid",
            (dev, -1e300 if since is None else since, 1e300 if until is None else until))
        for row in rows:
            yield _reading(row)

    def events(self, dev: str | None = None) -> list[tuple[str, int, str, str]]:
        """Return stored events as (dev, seq, point, kind)."""
        return list(self._db.execute(
            "SELECT dev, seq, point, kind FROM events WHERE ?1 IS NULL OR dev = ?1 "
            "ORDER BY dev, seq, rowid", (dev,)))

    def message_count(self) -> int:
        """How many messages (batches and events) are stored."""
        return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def stats(self) -> dict[str, DeviceStats]:
        """Per device: last seq, messages, last seen, gaps (batches and events share seq)."""
        db = self._db
        return gather_stats(
            ((d, last, n, ns / 1e9) for d, last, n, ns in db.execute(
                "SELECT dev, MAX(seq), COUNT(*), MAX(received_ns) FROM messages GROUP BY dev")),
            db.execute(_GAPS), db.execute("SELECT reason, dev, count FROM rejects"))


_GAPS = ("SELECT dev, prev + 1, seq - 1 FROM (SELECT dev, seq, LAG(seq, 1, 0) OVER "
         "(PARTITION BY dev ORDER BY seq) AS prev FROM messages) AS s WHERE seq - prev > 1 "
         "ORDER BY dev, seq")


def _reading(row: tuple[Any, ...]) -> StoredReading:
    d, s, n, t, v, vs, vb, u, q = row
    value = bool(vb) if vb is not None else vs if vs is not None else v
    return StoredReading(d, s, n, t, value, u, q)


def is_postgres_url(target: str | Path) -> bool:
    """Whether --db names a PostgreSQL database rather than a SQLite file."""
    return str(target).startswith(("postgres://", "postgresql://"))


def require_psycopg() -> None:
    """Raise StoreError, one line, when the PostgreSQL driver is not installed."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        msg = "PostgreSQL needs psycopg 3: pip install 'cimedge[receiver]'"
        raise StoreError(msg) from None


def open_store(target: str | Path, *, readonly: bool = False) -> Store:
    """Open the store a --db value names: a postgresql:// URL, else a SQLite file path."""
    if is_postgres_url(target):
        require_psycopg()
        from cimedge.cloud_sync.receiver.pgstore import PostgresStore

        return PostgresStore(str(target), readonly=readonly)
    return SqliteStore(target, readonly=readonly)


class StoreThread:
    """Runs one Store on one dedicated thread: its only writer, opened and closed there.

    A call already running completes even if the awaiting task is cancelled, so the store,
    not the caller, decides what has been committed.
    """

    def __init__(self, factory: Callable[[], Store]) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cim-receiver-store")
        self._store: Store | None = None
        self._factory = factory

    async def open(self) -> Store:
        """Create the store on the writer thread."""
        self._store = await asyncio.get_running_loop().run_in_executor(self._pool, self._factory)
        return self._store

    async def call(self, fn: Callable[[Store], T]) -> T:
        """Run fn(store) on the writer thread and return its result."""
        store = self._store
        if store is None:
            msg = "StoreThread.open() was not awaited"
            raise RuntimeError(msg)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, store)

    def close(self) -> None:
        """Close the store on its thread, waiting for any call in progress."""
        if self._store is not None:
            self._pool.submit(self._store.close)
            self._store = None
        self._pool.shutdown(wait=True)
