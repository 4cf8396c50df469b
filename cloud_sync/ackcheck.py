"""Which acks a v2 gateway believes: signed by a backend ingest key, for this device (DESIGN §4a).

An ack deletes buffered data, so it must be as trustworthy as a batch. ``AckCheck.check``
returns a verified ack or raises ``AckRefused`` with one of ``KINDS``; the uplink then
deletes a batch only when the ack's seq names a batch it holds and the signature prefix
matches that batch (``wrong_prefix`` otherwise). A refused ack changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cimedge.cloud_sync import cose
from cimedge.cloud_sync.ack import MAX_SIGNED_SIZE, SignedAck, ack_aad, decode_signed_ack_payload
from cimedge.cloud_sync.backend_keys import BackendFile
from cimedge.cloud_sync.cbor_limits import loads_untrusted
from cimedge.cloud_sync.reject import Reject

# unsigned: a plain CBOR map (a v1 ack, or anyone's forgery); malformed: neither a COSE_Sign1
# nor a map, or a signed payload that is not an ack; unknown_key: signed by a key that is
# not an ingest key of backend.json; expired_key: by one past its not_after; bad_signature:
# forged, or signed for another device (the signature binds the device id through the
# AAD); wrong_prefix: a valid ack whose signature prefix is not that of the batch held
# under its seq.
KINDS = ("unsigned", "malformed", "unknown_key", "expired_key", "bad_signature", "wrong_prefix")
ROLE = "ingest"


class AckRefused(Exception):
    """An ack the gateway does not believe; ``kind`` is one of KINDS."""

    def __init__(self, kind: str, detail: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown ack refusal {kind!r}")
        self.kind, self.detail = kind, detail
        super().__init__(f"{kind}: {detail}")


class AckCheck:
    """Verifies v2 acks for one device against the ingest keys of a backend.json."""

    def __init__(self, dev: str, keys: BackendFile,
                 clock: Callable[[], float] = time.time) -> None:
        self.dev, self.keys, self.clock = dev, keys, clock
        self.aad = ack_aad(dev)

    def check(self, data: bytes) -> SignedAck:
        """The ack in ``data`` if a valid ingest key signed it for this device."""
        try:
            msg = cose.parse_sign1(data, max_size=MAX_SIGNED_SIZE)
        except Reject as e:
            if _is_map(data):
                raise AckRefused("unsigned", "a plain CBOR map, not a signed ack") from None
            raise AckRefused("malformed", str(e)) from None
        self.keys.refresh()  # one stat at most a second: backend.json may have been replaced
        key = self.keys.keys.find(msg.kid, ROLE)
        if key is None:
            raise AckRefused("unknown_key", f"kid {msg.kid.hex()} is not an ingest key of "
                                            f"{self.keys.path}")
        if not key.valid(self.clock()):
            raise AckRefused("expired_key", f"ingest key {msg.kid.hex()} is past its not_after")
        if not cose.verify1(msg, key.public_key, external_aad=self.aad):
            raise AckRefused("bad_signature", f"does not verify under {msg.kid.hex()} for "
                                              f"{self.dev}")
        try:
            seq, ok, prefix, err = decode_signed_ack_payload(msg.payload)
        except Reject as e:
            raise AckRefused("malformed", str(e)) from None
        return SignedAck(seq=seq, ok=ok, prefix=prefix, err=err, kid=msg.kid)


def _is_map(data: bytes) -> bool:
    try:
        return type(loads_untrusted(data, max_size=MAX_SIGNED_SIZE, max_depth=2)) is dict
    except Reject:
        return False
