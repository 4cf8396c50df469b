"""Schema migrations: a database made before versioning is brought up to date in place."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from rxkit import Device

from cimedge.cloud_sync.receiver import schema
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.store import open_store
from cimedge.cloud_sync.verify import verify_message
from cimedge.edge.errors import StoreError

# The schema as the first receiver shipped it (commit 42a0a98): no schema_version table.
UNVERSIONED = """
CREATE TABLE messages (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, kid BLOB NOT NULL,
    digest BLOB NOT NULL, ts REAL NOT NULL, received_ns INTEGER NOT NULL,
    PRIMARY KEY (dev, seq));
CREATE TABLE readings (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, t REAL NOT NULL,
    v REAL, vs TEXT, vb INTEGER, unit TEXT, q TEXT NOT NULL DEFAULT '');
CREATE INDEX readings_by_msg ON readings (dev, seq);
CREATE TABLE events (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, t REAL NOT NULL, point TEXT NOT NULL,
    kind TEXT NOT NULL, rule TEXT NOT NULL, value REAL, msg TEXT NOT NULL);
CREATE INDEX events_by_msg ON events (dev, seq);
CREATE TABLE rejects (
    reason TEXT NOT NULL, dev TEXT NOT NULL, count INTEGER NOT NULL,
    last_ns INTEGER NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (reason, dev));
CREATE TABLE conflicts (
    dev TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, kid BLOB NOT NULL,
    stored_digest BLOB NOT NULL, new_digest BLOB NOT NULL, received_ns INTEGER NOT NULL);
INSERT INTO messages VALUES ('ps-0001', 1, 'batch', x'00', x'01', 1.7e9, 1);
INSERT INTO readings VALUES ('ps-0001', 1, 'ps-0001:a', 1.7e9, 2.5, NULL, NULL, 'm', '');
INSERT INTO rejects VALUES ('bad_signature', 'ps-0001', 3, 1, 'x');
"""


def test_every_migration_has_both_dialects_and_increasing_versions() -> None:
    assert [m.version for m in schema.SQLITE] == list(range(1, schema.LATEST + 1))
    assert [m.version for m in schema.POSTGRES] == [m.version for m in schema.SQLITE]
    assert [m.purpose for m in schema.POSTGRES] == [m.purpose for m in schema.SQLITE]


def test_sqlite_unversioned_database_is_migrated_in_place(
        tmp_path: Path, registry: Registry, device: Device) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(UNVERSIONED)
    store = open_store(path)
    try:
        assert store.schema_version == schema.LATEST
        assert store.message_count() == 1  # the old rows are still there
        assert store.rejects() == {("bad_signature", "ps-0001"): 3}
        assert store.stats()["ps-0001"].last_seq == 1
        v = verify_message(device.dev, "batch", device.batch(2), registry.lookup,
                           now=time.time())
        assert store.store(v) == "stored"
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        versions = [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY 1")]
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert versions == list(range(1, schema.LATEST + 1))
    assert "readings_by_dev_time" in indexes
    open_store(path).close()  # opening again applies nothing and fails on nothing


def test_sqlite_partly_migrated_database_gets_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(UNVERSIONED)
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                   "applied_ns BIGINT NOT NULL, purpose TEXT)")
        db.execute("INSERT INTO schema_version VALUES (1, 0, 'by hand')")
    open_store(path).close()
    with sqlite3.connect(path) as db:
        rows = list(db.execute("SELECT version, purpose FROM schema_version ORDER BY 1"))
    assert rows[0] == (1, "by hand")
    assert [v for v, _ in rows] == list(range(1, schema.LATEST + 1))


def test_a_newer_database_is_refused_not_written(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (?, 0, 'from the future')",
                   (schema.LATEST + 1,))
    for readonly in (False, True):
        with pytest.raises(StoreError, match=f"schema version {schema.LATEST + 1} is newer"):
            open_store(path, readonly=readonly)


def test_postgres_unversioned_database_is_migrated_in_place(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""
CREATE TABLE messages (dev text NOT NULL, seq bigint NOT NULL, kind text NOT NULL,
    kid bytea NOT NULL, digest bytea NOT NULL, ts double precision NOT NULL,
    received_ns bigint NOT NULL, PRIMARY KEY (dev, seq));
CREATE TABLE readings (dev text NOT NULL, seq bigint NOT NULL, name text NOT NULL,
    t timestamptz NOT NULL, v double precision, vs text, vb boolean, unit text,
    q text NOT NULL DEFAULT '');
INSERT INTO messages VALUES ('ps-0001', 4, 'batch', '\\x00', '\\x01', 1.7e9, 1);
""")
    store = open_store(pg_url)
    try:
        assert store.schema_version == schema.LATEST
        assert store.stats()["ps-0001"].gaps == [(1, 3)]
        assert store.rejects() == {}  # created by migration 1
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
        index = conn.execute("SELECT to_regclass('readings_by_dev_time')").fetchone()
    assert versions == list(range(1, schema.LATEST + 1))
    assert index is not None and index[0] is not None


def test_postgres_uses_a_hypertable_only_where_timescaledb_is_available(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = "
                           "'timescaledb') AND current_setting('shared_preload_libraries') "
                           "LIKE '%timescaledb%'").fetchone()
    usable = bool(row and row[0])
    store = open_store(pg_url)
    try:
        # Without the extension (as on this machine) migration 1 keeps a plain table.
        assert store.hypertable is usable  # type: ignore[attr-defined]
        assert store.schema_version == schema.LATEST
    finally:
        store.close()
