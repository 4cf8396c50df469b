"""The web view's own state: operator accounts, API tokens, sessions, alarm acknowledgements
and an audit log, in a SQLite file beside the receiver's (one writer at a time, as the
registry: a lock file around every write) or in the receiver's PostgreSQL database.

Secrets are kept only as hashes: passwords with scrypt (salted, memory-hard), tokens and
session ids (32 random bytes each) with SHA-256.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cimedge.edge.errors import CimEdgeError

ROLES = ("read-only", "operator")
SESSION_S = 8 * 3600  # a session lasts one shift, then the operator logs in again
OTP_S = 24 * 3600  # a one-time password must be used within a day
MIN_PASSWORD = 12
VERSION = 1
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 << 20}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS web_schema_version (version INTEGER PRIMARY KEY, applied_ns BIGINT);
CREATE TABLE IF NOT EXISTS web_users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('read-only', 'operator')),
    pw_hash {blob} NOT NULL, pw_salt {blob} NOT NULL, must_change {bool} NOT NULL,
    otp_expires_ns BIGINT, created_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS web_tokens (
    hash {blob} PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('read-only', 'operator')), created_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS web_sessions (
    hash {blob} PRIMARY KEY, name TEXT NOT NULL, csrf TEXT NOT NULL,
    created_ns BIGINT NOT NULL, expires_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS alarm_acks (
    dev TEXT NOT NULL, seq BIGINT NOT NULL, point TEXT NOT NULL, rule TEXT NOT NULL,
    by_name TEXT NOT NULL, at_ns BIGINT NOT NULL, PRIMARY KEY (dev, seq, point, rule)
);
CREATE TABLE IF NOT EXISTS web_audit (
    at_ns BIGINT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL
);
"""


class WebStateError(CimEdgeError):
    """A user or token operation that cannot be done: names it and says why."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: a logged-in user (with the session's CSRF token) or an API token."""

    name: str
    role: str
    csrf: str | None = None  # None for API tokens: no ambient credential, nothing to forge
    via: str = "session"  # "session" | "token"

    @property
    def operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class Ack:
    """An acknowledged alarm: who and when."""

    by: str
    at: float


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise WebStateError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


class WebState:
    """Users, tokens, sessions and acks; every method is blocking (run it on one thread)."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self.postgres = self.target.startswith(("postgres://", "postgresql://"))
        if self.postgres:
            import psycopg

            try:
                self._pg = psycopg.connect(self.target, autocommit=True, connect_timeout=10,
                                           application_name="cim-web")
                with self._pg.transaction():
                    self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (0x63696D5F776562,))
                    self._pg.execute(_SCHEMA.format(blob="bytea", bool="boolean").encode())
                    self._pg.execute("INSERT INTO web_schema_version VALUES (%s, %s) "
                                     "ON CONFLICT DO NOTHING", (VERSION, time.time_ns()))
            except psycopg.Error as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise WebStateError(f"web state in PostgreSQL: {first}") from None
            return
        self.path = Path(target)
        try:
            with self._locked():
                self._db = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA busy_timeout=5000")
                self._db.executescript(_SCHEMA.format(blob="BLOB", bool="INTEGER"))
                self._db.execute("INSERT OR IGNORE INTO web_schema_version VALUES (?, ?)",
                                 (VERSION, time.time_ns()))
            self.path.chmod(0o600)  # password hashes and session ids: the owner only
        except sqlite3.Error as e:
            raise WebStateError(f"{self.path}: cannot open the web state: {e}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writing connection at a time (SQLite 3.40.1)
            yield

    def _q(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.postgres:
            cur = self._pg.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []
        return self._db.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        if self.postgres:
            with self._pg.transaction():
                yield
            return
        with self._locked(), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            yield

    def close(self) -> None:
        if self.postgres:
            self._pg.close()
        else:
            with self._locked():
                self._db.close()

    # -- accounts ---------------------------------------------------------------------

    def add_user(self, name: str, role: str, now: float | None = None) -> str:
        """Create an account; return its one-time password (shown once, kept as a hash)."""
        check_role(role)
        if not name or len(name) > 64 or not name.isprintable():  # noqa: PLR2004
            raise WebStateError("a user name is 1 to 64 printable characters")
        with self._write():
            if self._q("SELECT 1 FROM web_users WHERE name = ?", (name,)):
                raise WebStateError(f"user {name!r} exists; `receiver user reset` gives it "
                                    "a new one-time password")
            otp = self._set_otp(name, role, now, insert=True)
            self._audit(name, "user-added", role)
        return otp

    def reset_user(self, name: str, now: float | None = None) -> str:
        """A new one-time password for an account (its sessions end); return it."""
        with self._write():
            rows = self._q("SELECT role FROM web_users WHERE name = ?", (name,))
            if not rows:
                raise WebStateError(f"no user {name!r}")
            otp = self._set_otp(name, rows[0][0], now, insert=False)
            self._q("DELETE FROM web_sessions WHERE name = ?", (name,))
            self._audit(name, "user-reset", "")
        return otp

    def _set_otp(self, name: str, role: str, now: float | None, *, insert: bool) -> str:
        otp = secrets.token_urlsafe(12)
        salt = secrets.token_bytes(16)
        now_ns = int((time.time() if now is None else now) * 1e9)
        row = (_scrypt(otp, salt), salt, True, now_ns + OTP_S * 10**9)
        if insert:
            self._q("INSERT INTO web_users VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, role, *row, now_ns))
        else:
            self._q("UPDATE web_users SET pw_hash = ?, pw_salt = ?, must_change = ?, "
                    "otp_expires_ns = ? WHERE name = ?", (*row, name))
        return otp

    def remove(self, name: str) -> str:
        """Remove a user (and its sessions) or a token; return which it was."""
        with self._write():
            if self._q("DELETE FROM web_users WHERE name = ? RETURNING name", (name,)):
                self._q("DELETE FROM web_sessions WHERE name = ?", (name,))
                kind = "user"
            elif self._q("DELETE FROM web_tokens WHERE name = ? RETURNING name", (name,)):
                kind = "token"
            else:
                raise WebStateError(f"no user or token {name!r}")
            self._audit(name, f"{kind}-removed", "")
        return kind

    def add_token(self, name: str, role: str, now: float | None = None) -> str:
        """Create an API token (for scripts and Prometheus); return it (shown once)."""
        check_role(role)
        if not name or len(name) > 64 or not name.isprintable():  # noqa: PLR2004
            raise WebStateError("a token name is 1 to 64 printable characters")
        token = "cimtok_" + secrets.token_urlsafe(32)
        with self._write():
            if self._q("SELECT 1 FROM web_tokens WHERE name = ?", (name,)) or \
                    self._q("SELECT 1 FROM web_users WHERE name = ?", (name,)):
                raise WebStateError(f"{name!r} is taken by a user or token")
            self._q("INSERT INTO web_tokens VALUES (?, ?, ?, ?)",
                    (_digest(token), name, role, int((time.time() if now is None else now) * 1e9)))
            self._audit(name, "token-added", role)
        return token

    def accounts(self) -> list[tuple[str, str, str, bool]]:
        """(name, kind, role, must change password) of every user and token."""
        users = [(n, "user", r, bool(m)) for n, r, m in self._q(
            "SELECT name, role, must_change FROM web_users ORDER BY name")]
        tokens = [(n, "token", r, False) for n, r in self._q(
            "SELECT name, role FROM web_tokens ORDER BY name")]
        return users + tokens

    # -- authentication ---------------------------------------------------------------

    def login(self, name: str, password: str, new_password: str | None,
              now: float | None = None) -> tuple[str, Principal]:
        """Check a password; return (session id for the cookie, principal).

        Raises WebStateError("password_change_required") when the one-time password was
        right but no new password came with it, and ("bad_credentials") otherwise.
        """
        now = time.time() if now is None else now
        rows = self._q("SELECT role, pw_hash, pw_salt, must_change, otp_expires_ns "
                       "FROM web_users WHERE name = ?", (name,))
        salt = bytes(rows[0][2]) if rows else b"\0" * 16
        good = hmac.compare_digest(_scrypt(password, salt), bytes(rows[0][1]) if rows else b"")
        if not rows or not good:
            raise WebStateError("bad_credentials")
        role, must_change, otp_expires = rows[0][0], bool(rows[0][3]), rows[0][4]
        if must_change:
            if otp_expires is not None and now * 1e9 > otp_expires:
                raise WebStateError("bad_credentials")  # an old one-time password: reset it
            if not new_password:
                raise WebStateError("password_change_required")
            if len(new_password) < MIN_PASSWORD or new_password == password:
                raise WebStateError("weak_password")
        session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now_ns = int(now * 1e9)
        with self._write():
            if must_change:
                salt = secrets.token_bytes(16)
                self._q("UPDATE web_users SET pw_hash = ?, pw_salt = ?, must_change = ?, "
                        "otp_expires_ns = NULL WHERE name = ?",
                        (_scrypt(new_password or "", salt), salt, False, name))
            self._q("DELETE FROM web_sessions WHERE expires_ns < ?", (now_ns,))
            self._q("INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?)",
                    (_digest(session), name, csrf, now_ns, now_ns + SESSION_S * 10**9))
            self._audit(name, "login", "password set" if must_change else "")
        return session, Principal(name, role, csrf)

    def session(self, session: str, now: float | None = None) -> Principal | None:
        """The principal of a live session id, or None."""
        now_ns = int((time.time() if now is None else now) * 1e9)
        rows = self._q("SELECT s.name, u.role, s.csrf FROM web_sessions s JOIN web_users u "
                       "ON u.name = s.name WHERE s.hash = ? AND s.expires_ns > ?",
                       (_digest(session), now_ns))
        return Principal(*rows[0]) if rows else None

    def token(self, token: str) -> Principal | None:
        """The principal of an API token, or None."""
        rows = self._q("SELECT name, role FROM web_tokens WHERE hash = ?", (_digest(token),))
        return Principal(rows[0][0], rows[0][1], None, "token") if rows else None

    def logout(self, session: str) -> None:
        with self._write():
            self._q("DELETE FROM web_sessions WHERE hash = ?", (_digest(session),))

    # -- alarms -----------------------------------------------------------------------

    def ack_alarm(self, key: tuple[str, int, str, str], by: str,
                  now: float | None = None) -> Ack:
        """Record who acknowledged the alarm (dev, seq, point, rule) and when; the first
        acknowledgement stands."""
        at_ns = int((time.time() if now is None else now) * 1e9)
        with self._write():
            self._q("INSERT INTO alarm_acks VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (*key, by, at_ns))
            self._audit(by, "alarm-ack", "/".join(map(str, key)))
            row = self._q("SELECT by_name, at_ns FROM alarm_acks WHERE dev = ? AND seq = ? "
                          "AND point = ? AND rule = ?", key)[0]
        return Ack(row[0], int(row[1]) / 1e9)

    def acks(self, dev: str | None = None) -> dict[tuple[str, int, str, str], Ack]:
        rows = self._q("SELECT dev, seq, point, rule, by_name, at_ns FROM alarm_acks "
                       "WHERE ? IS NULL OR dev = ?" if not self.postgres else
                       "SELECT dev, seq, point, rule, by_name, at_ns FROM alarm_acks "
                       "WHERE ?::text IS NULL OR dev = ?", (dev, dev))
        return {(d, int(s), p, r): Ack(b, int(a) / 1e9) for d, s, p, r, b, a in rows}

    def _audit(self, name: str, action: str, detail: str) -> None:
        self._q("INSERT INTO web_audit VALUES (?, ?, ?, ?)",
                (time.time_ns(), name, action, detail[:500]))
