"""backend.json: the backend's public keys a gateway trusts, by role (DESIGN §4a), and their files.

``{"v": 1, "keys": [{"kid", "public_key", "role", "not_after"?}]}``: ``kid`` is the 16 hex
digits of the 8-byte kid (SHA-256 prefix of the raw public key), ``public_key`` base64 of the
raw 32-byte Ed25519 key, ``role`` ``"ingest"`` (signs acks) or ``"operations"`` (signs
commands), ``not_after`` an RFC 3339 time after which the key is no longer believed. A role
may list several keys, so a new key can be trusted before the old one goes (rollover).

The file holds no secret. The private keys are Ed25519 PEM files, mode 0600, kept by the
backend (``cimedge backend keygen``); a receiver signs acks with its ``ingest`` key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import re
import stat
import time
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync.cose import kid_for
from cimedge.edge.errors import CimEdgeError

log = logging.getLogger(__name__)

ROLES = ("ingest", "operations")
FILE_NAME = "backend.json"
_MAX_FILE = 64 * 1024
_MAX_KEYS = 64
_KID_HEX = re.compile(r"[0-9a-f]{16}")
_FIELDS = {"kid", "public_key", "role", "not_after"}


class BackendFileError(CimEdgeError):
    """backend.json, or a backend key file, that cannot be used: names the file and why."""

    def __init__(self, source: str | Path, reason: str) -> None:
        self.source, self.reason = str(source), reason
        super().__init__(f"{source}: {reason}")


class BackendKey(msgspec.Struct, frozen=True):
    """One backend public key; not_after in epoch seconds."""

    kid: bytes
    public_key: bytes  # raw 32-byte Ed25519
    role: str
    not_after: float | None = None

    def valid(self, now: float) -> bool:
        return self.not_after is None or now <= self.not_after


class BackendKeys(msgspec.Struct, frozen=True):
    """The keys of one backend.json, in file order."""

    keys: tuple[BackendKey, ...] = ()

    def of(self, role: str) -> list[BackendKey]:
        return [k for k in self.keys if k.role == role]

    def find(self, kid: bytes, role: str) -> BackendKey | None:
        return next((k for k in self.keys if k.kid == kid and k.role == role), None)


def rfc3339(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def parse_time(source: str | Path, text: object) -> float:
    """An RFC 3339 time with a UTC offset, as epoch seconds."""
    if not isinstance(text, str):
        raise BackendFileError(source, f"not_after must be an RFC 3339 time, got {text!r}")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BackendFileError(source, f"not_after {text!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise BackendFileError(source, f"not_after {text!r} has no UTC offset (add Z)")
    return when.timestamp()


def parse(obj: object, source: str | Path = FILE_NAME) -> BackendKeys:
    """Check every field of a decoded backend.json; BackendFileError names the first bad one."""
    if not isinstance(obj, dict) or set(obj) != {"v", "keys"}:
        raise BackendFileError(source, 'must be a JSON object {"v": 1, "keys": [...]}')
    if type(obj["v"]) is not int or obj["v"] != 1:
        raise BackendFileError(source, f"v must be 1, got {obj['v']!r}")
    entries = obj["keys"]
    if not isinstance(entries, list) or len(entries) > _MAX_KEYS:
        raise BackendFileError(source, f"keys must be a list of at most {_MAX_KEYS} keys")
    keys: list[BackendKey] = []
    for i, entry in enumerate(entries):
        key = _entry(f"{source}: keys[{i}]", entry)
        if any(k.kid == key.kid for k in keys):
            raise BackendFileError(source, f"keys[{i}]: kid {key.kid.hex()} is listed twice "
                                           "(a key has one role)")
        keys.append(key)
    return BackendKeys(tuple(keys))


def _entry(where: str, entry: object) -> BackendKey:
    if not isinstance(entry, dict):
        raise BackendFileError(where, "must be an object")
    unknown = sorted(map(str, set(entry) - _FIELDS))
    if unknown:
        raise BackendFileError(where, f"unknown field {unknown[0]!r}")
    missing = sorted({"kid", "public_key", "role"} - set(entry))
    if missing:
        raise BackendFileError(where, f"{missing[0]} is missing")
    role = entry["role"]
    if role not in ROLES:
        raise BackendFileError(where, f"role {role!r} is not one of {', '.join(ROLES)}")
    pk_text, kid_text = entry["public_key"], entry["kid"]
    try:
        public_key = base64.b64decode(pk_text, validate=True) if isinstance(pk_text, str) else b""
    except (binascii.Error, ValueError):
        public_key = b""
    if len(public_key) != 32:  # noqa: PLR2004 - raw Ed25519 public key
        raise BackendFileError(where, "public_key must be base64 of a raw 32-byte Ed25519 key")
    if not isinstance(kid_text, str) or not _KID_HEX.fullmatch(kid_text):
        raise BackendFileError(where, f"kid {kid_text!r} is not 16 lower-case hex digits")
    if bytes.fromhex(kid_text) != kid_for(public_key):
        raise BackendFileError(where, f"kid {kid_text} is not the kid of this public_key "
                                      f"(expected {kid_for(public_key).hex()})")
    not_after = parse_time(where, entry["not_after"]) if "not_after" in entry else None
    return BackendKey(bytes.fromhex(kid_text), public_key, role, not_after)


def loads(text: str | bytes, source: str | Path = FILE_NAME) -> BackendKeys:
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise BackendFileError(source, f"not JSON: {e}") from None
    return parse(obj, source)


def load(path: Path) -> BackendKeys:
    """Read and check a backend.json."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        raise BackendFileError(path, f"cannot read: {e.strerror or e}") from None
    if len(data) > _MAX_FILE:
        raise BackendFileError(path, f"larger than {_MAX_FILE} bytes")
    return loads(data, path)


def dumps(keys: BackendKeys) -> str:
    """The JSON text of a backend.json, one key per line for readable diffs."""
    lines = []
    for k in keys.keys:
        entry: dict[str, str] = {"kid": k.kid.hex(),
                                 "public_key": base64.b64encode(k.public_key).decode(),
                                 "role": k.role}
        if k.not_after is not None:
            entry["not_after"] = rfc3339(k.not_after)
        lines.append("  " + json.dumps(entry))
    return '{"v": 1, "keys": [\n' + ",\n".join(lines) + "\n]}\n" if lines else \
        '{"v": 1, "keys": []}\n'


def write(path: Path, keys: BackendKeys) -> None:
    """Write backend.json atomically (0644: public keys only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(dumps(keys), encoding="utf-8")
    os.chmod(tmp, 0o644)  # noqa: PTH101
    os.replace(tmp, path)


def entry_for(key: Ed25519PrivateKey, role: str, not_after: float | None = None) -> BackendKey:
    raw = key.public_key().public_bytes_raw()
    return BackendKey(kid_for(raw), raw, role, not_after)


# -- private key files -----------------------------------------------------------------------
def write_private_key(path: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """A new Ed25519 key from the OS's CSPRNG in a PEM file only its owner can read."""
    if path.exists() and not force:
        raise BackendFileError(path, "already holds a key; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask or a pre-existing file must not widen it
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a backend private key, refusing one that others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise BackendFileError(path, f"cannot read the key: {e.strerror or e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BackendFileError(path, f"is readable by others (mode {stat.S_IMODE(mode):o}); "
                                     f"run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BackendFileError(path, "is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BackendFileError(path, "is not an Ed25519 key")
    return key


class BackendFile:
    """A backend.json that may change while the gateway runs; re-read when its file changes.

    ``keys`` is the last good content. ``refresh()`` (cheap: one stat, at most once per
    ``min_interval`` seconds; called on every ack and command) re-reads the file when its
    size, mtime or inode changed, so a key added or dropped takes effect within a second; a
    file that became invalid keeps the old keys and sets ``error``. A missing file is an
    empty key set, so a gateway still polls, stores and sends while it waits for one.
    """

    def __init__(self, path: Path, *, min_interval: float = 1.0) -> None:
        self.path, self.min_interval = path, min_interval
        self.keys = BackendKeys()
        self.error = ""
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -float("inf")
        self._loaded = False
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed; True when the keys changed."""
        now = time.monotonic()
        if not force and now - self._checked < self.min_interval:
            return False
        self._checked = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            stamp = None
        except OSError as e:
            self.error = f"{self.path}: {e.strerror or e}"
            return False
        else:
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        old = self.keys
        if stamp is None:
            self.keys, self.error = BackendKeys(), f"{self.path} does not exist"
        else:
            try:
                self.keys, self.error = load(self.path), ""
            except BackendFileError as e:
                self.error = str(e)
                log.error("keeping the previous backend keys: %s", e)  # noqa: TRY400
        if self.keys != old:  # a change while running is worth a line; the first load less
            log.log(logging.WARNING if self._loaded else logging.INFO, "backend keys from %s: %s",
                    self.path, describe(self.keys))
        self._loaded = True
        return self.keys != old


def describe(keys: BackendKeys) -> str:
    """'ingest 1a2b.., 3c4d..; operations 5e6f..' for logs and doctor."""
    parts = []
    for role in ROLES:
        kids = [k.kid.hex() + (f" (until {rfc3339(k.not_after)})" if k.not_after else "")
                for k in keys.of(role)]
        parts.append(f"{role} {', '.join(kids) if kids else 'none'}")
    return "; ".join(parts)
