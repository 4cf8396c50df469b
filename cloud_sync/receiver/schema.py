"""The receiver's database schema as numbered migrations, for SQLite and for PostgreSQL.

A database records the versions applied in `schema_version`; opening a store applies the
missing ones in order, each in its own transaction, so a database made by an older receiver
(including one from before versioning, which is taken as version 0) is brought up to date
in place. A database newer than this code is refused rather than written.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cimedge.edge.errors import StoreError

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Migration:
    """One schema step: its version, what it is for, and its SQL."""

    version: int
    purpose: str
    sql: str


SQLITE: tuple[Migration, ...] = (
    # Version 1 is the schema the first receiver created without versioning: every
    # statement is IF NOT EXISTS, so it also adopts such a database as it stands.
    Migration(1, "messages once per (dev, seq), readings, events, rejects, conflicts", """
CREATE TABLE IF NOT EXISTS messages (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, kid BLOB NOT NULL,
    digest BLOB NOT NULL, ts REAL NOT NULL, received_ns INTEGER NOT NULL,
    PRIMARY KEY (dev, seq)
);
CREATE TABLE IF NOT EXISTS readings (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, t REAL NOT NULL,
    v REAL, vs TEXT, vb INTEGER, unit TEXT, q TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS readings_by_msg ON readings (dev, seq);
CREATE TABLE IF NOT EXISTS events (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, t REAL NOT NULL, point TEXT NOT NULL,
    kind TEXT NOT NULL, rule TEXT NOT NULL, value REAL, msg TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_msg ON events (dev, seq);
CREATE TABLE IF NOT EXISTS rejects (
    reason TEXT NOT NULL, dev TEXT NOT NULL, count INTEGER NOT NULL,
    last_ns INTEGER NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (reason, dev)
);
CREATE TABLE IF NOT EXISTS conflicts (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, kid BLOB NOT NULL,
    stored_digest BLOB NOT NULL, new_digest BLOB NOT NULL, received_ns INTEGER NOT NULL
);
"""),
    Migration(2, "index readings by device and time, for export --dev --since", """
CREATE INDEX IF NOT EXISTS readings_by_dev_time ON readings (dev, t);
"""),
    Migration(3, "gateway status; indexes for the fleet view, charts and open alarms", """
CREATE TABLE IF NOT EXISTS gateway_status (
    dev TEXT PRIMARY KEY, online INTEGER, status_ns INTEGER NOT NULL, changed_ns INTEGER,
    seen_ns INTEGER, sent_ts REAL, signed INTEGER NOT NULL DEFAULT 0, kid BLOB,
    sw TEXT, config TEXT, contract INTEGER, backlog INTEGER, oldest_unacked_s REAL,
    clock TEXT, devices TEXT, extra TEXT NOT NULL DEFAULT '{}', raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_dev_received ON messages (dev, received_ns);
CREATE INDEX IF NOT EXISTS readings_by_point_time ON readings (dev, name, t);
CREATE INDEX IF NOT EXISTS events_by_alarm ON events (dev, point, rule, t);
"""),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(1, "messages once per (dev, seq), readings, events, rejects, conflicts", """
CREATE TABLE IF NOT EXISTS messages (
    dev text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, kid bytea NOT NULL,
    digest bytea NOT NULL, ts double precision NOT NULL, received_ns bigint NOT NULL,
    PRIMARY KEY (dev, seq)
);
CREATE TABLE IF NOT EXISTS readings (
    dev text NOT NULL, seq bigint NOT NULL, name text NOT NULL, t timestamptz NOT NULL,
    v double precision, vs text, vb boolean, unit text, q text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS readings_by_msg ON readings (dev, seq);
CREATE TABLE IF NOT EXISTS events (
    dev text NOT NULL, seq bigint NOT NULL, t timestamptz NOT NULL, point text NOT NULL,
    kind text NOT NULL, rule text NOT NULL, value double precision, msg text NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_msg ON events (dev, seq);
CREATE TABLE IF NOT EXISTS rejects (
    reason text NOT NULL, dev text NOT NULL, count bigint NOT NULL,
    last_ns bigint NOT NULL, detail text NOT NULL,
    PRIMARY KEY (reason, dev)
);
CREATE TABLE IF NOT EXISTS conflicts (
    dev text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, kid bytea NOT NULL,
    stored_digest bytea NOT NULL, new_digest bytea NOT NULL, received_ns bigint NOT NULL
);
"""),
    Migration(2, "index readings by device and time, for export --dev --since", """
CREATE INDEX IF NOT EXISTS readings_by_dev_time ON readings (dev, t);
"""),
    Migration(3, "gateway status; indexes for the fleet view, charts and open alarms", """
CREATE TABLE IF NOT EXISTS gateway_status (
    dev text PRIMARY KEY, online boolean, status_ns bigint NOT NULL, changed_ns bigint,
    seen_ns bigint, sent_ts double precision, signed boolean NOT NULL DEFAULT false,
    kid bytea, sw text, config text, contract bigint, backlog bigint,
    oldest_unacked_s double precision, clock text, devices jsonb,
    extra jsonb NOT NULL DEFAULT '{}', raw bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_dev_received ON messages (dev, received_ns);
CREATE INDEX IF NOT EXISTS readings_by_point_time ON readings (dev, name, t);
CREATE INDEX IF NOT EXISTS events_by_alarm ON events (dev, point, rule, t);
"""),
)

LATEST = SQLITE[-1].version
assert POSTGRES[-1].version == LATEST  # noqa: S101 - both dialects move together

_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version "
                  "(version INTEGER PRIMARY KEY, applied_ns BIGINT NOT NULL, purpose TEXT)")
# Any constant will do: it only has to be the same in every receiver.
_PG_LOCK = 0x63696D5F7278  # "cim_rx"


def _too_new(where: str, version: int) -> StoreError:
    return StoreError(f"{where}: database schema version {version} is newer than this "
                      f"receiver's ({LATEST}); upgrade the receiver")


def migrate_sqlite(db: sqlite3.Connection, where: str) -> int:
    """Apply the missing SQLite migrations (db in autocommit mode); return the version."""
    db.execute(_VERSION_TABLE)
    current = sqlite_version(db)
    if current > LATEST:
        raise _too_new(where, current)
    for m in SQLITE:
        if m.version <= current:
            continue
        # executescript() would commit a transaction opened by execute(), so it opens it.
        try:
            db.executescript(f"BEGIN IMMEDIATE;\n{m.sql}")
            db.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                       (m.version, time.time_ns(), m.purpose))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return max(current, LATEST)


def sqlite_version(db: sqlite3.Connection) -> int:
    """The schema version of a SQLite database (0: made before versioning, or empty)."""
    try:
        return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                   .fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def migrate_postgres(conn: psycopg.Connection, where: str) -> tuple[int, bool]:
    """Apply the missing PostgreSQL migrations; return (version, readings is a hypertable).

    Receivers starting together take an advisory lock, so one migrates and the others
    find the work done.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row else 0
        if current > LATEST:
            raise _too_new(where, current)
        for m in POSTGRES:
            if m.version <= current:
                continue
            conn.execute(m.sql.encode())  # no parameters: several statements in one go
            if m.version == 1:
                _try_hypertable(conn)
            conn.execute("INSERT INTO schema_version VALUES (%s, %s, %s)",
                         (m.version, time.time_ns(), m.purpose))
    return max(current, LATEST), is_hypertable(conn)


def _try_hypertable(conn: psycopg.Connection) -> None:
    """Make readings a TimescaleDB hypertable when the extension can be had; else keep it plain.

    Only on a new database (migration 1): converting a large plain table later locks it
    for a long time, so that is an operator's decision (see README).
    """
    import psycopg

    try:
        with conn.transaction():  # a savepoint: a refusal leaves the migration intact
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT create_hypertable('readings', 't', if_not_exists => TRUE, "
                         "migrate_data => TRUE)")
    except psycopg.Error:
        # Not installed, not preloaded, or not permitted: plain tables work the same.
        return


def is_hypertable(conn: psycopg.Connection) -> bool:
    """Whether the readings table is a TimescaleDB hypertable."""
    row = conn.execute("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL"
                       ).fetchone()
    if not row or not row[0]:
        return False
    row = conn.execute("SELECT count(*) FROM timescaledb_information.hypertables "
                       "WHERE hypertable_name = 'readings' AND hypertable_schema = "
                       "current_schema()").fetchone()
    return bool(row and row[0])


def postgres_version(conn: psycopg.Connection) -> int:
    """The schema version of a PostgreSQL database (0 when it has none)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0
