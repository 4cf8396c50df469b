"""The PostgreSQL store: SqliteStore's contract for receivers that scale out (DESIGN.md 8).

Any number of receiver processes may share one database: `(dev, seq)` is the primary key
of `messages`, a group's rows go in with INSERT ... ON CONFLICT DO NOTHING in key order
(so two receivers never wait on each other in a cycle), and the readings of the messages
that were new go in by binary COPY, all in one transaction per group.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import psycopg
from psycopg import errors

from cimedge.cloud_sync.receiver import schema
from cimedge.cloud_sync.receiver.store import (
    DeviceStats,
    Outcome,
    Refusal,
    Result,
    StoredReading,
    conflict,
    gather_stats,
    single,
    tally,
    unstorable,
    value_columns,
)
from cimedge.cloud_sync.verify import Verified
from cimedge.edge.errors import StoreError

_RETRIES = 5  # a deadlock or serialization failure is retried: it is nobody's fault
_READING_TYPES = ["text", "int8", "text", "timestamptz", "float8", "text", "bool", "text",
                  "text"]
_READING_SELECT = ("SELECT dev, seq, name, EXTRACT(EPOCH FROM t)::float8, v, vs, vb, unit, q "
                   "FROM readings")


def describe(url: str) -> str:
    """host:port/database of a PostgreSQL URL, without user or password, for messages."""
    u = urlsplit(url)
    return f"postgresql://{u.hostname or 'localhost'}:{u.port or 5432}{u.path or '/'}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class PostgresStore:
    """The scale-out store: PostgreSQL through psycopg 3, one connection, one thread.

    readonly=True is for views (stats, export): no migration, read-only transactions.
    """

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url, self.where, self.readonly = url, describe(url), readonly
        self.hypertable = False
        self._conn = self._connect()
        try:
            if readonly:
                self.schema_version = schema.postgres_version(self._conn)
                if self.schema_version == 0:
                    raise StoreError(f"{self.where}: no receiver tables in this database")
                if self.schema_version > schema.LATEST:
                    raise schema._too_new(self.where, self.schema_version)  # noqa: SLF001
                self._conn.read_only = True
                self.hypertable = schema.is_hypertable(self._conn)
            else:
                self.schema_version, self.hypertable = schema.migrate_postgres(
                    self._conn, self.where)
        except psycopg.Error as e:
            self._conn.close()
            raise StoreError(f"{self.where}: {_first_line(e)}") from None
        except StoreError:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                   application_name="cim-receiver")
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: cannot connect to PostgreSQL: "
                             f"{_first_line(e)}") from None

    def _live(self) -> psycopg.Connection:
        if self._conn.closed:  # lost earlier: one reconnect per call, errors go up
            self._conn = self._connect()
            if self.readonly:
                self._conn.read_only = True
        return self._conn

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def commit(self, verified: Sequence[Verified],
               refusals: Sequence[Refusal] = ()) -> list[Result]:
        """Store each new (dev, seq) and count refusals in one transaction; one result each."""
        for attempt in range(1, _RETRIES + 1):
            conn = self._live()
            try:
                with conn.transaction():
                    return self._commit(conn, verified, refusals)
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == _RETRIES:
                    raise
            except psycopg.OperationalError as e:
                conn.close()
                raise StoreError(f"{self.where}: {_first_line(e)}") from None
        raise AssertionError("unreachable")

    def _commit(self, conn: psycopg.Connection, verified: Sequence[Verified],
                refusals: Sequence[Refusal]) -> list[Result]:
        now_ns = time.time_ns()
        results: list[Result | None] = [unstorable(v) for v in verified]
        first: dict[tuple[str, int], int] = {}
        for i, v in enumerate(verified):
            if results[i] is None:
                first.setdefault((v.dev, v.seq), i)
        order = sorted(first)  # one lock order for every receiver: no deadlock cycles
        new = {(d, s) for d, s in conn.execute(
            "INSERT INTO messages SELECT * FROM unnest(%s::text[], %s::int8[], %s::text[], "
            "%s::bytea[], %s::bytea[], %s::float8[], %s::int8[]) ON CONFLICT DO NOTHING "
            "RETURNING dev, seq",
            _columns([(v.dev, v.seq, v.kind, v.kid, v.digest, v.ts, now_ns)
                      for v in (verified[first[k]] for k in order)], 7)).fetchall()} \
            if order else set()
        digests = {k: verified[first[k]].digest for k in new}
        old = [k for k in order if k not in new]
        if old:
            digests.update(((d, s), bytes(g)) for d, s, g in conn.execute(
                "SELECT m.dev, m.seq, m.digest FROM messages m JOIN unnest(%s::text[], "
                "%s::int8[]) AS k (dev, seq) USING (dev, seq)", _columns(old, 2)))
        stored: list[Verified] = []
        conflicts = []
        for i, v in enumerate(verified):
            key = (v.dev, v.seq)
            if results[i] is not None:
                continue
            if key in new and first[key] == i:
                results[i] = "stored"
                stored.append(v)
            elif digests[key] == v.digest:
                results[i] = "duplicate"
            else:
                results[i] = conflict(v)
                conflicts.append((v.dev, v.seq, v.kind, v.kid, digests[key], v.digest, now_ns))
        self._insert_records(conn, stored)
        if conflicts:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO conflicts VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                conflicts)
        own = [Refusal(r.reason, v.dev, r.detail) for v, r in zip(verified, results, strict=True)
               if not isinstance(r, str) and r is not None]
        self._count(conn, [*refusals, *own], now_ns)
        return cast("list[Result]", results)  # every slot is filled above

    def _insert_records(self, conn: psycopg.Connection, stored: list[Verified]) -> None:
        with conn.cursor() as cur:
            if any(v.records for v in stored):
                with cur.copy("COPY readings FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_READING_TYPES)
                    for v in stored:
                        for r in v.records:
                            copy.write_row((v.dev, v.seq, r.name,
                                            datetime.fromtimestamp(r.t, UTC),
                                            *value_columns(r.value), r.unit, r.quality or ""))
            events = [(v.dev, v.seq, datetime.fromtimestamp(e.ts_ns / 1e9, UTC), e.point,
                       e.kind, e.rule, e.value, e.msg) for v in stored for e in v.events]
            if events:
                cur.executemany("INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                                events)

    def _count(self, conn: psycopg.Connection, refusals: Sequence[Refusal], now_ns: int) -> None:
        rows = tally(refusals)
        if not rows:
            return
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rejects VALUES (%s, %s, %s, %s, %s) ON CONFLICT (reason, dev) "
                "DO UPDATE SET count = rejects.count + excluded.count, "
                "last_ns = excluded.last_ns, detail = excluded.detail",
                [(reason, dev, n, now_ns, detail) for reason, dev, n, detail in rows])

    def store(self, verified: Verified) -> Outcome:
        """Store one message; raises Reject("seq_conflict") after recording the alarm."""
        return single(self.commit([verified]))

    def count_reject(self, reason: str, dev: str | None, detail: str = "") -> None:
        """Count one rejected message by reason and device ("" when the device is unknown)."""
        self.commit([], [Refusal(reason, dev, detail)])

    def rejects(self) -> dict[tuple[str, str], int]:
        """Return reject counts by (reason, dev)."""
        rows = self._live().execute("SELECT reason, dev, count FROM rejects")
        return {(r, d): int(n) for r, d, n in rows}

    def conflicts(self) -> list[tuple[str, int]]:
        """Return the (dev, seq) of every seq_conflict alarm, oldest first."""
        return [(d, int(s)) for d, s in self._live().execute(
            "SELECT dev, seq FROM conflicts ORDER BY received_ns, dev, seq")]

    def readings(self, dev: str | None = None) -> list[StoredReading]:
        """Return stored readings, of one device or all, in (dev, seq, time) order."""
        return [_reading(row) for row in self._live().execute(
            f"{_READING_SELECT} WHERE %(d)s::text IS NULL OR dev = %(d)s "
            "ORDER BY dev, seq, t, name", {"d": dev})]

    def iter_readings(self, dev: str, since: float | None = None,
                      until: float | None = None) -> Iterator[StoredReading]:
        """Yield one device's readings with since <= t < until in time order, streaming."""
        conn = self._live()
        with conn.transaction(), conn.cursor(name="cim_export") as cur:
            cur.itersize = 5000
            cur.execute(f"{_READING_SELECT} WHERE dev = %s AND t >= to_timestamp(%s) "
                        "AND t < to_timestamp(%s) ORDER BY t, seq, name",
                        (dev, -1e11 if since is None else since,
                         1e11 if until is None else until))
            for row in cur:
                yield _reading(row)

    def events(self, dev: str | None = None) -> list[tuple[str, int, str, str]]:
        """Return stored events as (dev, seq, point, kind)."""
        return [(d, int(s), p, k) for d, s, p, k in self._live().execute(
            "SELECT dev, seq, point, kind FROM events WHERE %(d)s::text IS NULL OR dev = %(d)s "
            "ORDER BY dev, seq, t", {"d": dev})]

    def message_count(self) -> int:
        """How many messages (batches and events) are stored."""
        row = self._live().execute("SELECT count(*) FROM messages").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> dict[str, DeviceStats]:
        """Per device: last seq, messages, last seen, gaps (batches and events share seq)."""
        conn = self._live()
        per_dev = conn.execute("SELECT dev, max(seq), count(*), max(received_ns) "
                               "FROM messages GROUP BY dev").fetchall()
        gaps = conn.execute(
            "SELECT dev, prev + 1, seq - 1 FROM (SELECT dev, seq, lag(seq, 1, 0::bigint) OVER "
            "(PARTITION BY dev ORDER BY seq) AS prev FROM messages) AS s WHERE seq - prev > 1 "
            "ORDER BY dev, seq").fetchall()
        rejects = conn.execute("SELECT reason, dev, count FROM rejects").fetchall()
        return gather_stats(((d, s, n, ns / 1e9) for d, s, n, ns in per_dev), iter(gaps),
                            iter(rejects))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column, for unnest(): one statement carries the whole group."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[]] * width


def _reading(row: tuple[Any, ...]) -> StoredReading:
    d, s, n, t, v, vs, vb, u, q = row
    value = vb if vb is not None else vs if vs is not None else v
    return StoredReading(d, int(s), n, t, value, u, q)
