"""Signed commands from the backend on ``cim/v1/{dev}/cmd``: verify, refuse replays, say what to do.

A command is a COSE_Sign1 (DESIGN.md section 4) signed with one of the backend's
``operations`` keys, which the gateway's backend.json lists (DESIGN §4a; more than one, so a
key can roll over; a key past its ``not_after`` is refused). The old ``[commands]
backend_key_file`` is still read, with a deprecation warning, as one more operations key.
Its payload is a CBOR map with text keys:

======== ========= ==============================================================
key      type      meaning
======== ========= ==============================================================
v        uint      1
dev      text      the device id; a command for another device is refused
nonce    bstr      8-32 random bytes, never accepted twice
exp      number    expiry, seconds since the Unix epoch; at most max_ttl_s ahead
op       text      "set" (a rule's set point), "ack" (an alarm), "override" (an action)
target   text      the rule or action name
key      text      op "set": which setting (one of edge.rules.kinds.SETTABLE)
value    any       op "set": the new value; op "override": "on", "off" or "auto"
======== ========= ==============================================================

Checks run in this order, and the first failure refuses the command: size and structure,
key id, signature, payload types, device, expiry, nonce. Nonces are kept (persisted with
the command's event) until their expiry, which ``max_ttl_s`` bounds, so a replay is
refused across restarts too. A gateway whose wall clock is wrong refuses valid commands
as expired or too far ahead: the refusal event says which.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cimedge.cloud_sync import cose
from cimedge.cloud_sync.backend_keys import BackendFile
from cimedge.cloud_sync.cbor_limits import loads_untrusted
from cimedge.cloud_sync.reject import Reject
from cimedge.edge.errors import ConfigError

log = logging.getLogger(__name__)

MAX_SIZE = 4096
NONCE_PREFIX = "nonce:"
_NS = 1_000_000_000
Op = Literal["set", "ack", "override"]


class CommandsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``[commands]`` table: whom to trust, for how long a command may live, what it may do."""

    backend_key_file: str = ""  # deprecated: backend.json's operations keys replace it
    max_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] = 3600.0
    allow: list[Op] = msgspec.field(default_factory=lambda: ["set", "ack", "override"])


class Command(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A command payload after every type check."""

    v: Literal[1]
    dev: str
    nonce: Annotated[bytes, msgspec.Meta(min_length=8, max_length=32)]
    exp: int | float
    op: Op
    target: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    key: Annotated[str, msgspec.Meta(max_length=64)] = ""
    value: bool | int | float | Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Refused(Exception):
    """A command that must not apply; ``reason`` is one word, ``detail`` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail[:300]  # it goes into an event's text
        super().__init__(f"{reason}: {self.detail}" if detail else reason)


def load_public_key(path: Path) -> bytes:
    """The raw 32-byte Ed25519 key from a PEM file or a file holding its base64."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read the backend key: {e.strerror}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(str(path), "", "not an Ed25519 public key in PEM")
        return key.public_bytes_raw()
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(str(path), "", "not a PEM public key nor base64 of 32 raw bytes")
    return raw


# The operations key that signed a command: kid and the time (s) -> raw public key, or
# Refused ("unknown_key", "expired_key").
KeyLookup = Callable[[bytes, float], bytes]


def operations_keys(backend: BackendFile, legacy_key_file: Path | None = None) -> KeyLookup:
    """The operations keys of backend.json (re-read when it changes), plus a deprecated
    ``backend_key_file`` when the config still names one."""
    legacy: dict[bytes, bytes] = {}
    if legacy_key_file is not None:
        raw = load_public_key(legacy_key_file)
        legacy[cose.kid_for(raw)] = raw
        log.warning("[commands] backend_key_file is deprecated: list the key in %s as an "
                    "operations key (cimedge backend add --role operations %s) and remove "
                    "the setting; it is still trusted for now", backend.path, legacy_key_file)

    def lookup(kid: bytes, now: float) -> bytes:
        backend.refresh()  # one stat at most a second: a key dropped from the file is dropped
        key = backend.keys.find(kid, "operations")
        if key is not None:
            if not key.valid(now):
                raise Refused("expired_key", f"operations key {kid.hex()} is past its not_after")
            return key.public_key
        if kid in legacy:
            return legacy[kid]
        raise Refused("unknown_key", f"kid {kid.hex()} is not an operations key of "
                                     f"{backend.path}")
    return lookup


class Commands:
    """Checks commands for one device; remembers the nonces it accepted until they expire."""

    def __init__(self, cfg: CommandsConfig, keys: KeyLookup, dev: str,
                 saved: dict[str, bytes] | None = None) -> None:
        self.cfg, self.keys, self.dev = cfg, keys, dev
        self.nonces: dict[bytes, int] = {}  # nonce -> expiry ns
        for key, value in (saved or {}).items():
            if key.startswith(NONCE_PREFIX):
                self.nonces[bytes.fromhex(key[len(NONCE_PREFIX):])] = int.from_bytes(value, "big")

    def check(self, data: bytes, now_ns: int) -> Command:
        """The command in ``data`` if it may apply now; Refused otherwise."""
        try:
            msg = cose.parse_sign1(data, max_size=MAX_SIZE)
        except Reject as e:
            raise Refused("malformed", str(e)) from None
        public_key = self.keys(msg.kid, now_ns / _NS)
        if not cose.verify1(msg, public_key):
            raise Refused("bad_signature")
        try:
            cmd = msgspec.convert(loads_untrusted(msg.payload, max_size=MAX_SIZE, max_depth=1),
                                  Command, strict=True)
        except (Reject, msgspec.ValidationError) as e:
            raise Refused("malformed", str(e)) from None
        if cmd.dev != self.dev:
            raise Refused("wrong_device", f"for {cmd.dev[:64]!r}")
        exp_ns = int(cmd.exp * _NS)
        if exp_ns <= now_ns:
            raise Refused("expired", f"{(now_ns - exp_ns) / _NS:.0f} s ago")
        if exp_ns - now_ns > self.cfg.max_ttl_s * _NS:
            raise Refused("too_far", f"expires in {(exp_ns - now_ns) / _NS:.0f} s, more than "
                                     f"max_ttl_s {self.cfg.max_ttl_s:g}")
        if self.nonces.get(cmd.nonce, 0) > now_ns:
            raise Refused("replayed", f"nonce {cmd.nonce.hex()} already used")
        if cmd.op not in self.cfg.allow:
            raise Refused("not_allowed", f"op {cmd.op} is not in [commands] allow")
        return cmd

    def accept(self, cmd: Command, now_ns: int) -> dict[str, bytes | None]:
        """Remember the command's nonce; the state rows to commit (expired nonces deleted)."""
        out: dict[str, bytes | None] = {}
        for nonce, exp in list(self.nonces.items()):
            if exp <= now_ns:
                del self.nonces[nonce]
                out[NONCE_PREFIX + nonce.hex()] = None
        exp_ns = int(cmd.exp * _NS)
        self.nonces[cmd.nonce] = exp_ns
        out[NONCE_PREFIX + cmd.nonce.hex()] = exp_ns.to_bytes(8, "big")
        return out


def make(key: object, dev: str, op: Op, target: str, *, exp: float, nonce: bytes,
         set_key: str = "", value: object = None) -> bytes:
    """A signed command (the backend's side; tests and tools use it)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cimedge.cloud_sync.cbor_limits import dumps_det

    assert isinstance(key, Ed25519PrivateKey)
    body: dict[str, object] = {"v": 1, "dev": dev, "nonce": nonce, "exp": exp, "op": op,
                               "target": target}
    if set_key:
        body["key"] = set_key
    if value is not None:
        body["value"] = value
    return cose.sign1(dumps_det(body), key)
