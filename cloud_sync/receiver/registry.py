"""Device key registry: which device may sign with which key, fed by enrollment records."""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cimedge.cloud_sync.cose import kid_for
from cimedge.cloud_sync.verify import KeyInfo
from cimedge.edge.errors import CimEdgeError

DEVICE_ID = re.compile(r"[a-z0-9-]{3,64}")
_KID_HEX = re.compile(r"[0-9a-fA-F]{16}")


def kid_text(kid_or_dev: bytes | str) -> str:
    """A kid (8 bytes, or 16 hex digits) as lower-case hex; "" for what can only be a device."""
    if isinstance(kid_or_dev, bytes):
        return kid_or_dev.hex()
    return kid_or_dev.lower() if _KID_HEX.fullmatch(kid_or_dev) else ""
_REQUIRED = ("v", "device_id", "site_type", "kid", "public_key", "created")
_OPTIONAL = ("location", "not_after")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    site_type TEXT NOT NULL,
    location  TEXT
);
CREATE TABLE IF NOT EXISTS keys (
    kid               TEXT PRIMARY KEY,            -- hex of the 8-byte COSE kid
    device_id         TEXT NOT NULL REFERENCES devices(device_id),
    public_key        BLOB NOT NULL,               -- raw 32-byte Ed25519 key
    status            TEXT NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'retired', 'revoked')),
    retired_after_seq INTEGER,
    not_after         REAL,                        -- seconds since the epoch
    revoked_at        REAL,
    created           TEXT NOT NULL                -- RFC 3339, as enrolled
);
CREATE INDEX IF NOT EXISTS keys_by_device ON keys(device_id);
"""


class EnrollmentError(CimEdgeError):
    """An enrollment record is malformed: names the source, the field and the reason."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source, self.field, self.reason = source, field, reason
        super().__init__(f"{source}: {field}: {reason}" if field else f"{source}: {reason}")


class RegistryError(CimEdgeError):
    """A registry operation named a key or device that is not there."""


class Keys(Protocol):
    """What the receiver asks of a registry (Registry here, PgRegistry in PostgreSQL)."""

    path: Path | None

    def lookup(self, kid: bytes) -> KeyInfo | None: ...
    def has_device(self, dev: str) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Enrollment:
    """One validated enrollment record (DESIGN.md section 5)."""

    device_id: str
    site_type: str
    kid: bytes
    public_key: bytes
    created: str
    location: str | None = None
    not_after: float | None = None


@dataclass(frozen=True)
class KeyRecord:
    """One row of `Registry.list()`: a key with its device's facts."""

    device_id: str
    site_type: str
    location: str | None
    kid: str
    status: str
    retired_after_seq: int | None
    not_after: float | None
    revoked_at: float | None
    created: str

    def state(self, now: float) -> str:
        """What a receiver does with this key now: active, retired, revoked or expired."""
        if self.status != "revoked" and self.not_after is not None and self.not_after < now:
            return "expired"
        return self.status


def _rfc3339(source: str, field: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise EnrollmentError(source, field, f"must be an RFC 3339 time string, got {value!r}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise EnrollmentError(source, field, f"{value!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise EnrollmentError(source, field, f"{value!r} has no UTC offset (add Z or +hh:mm)")
    return when


def _text(source: str, field: str, value: object, max_len: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EnrollmentError(source, field, f"must be non-empty text, got {value!r}")
    if len(value) > max_len:
        raise EnrollmentError(source, field, f"is longer than {max_len} characters")
    return value


def _key(source: str, kid_hex: object, pk_b64: object) -> tuple[bytes, bytes]:
    if not isinstance(kid_hex, str) or not _KID_HEX.fullmatch(kid_hex):
        raise EnrollmentError(source, "kid", f"{kid_hex!r} is not 16 hex digits (an 8-byte kid)")
    try:
        public_key = base64.b64decode(pk_b64, validate=True) if isinstance(pk_b64, str) else b""
    except (binascii.Error, ValueError):
        public_key = b""
    if len(public_key) != 32:  # noqa: PLR2004 - raw Ed25519 public key size
        raise EnrollmentError(source, "public_key", "must be base64 of a raw 32-byte Ed25519 key")
    kid = bytes.fromhex(kid_hex)
    if kid != kid_for(public_key):
        raise EnrollmentError(source, "kid", f"{kid_hex} is not the kid of this public_key "
                              f"(expected {kid_for(public_key).hex()})")
    return kid, public_key


def parse_enrollment(record: object, source: str = "enrollment") -> Enrollment:
    """Check every field of an enrollment record; raise EnrollmentError naming the first bad one."""
    if not isinstance(record, dict):
        raise EnrollmentError(source, "", f"must be a JSON object, got {type(record).__name__}")
    unknown = sorted(map(str, set(record) - set(_REQUIRED) - set(_OPTIONAL)))
    if unknown:
        raise EnrollmentError(source, unknown[0], "unknown field (enrollment record v1)")
    for field in _REQUIRED:
        if field not in record:
            raise EnrollmentError(source, field, "is missing")
    v = record["v"]
    if type(v) is not int or v != 1:
        raise EnrollmentError(source, "v", f"must be 1, got {v!r}")
    dev = record["device_id"]
    if not isinstance(dev, str) or not DEVICE_ID.fullmatch(dev):
        raise EnrollmentError(source, "device_id", f"{dev!r} does not match [a-z0-9-]{{3,64}}")
    site_type = _text(source, "site_type", record["site_type"], 64)
    kid, public_key = _key(source, record["kid"], record["public_key"])
    created = _rfc3339(source, "created", record["created"]).isoformat()
    location = record.get("location")
    if location is not None:
        location = _text(source, "location", location)
    not_after = record.get("not_after")
    if not_after is not None:
        not_after = _rfc3339(source, "not_after", not_after).timestamp()
    return Enrollment(dev, site_type, kid, public_key, created, location, not_after)


def read_enrollment_file(path: str | Path) -> Any:  # noqa: ANN401 - JSON, checked later
    """The JSON object in an enrollment file; EnrollmentError names the file when it is not."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EnrollmentError(str(path), "", f"cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EnrollmentError(str(path), "", f"not valid JSON: {exc}") from None
    return record  # parse_enrollment() checks that it is an object, field by field


class Registry:
    """Device keys in SQLite; lookup() is what verify_message() calls for each kid.

    Keep it in its own file, not the receiver's store: one writing connection per file
    (DESIGN.md section 3, the SQLite 3.40.1 WAL-reset bug). Every write, and the close of a
    writing connection (which checkpoints), holds an exclusive lock on `FILE.lock`, so the
    CLI and receivers starting with --enroll take turns. Receivers open it read-only: they
    never write or checkpoint, and each lookup sees the latest committed revocation.
    """

    def __init__(self, path_or_conn: str | Path | sqlite3.Connection, *,
                 readonly: bool = False) -> None:
        self.readonly = readonly
        if isinstance(path_or_conn, sqlite3.Connection):
            self.path: Path | None = None
            self._db = path_or_conn
        elif readonly:
            self.path = Path(path_or_conn)
            if not self.path.is_file():
                raise RegistryError(f"{self.path}: no registry there; enroll devices with "
                                    "`cimedge registry add`")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                       isolation_level=None, check_same_thread=False)
            try:
                tables = {r[0] for r in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.DatabaseError as e:
                self._db.close()
                raise RegistryError(f"{self.path}: not a registry: {e}") from None
            if not {"devices", "keys"} <= tables:
                self._db.close()
                raise RegistryError(f"{self.path}: not a registry (no devices and keys "
                                    "tables)")
            return
        else:
            self.path = Path(path_or_conn)
            with self._locked():
                self._db = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA busy_timeout=5000")
                self._db.executescript(_SCHEMA)
            return
        self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise RegistryError(f"{self.path}: the registry is open read-only here")
        with self._locked(), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db

    def close(self) -> None:
        """Close the connection (also one passed in)."""
        if self.readonly:
            self._db.close()
            return
        with self._locked():
            self._db.close()

    def add_enrollment(self, record: dict[str, Any], source: str = "enrollment") -> Enrollment:
        """Validate and add one enrollment record; adding the same record again changes nothing.

        A known kid keeps its status (a revoked key stays revoked) and validity; the device's
        site type and location follow the latest record.
        """
        e = parse_enrollment(record, source)
        with self._writing() as db:
            self._insert(db, e, source)
        return e

    def add_enrollments(self, records: Iterable[tuple[dict[str, Any], str]]) -> list[Enrollment]:
        """Add many (record, source) pairs in one transaction: all of them, or none."""
        parsed = [(parse_enrollment(r, source), source) for r, source in records]
        with self._writing() as db:
            for e, source in parsed:
                self._insert(db, e, source)
        return [e for e, _ in parsed]

    def _insert(self, db: sqlite3.Connection, e: Enrollment, source: str) -> str | None:
        """Insert e's device and key; return the key's status if it was already there."""
        row = db.execute("SELECT device_id, public_key, status FROM keys WHERE kid = ?",
                         (e.kid.hex(),)).fetchone()
        if row is not None and (row[0], bytes(row[1])) != (e.device_id, e.public_key):
            raise EnrollmentError(source, "kid", f"{e.kid.hex()} is already enrolled "
                                  f"for device {row[0]!r}")
        db.execute(
            "INSERT INTO devices (device_id, site_type, location) VALUES (?, ?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET site_type = excluded.site_type, "
            "location = excluded.location",
            (e.device_id, e.site_type, e.location))
        db.execute(
            "INSERT OR IGNORE INTO keys (kid, device_id, public_key, not_after, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (e.kid.hex(), e.device_id, e.public_key, e.not_after, e.created))
        return None if row is None else str(row[2])

    def rotate(self, record: dict[str, Any], after_seq: int,
               source: str = "enrollment") -> list[str]:
        """Add a device's new key and retire its active ones after `after_seq`; return them.

        During the rotation window the device has two valid keys: the new one for any seq,
        the retired one for the backlog it signed, seq <= after_seq (DESIGN.md section 5).
        """
        e = parse_enrollment(record, source)
        if type(after_seq) is not int or after_seq < 0:
            raise RegistryError(f"--after-seq must be a seq (0 or more), not {after_seq!r}")
        with self._writing() as db:
            if not db.execute("SELECT 1 FROM devices WHERE device_id = ?",
                              (e.device_id,)).fetchone():
                raise RegistryError(f"device {e.device_id!r} is not enrolled: add its first "
                                    "key with `cimedge registry add`")
            status = self._insert(db, e, source)
            if status not in (None, "active"):
                raise RegistryError(f"kid {e.kid.hex()} is {status}: a rotation needs a "
                                    "key that is not retired or revoked")
            rows = db.execute(
                "UPDATE keys SET status = 'retired', retired_after_seq = ? WHERE device_id = ? "
                "AND status = 'active' AND kid != ? RETURNING kid",
                (after_seq, e.device_id, e.kid.hex())).fetchall()
        return sorted(r[0] for r in rows)

    def load_enrollment_file(self, path: str | Path) -> Enrollment:
        """Add the enrollment record in a JSON file (the CLI's enrollment.json)."""
        return self.add_enrollment(read_enrollment_file(path), source=str(path))

    def lookup(self, kid: bytes) -> KeyInfo | None:
        """Return the key with this kid, or None when no device enrolled it."""
        row = self._db.execute(
            "SELECT device_id, public_key, status, retired_after_seq, not_after "
            "FROM keys WHERE kid = ?", (bytes(kid).hex(),)).fetchone()
        if row is None:
            return None
        return KeyInfo(dev=row[0], public_key=bytes(row[1]), status=row[2],
                       retired_after_seq=row[3], not_after=row[4])

    def has_device(self, dev: str) -> bool:
        """Whether a device with this id is enrolled (so it may be sent an ok:false ack)."""
        return self._db.execute("SELECT 1 FROM devices WHERE device_id = ?",
                                (dev,)).fetchone() is not None

    def revoke(self, kid_or_dev: bytes | str, now: float | None = None) -> int:
        """Revoke one key (bytes or hex kid) or every key of a device; return how many changed.

        Revocation takes effect from this instant: the next lookup() reports it.
        """
        kids = self._kids_of(kid_or_dev)
        if not kids:
            raise RegistryError(f"no enrolled key or device {kid_or_dev!r}")
        when = time.time() if now is None else now
        with self._writing() as db:
            cur = db.executemany(
                "UPDATE keys SET status = 'revoked', revoked_at = ? "
                "WHERE kid = ? AND status != 'revoked'", [(when, k) for k in kids])
        return cur.rowcount

    def _kids_of(self, kid_or_dev: bytes | str) -> list[str]:
        kid = kid_text(kid_or_dev)
        if kid and self._db.execute("SELECT 1 FROM keys WHERE kid = ?", (kid,)).fetchone():
            return [kid]
        if isinstance(kid_or_dev, bytes):
            return []
        rows = self._db.execute("SELECT kid FROM keys WHERE device_id = ?", (kid_or_dev,))
        return [r[0] for r in rows]

    def list(self) -> list[KeyRecord]:
        """Every key with its device, ordered by device and creation time."""
        rows = self._db.execute(
            "SELECT d.device_id, d.site_type, d.location, k.kid, k.status, k.retired_after_seq, "
            "k.not_after, k.revoked_at, k.created FROM keys k JOIN devices d USING (device_id) "
            "ORDER BY d.device_id, k.created, k.kid").fetchall()
        return [KeyRecord(*r) for r in rows]


def open_registry(target: str | Path, *, readonly: bool = False) -> Any:
    """The registry a --registry value names: a postgresql:// URL (PgRegistry) or a file."""
    if str(target).startswith(("postgres://", "postgresql://")):
        from cimedge.cloud_sync.receiver.store import require_psycopg

        require_psycopg()
        from cimedge.cloud_sync.receiver.pgregistry import PgRegistry

        return PgRegistry(str(target), readonly=readonly)
    return Registry(target, readonly=readonly)
