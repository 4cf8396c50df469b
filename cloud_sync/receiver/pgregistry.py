"""The device key registry in PostgreSQL: one registry for every receiver of a city's cluster.

Same interface as the SQLite Registry. A receiver's (readonly) instance caches lookups and
LISTENs on `cim_registry`; every change (add, rotate, revoke) sends a NOTIFY in its own
transaction, delivered when it commits, and the next lookup of every receiver drops its
cache first. So a revocation is refused from its commit on, give or take the notification's
trip (well under a millisecond on one network). If the listening connection is lost, the
cache is dropped and lookups go to the database until it is back.

The window: a lookup that runs after the revoking transaction committed but before its
notification arrived still sees the key as it was; the SQLite registry has no such window
(every lookup reads the file). wait_changed() lets a caller wait for the notification.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from cimedge.cloud_sync.receiver.pgstore import describe
from cimedge.cloud_sync.receiver.registry import (
    Enrollment,
    EnrollmentError,
    KeyRecord,
    RegistryError,
    kid_text,
    parse_enrollment,
    read_enrollment_file,
)
from cimedge.cloud_sync.verify import KeyInfo

CHANNEL = "cim_registry"
_CACHE_MAX = 100_000  # kids, known or not: garbage with random kids must not grow it forever
_LOCK = 0x63696D5F7267  # "cim_rg": one schema creator at a time
_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id text PRIMARY KEY, site_type text NOT NULL, location text
);
CREATE TABLE IF NOT EXISTS keys (
    kid text PRIMARY KEY, device_id text NOT NULL REFERENCES devices (device_id),
    public_key bytea NOT NULL,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired', 'revoked')),
    retired_after_seq bigint, not_after double precision, revoked_at double precision,
    created text NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_device ON keys (device_id);
"""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class PgRegistry:
    """Device keys in PostgreSQL (tables `devices` and `keys`, beside the receiver's)."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url, self.where, self.readonly = url, describe(url), readonly
        self.path = None  # not a file: no one-writer-per-file rule to check
        self._cache: dict[bytes, KeyInfo | None] = {}
        self._devices: dict[str, bool] = {}
        self._listen: psycopg.Connection | None = None
        self._conn = self._connect()
        try:
            if readonly:
                row = self._conn.execute("SELECT to_regclass('keys') IS NOT NULL").fetchone()
                if not row or not row[0]:
                    raise RegistryError(f"{self.where}: no registry there; enroll devices with "
                                        "`cimedge registry add`")
                self._conn.read_only = True
            else:
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                    self._conn.execute(_SCHEMA.encode())
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                   application_name="cim-registry")
        except psycopg.Error as e:
            raise RegistryError(f"{self.where}: cannot connect to PostgreSQL: "
                                f"{_first_line(e)}") from None

    def _fresh(self) -> psycopg.Connection:
        """The query connection, after dropping the cache if any change was announced."""
        if self._conn.closed:
            self._conn = self._connect()
        if not self.readonly:
            return self._conn  # writers (the CLI) do not cache
        try:
            if self._listen is None or self._listen.closed:
                self._cache.clear()
                self._devices.clear()
                self._listen = self._connect()
                self._listen.execute(f"LISTEN {CHANNEL}")
            if any(True for _ in self._listen.notifies(timeout=0)):
                self._cache.clear()
                self._devices.clear()
        except psycopg.OperationalError:
            self._cache.clear()  # cannot hear changes: ask the database until it is back
            self._devices.clear()
            if self._listen is not None:
                self._listen.close()
        return self._conn

    def wait_changed(self, timeout: float) -> bool:
        """Block until a change is announced or the listener is lost (then drop the cache).

        Return False if neither happened within timeout. For tests and watchers: lookups
        never wait, they take what has arrived.
        """
        if self._listen is None:
            self._fresh()
        assert self._listen is not None  # noqa: S101 - readonly instances listen
        try:
            heard = any(True for _ in self._listen.notifies(timeout=timeout, stop_after=1))
        except psycopg.OperationalError:
            self._listen.close()
            heard = True
        if heard:
            self._cache.clear()
            self._devices.clear()
        return heard

    def close(self) -> None:
        """Close the connections."""
        self._conn.close()
        if self._listen is not None:
            self._listen.close()

    def lookup(self, kid: bytes) -> KeyInfo | None:
        """Return the key with this kid, or None when no device enrolled it."""
        conn, kid = self._fresh(), bytes(kid)
        if kid in self._cache:
            return self._cache[kid]
        row = conn.execute("SELECT device_id, public_key, status, retired_after_seq, not_after "
                           "FROM keys WHERE kid = %s", (kid.hex(),)).fetchone()
        info = None if row is None else KeyInfo(
            dev=row[0], public_key=bytes(row[1]), status=row[2],
            retired_after_seq=row[3], not_after=row[4])
        if self.readonly and self._listen is not None and not self._listen.closed:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[kid] = info
        return info

    def has_device(self, dev: str) -> bool:
        """Whether a device with this id is enrolled (so it may be sent an ok:false ack)."""
        conn = self._fresh()
        if dev not in self._devices:
            known = conn.execute("SELECT 1 FROM devices WHERE device_id = %s",
                                 (dev,)).fetchone() is not None
            if not (self.readonly and self._listen is not None and not self._listen.closed):
                return known
            if len(self._devices) >= _CACHE_MAX:
                self._devices.clear()
            self._devices[dev] = known
        return self._devices[dev]

    def _writing(self) -> AbstractContextManager[Any]:
        if self.readonly:
            raise RegistryError(f"{self.where}: the registry is open read-only here")
        return self._fresh().transaction()

    def add_enrollment(self, record: dict[str, Any], source: str = "enrollment") -> Enrollment:
        """Validate and add one enrollment record (see Registry.add_enrollment)."""
        return self.add_enrollments([(record, source)])[0]

    def add_enrollments(self, records: Iterable[tuple[dict[str, Any], str]]) -> list[Enrollment]:
        """Add many (record, source) pairs in one transaction: all of them, or none."""
        parsed = [(parse_enrollment(r, source), source) for r, source in records]
        with self._writing():
            for e, source in parsed:
                self._insert(e, source)
            self._notify()
        return [e for e, _ in parsed]

    def load_enrollment_file(self, path: str) -> Enrollment:
        """Add the enrollment record in a JSON file (the CLI's enrollment.json)."""
        return self.add_enrollment(read_enrollment_file(path), source=str(path))

    def _insert(self, e: Enrollment, source: str) -> str | None:
        conn = self._conn
        row = conn.execute("SELECT device_id, public_key, status FROM keys WHERE kid = %s "
                           "FOR UPDATE", (e.kid.hex(),)).fetchone()
        if row is not None and (row[0], bytes(row[1])) != (e.device_id, e.public_key):
            raise EnrollmentError(source, "kid", f"{e.kid.hex()} is already enrolled "
                                  f"for device {row[0]!r}")
        conn.execute(
            "INSERT INTO devices (device_id, site_type, location) VALUES (%s, %s, %s) "
            "ON CONFLICT (device_id) DO UPDATE SET site_type = excluded.site_type, "
            "location = excluded.location", (e.device_id, e.site_type, e.location))
        conn.execute(
            "INSERT INTO keys (kid, device_id, public_key, not_after, created) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kid) DO NOTHING",
            (e.kid.hex(), e.device_id, e.public_key, e.not_after, e.created))
        return None if row is None else str(row[2])

    def _notify(self) -> None:
        self._conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))  # sent on commit

    def rotate(self, record: dict[str, Any], after_seq: int,
               source: str = "enrollment") -> list[str]:
        """Add a device's new key and retire its active ones after `after_seq` (see Registry)."""
        e = parse_enrollment(record, source)
        if type(after_seq) is not int or after_seq < 0:
            raise RegistryError(f"--after-seq must be a seq (0 or more), not {after_seq!r}")
        with self._writing():
            if self._conn.execute("SELECT 1 FROM devices WHERE device_id = %s FOR UPDATE",
                                  (e.device_id,)).fetchone() is None:
                raise RegistryError(f"device {e.device_id!r} is not enrolled: add its first "
                                    "key with `cimedge registry add`")
            status = self._insert(e, source)
            if status not in (None, "active"):
                raise RegistryError(f"kid {e.kid.hex()} is {status}: a rotation needs a "
                                    "key that is not retired or revoked")
            rows = self._conn.execute(
                "UPDATE keys SET status = 'retired', retired_after_seq = %s WHERE "
                "device_id = %s AND status = 'active' AND kid != %s RETURNING kid",
                (after_seq, e.device_id, e.kid.hex())).fetchall()
            self._notify()
        return sorted(r[0] for r in rows)

    def revoke(self, kid_or_dev: bytes | str, now: float | None = None) -> int:
        """Revoke one key (bytes or hex kid) or every key of a device; return how many changed."""
        when = time.time() if now is None else now
        with self._writing():
            kids = self._kids_of(kid_or_dev)
            if not kids:
                raise RegistryError(f"no enrolled key or device {kid_or_dev!r}")
            n = 0
            for kid in kids:
                n += self._conn.execute(
                    "UPDATE keys SET status = 'revoked', revoked_at = %s "
                    "WHERE kid = %s AND status != 'revoked'", (when, kid)).rowcount
            self._notify()
        return n

    def _kids_of(self, kid_or_dev: bytes | str) -> list[str]:
        kid = kid_text(kid_or_dev)
        if kid and self._conn.execute("SELECT 1 FROM keys WHERE kid = %s", (kid,)).fetchone():
            return [kid]
        if isinstance(kid_or_dev, bytes):
            return []
        return [r[0] for r in self._conn.execute(
            "SELECT kid FROM keys WHERE device_id = %s ORDER BY kid", (kid_or_dev,))]

    def list(self) -> list[KeyRecord]:
        """Every key with its device, ordered by device and creation time."""
        rows = self._fresh().execute(
            "SELECT d.device_id, d.site_type, d.location, k.kid, k.status, k.retired_after_seq, "
            "k.not_after, k.revoked_at, k.created FROM keys k JOIN devices d USING (device_id) "
            "ORDER BY d.device_id, k.created, k.kid").fetchall()
        return [KeyRecord(*r) for r in rows]

