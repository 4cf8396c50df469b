"""The backend's check chain for one uplink message (DESIGN §5): bytes in, Verified or Reject."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec

from cimedge.cloud_sync import payload2
from cimedge.cloud_sync.cbor_limits import loads_untrusted
from cimedge.cloud_sync.cose import Sign1, aad, parse_sign1, verify1
from cimedge.cloud_sync.inflate import MAX_INFLATED, MAX_RATIO
from cimedge.cloud_sync.payload2 import contract_of, peek_contract
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.senml import PAYLOAD_DEPTH, Record, decode_map
from cimedge.edge.model import Event


class KeyInfo(msgspec.Struct, frozen=True):
    """A registry entry for one kid; times are epoch seconds."""

    dev: str
    public_key: bytes  # raw 32-byte Ed25519
    status: str  # "active" | "retired" | "revoked"
    retired_after_seq: int | None = None  # a retired key signs batches up to this seq
    not_after: float | None = None


SIG_PREFIX = 8  # bytes of the signature a v2 ack names (DESIGN.md 4a)


class Verified(msgspec.Struct, frozen=True):
    """A message that passed every check, ready to store once per (dev, seq).

    ``contract`` is the payload's version (1 or 2); ``cose`` is the parsed COSE_Sign1
    (protected header bstr, kid, payload bstr, signature) exactly as received, and
    ``signature`` its 64-byte Ed25519 signature, whose first 8 bytes (``sig_prefix``) a
    signed ack names.
    """

    dev: str
    seq: int
    ts: float
    kid: bytes
    kind: str  # "batch" | "event"
    records: list[Record]
    events: list[Event]
    digest: bytes  # SHA-256 of the whole message: same (dev, seq), other digest = conflict
    contract: int = 1
    signature: bytes = b""
    cose: Sign1 | None = None
    size: int = 0  # bytes received plus bytes inflated: what holding it costs, roughly

    @property
    def sig_prefix(self) -> bytes:
        """The first 8 bytes of the signature: what a v2 ack carries under key 3."""
        return self.signature[:SIG_PREFIX]


def verify_message(topic_dev: str, kind: str, data: bytes,
                   lookup: Callable[[bytes], KeyInfo | None], *, now: float,
                   max_size: int = 1 << 20, max_inflated: int = MAX_INFLATED,
                   max_ratio: int = MAX_RATIO) -> Verified:
    """Run the checks in DESIGN §5 order; every Reject carries dev=topic_dev and seq if known.

    Order: size, COSE structure, kid known, not revoked, not expired, signature (v2: with
    the external AAD rebuilt from the topic), payload head, dev equal to the topic's and the
    key's, retired key within its seq, then the records (a v2 packz or evtz is inflated only
    here, within ``max_inflated`` bytes and ``max_ratio`` times its size). The key checks
    come before the signature so an unknown signer costs no verification, and the signature
    before the payload so unsigned bytes are never decoded or inflated. The contract, whose
    AAD the signature needs, is read from the payload map's first key without decoding it
    (payload2.peek_contract); once the signature holds, the whole map, decoded with limits,
    must say the same (v1: text keys with "v"; v2: integer key 0 = 2).
    """
    if kind not in ("batch", "event"):
        raise ValueError(f"kind must be 'batch' or 'event', not {kind!r}")
    try:
        msg = parse_sign1(data, max_size=max_size)
        contract = peek_contract(msg.payload)
        key = lookup(msg.kid)
        if key is None:
            raise Reject("unknown_kid", f"kid {msg.kid.hex()} is not enrolled")
        if key.status not in ("active", "retired"):  # revoked, or unknown: fail closed
            raise Reject("revoked_kid", f"kid {msg.kid.hex()} is {key.status}")
        if key.not_after is not None and key.not_after < now:
            raise Reject("expired_kid", f"kid {msg.kid.hex()} expired at {key.not_after}")
        if not verify1(msg, key.public_key, external_aad=aad(kind, topic_dev, contract)):
            raise Reject("bad_signature", f"signature does not verify under {msg.kid.hex()}"
                         + (f" for a {kind} of {topic_dev}" if contract == 2 else ""))  # noqa: PLR2004

        def key_policy(dev: str, seq: int) -> None:
            if dev != topic_dev or dev != key.dev:
                raise Reject("dev_mismatch", f"payload dev {dev!r}, topic {topic_dev!r}, "
                             f"key of {key.dev!r}")
            if key.status == "retired" and seq > (key.retired_after_seq or 0):
                raise Reject("retired_kid", f"kid {msg.kid.hex()} retired after seq "
                             f"{key.retired_after_seq}")

        obj = loads_untrusted(msg.payload, max_size=max_size, max_depth=PAYLOAD_DEPTH)
        if contract_of(obj) != contract:
            raise Reject("malformed_payload", "a v2 payload's first key must be 0 "
                         "(deterministic encoding)")
        if contract == 1:
            payload = decode_map(obj, kind, precheck=key_policy)
        else:
            payload = payload2.decode_map(obj, kind, topic_dev, precheck=key_policy,
                                          max_inflated=max_inflated, max_ratio=max_ratio,
                                          ts=now)
    except Reject as e:
        e.dev = topic_dev
        raise
    return Verified(dev=payload.dev, seq=payload.seq, ts=payload.ts, kid=msg.kid, kind=kind,
                    records=payload.records, events=payload.events,
                    digest=hashlib.sha256(data).digest(), contract=contract,
                    signature=msg.signature, cose=msg, size=len(data) + payload.inflated)
