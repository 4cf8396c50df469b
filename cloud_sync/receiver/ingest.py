"""The receiver's ingest keys: it signs every ack to a v2 device with one (DESIGN §4a).

A receiver takes one or more ``--ingest-key`` files and signs with the first that is still
valid: with ``--backend backend.json`` each must be listed there as an ``ingest`` key, and
its ``not_after`` from that file says until when it is used, so a receiver given the old
and the new key switches by itself when the old one ends. Receivers that scale out share
one key file or each use their own, all listed in the gateways' backend.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync import cose
from cimedge.cloud_sync.ack import PREFIX_LEN, encode_signed_ack
from cimedge.cloud_sync.backend_keys import BackendFileError, load, load_private_key, rfc3339
from cimedge.cloud_sync.payload2 import peek_contract
from cimedge.cloud_sync.reject import Reject

log = logging.getLogger(__name__)


class IngestKey:
    """One private ingest key and, when backend.json said so, its end of validity."""

    def __init__(self, key: Ed25519PrivateKey, not_after: float | None = None) -> None:
        self.key, self.not_after = key, not_after
        self.kid = cose.kid_for(key.public_key().public_bytes_raw())


class IngestKeys:
    """Signs v2 acks with the first key still valid (the last one when all have ended)."""

    def __init__(self, keys: Sequence[IngestKey], clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("at least one ingest key")
        self.keys, self.clock = list(keys), clock
        self._warned: bytes | None = None

    @classmethod
    def load(cls, files: Sequence[Path], backend: Path | None = None) -> IngestKeys:
        """Read the key files (0600); with ``backend``, each must be an ingest key there."""
        listed = load(backend) if backend is not None else None
        keys = []
        for path in files:
            key = IngestKey(load_private_key(path))
            if listed is not None:
                entry = listed.find(key.kid, "ingest")
                if entry is None:
                    raise BackendFileError(path, f"its kid {key.kid.hex()} is not an ingest key "
                                           f"of {backend}: gateways would drop every ack")
                key.not_after = entry.not_after
            keys.append(key)
        return cls(keys)

    def current(self) -> IngestKey:
        now = self.clock()
        for key in self.keys:
            if key.not_after is None or now <= key.not_after:
                return key
        key = self.keys[-1]
        if self._warned != key.kid:
            self._warned = key.kid
            log.error("every ingest key has ended (the last at %s): gateways refuse these "
                      "acks as expired_key and keep their data",
                      rfc3339(key.not_after or 0))
        return key

    def sign(self, dev: str, seq: int, ok: bool, prefix: bytes, err: str | None) -> bytes:
        key = self.current()
        return encode_signed_ack(key.key, dev, seq, ok, prefix, err, key.kid)


def sniff(data: bytes, max_size: int) -> tuple[int | None, bytes]:
    """(contract, signature prefix) of a refused message, as far as they can be read.

    The ack to a refused message is signed when the message is v2: the contract is read
    from the payload's first bytes as the verifier does (payload2.peek_contract); None
    when the message is not even a COSE_Sign1.
    """
    try:
        msg = cose.parse_sign1(data, max_size=max_size)
    except Reject:
        return None, b""
    return peek_contract(msg.payload), msg.signature[:PREFIX_LEN]
