"""The ack the backend sends per message: v1 a plain CBOR map, v2 a signed COSE_Sign1.

v1 (DESIGN §4): ``{"seq": uint, "ok": bool, "err": text?}``, unauthenticated: a v1 gateway
trusts its broker. v2 (DESIGN §4a): signed by a backend ingest key, bound to the device by
the external AAD, naming the acked message by seq and the first 8 bytes of its signature.
"""

from __future__ import annotations

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync import cose
from cimedge.cloud_sync.cbor_limits import dumps_det, loads_untrusted
from cimedge.cloud_sync.reject import Reject

_MAX_SIZE = 1024
_MAX_ERR = 512


class Ack(msgspec.Struct, frozen=True):
    """The backend's answer for one seq; err is the reason code when ok is False."""

    seq: int
    ok: bool
    err: str | None = None


def encode_ack(seq: int, ok: bool, err: str | None = None) -> bytes:
    """Deterministic CBOR {"seq", "ok", "err"?}; seq 0 answers a message whose seq is unknown."""
    if type(seq) is not int or not 0 <= seq < 2**64 or type(ok) is not bool:
        raise ValueError(f"bad ack: seq={seq!r} ok={ok!r}")
    ack: dict[str, object] = {"seq": seq, "ok": ok}
    if err is not None:
        ack["err"] = err[:_MAX_ERR]  # keep within what decode_ack accepts
    return dumps_det(ack)


def decode_ack(data: bytes) -> Ack:
    """Decode an ack from the broker; raise Reject on anything malformed."""
    obj = loads_untrusted(data, max_size=_MAX_SIZE, max_depth=1)
    if type(obj) is not dict or not {"seq", "ok"} <= set(obj) <= {"seq", "ok", "err"}:
        raise Reject("malformed_payload", "ack is not a map of seq, ok and err?")
    seq, ok, err = obj["seq"], obj["ok"], obj.get("err")
    if type(seq) is not int or not 0 <= seq < 2**64:
        raise Reject("malformed_payload", "ack seq is not a uint")
    if type(ok) is not bool:
        raise Reject("malformed_payload", "ack ok is not a bool")
    if "err" in obj and (type(err) is not str or len(err) > _MAX_ERR):
        raise Reject("malformed_payload", f"ack err is not a text of at most {_MAX_ERR}")
    return Ack(seq=seq, ok=ok, err=err)


# -- v2: signed acks (DESIGN §4a) --------------------------------------------------------------
# COSE_Sign1 by a backend ingest key; external_aad = CBOR ["cim", 2, "ack", dev]; payload
# {1: seq, 2: ok, 3: first 8 bytes of the acked message's signature, 4: err when not ok}.
PREFIX_LEN = 8
_SEQ, _OK, _PREFIX, _ERR = 1, 2, 3, 4
MAX_SIGNED_SIZE = 1024


class SignedAck(msgspec.Struct, frozen=True):
    """A v2 ack whose signature verified; ``prefix`` is empty when the nacked message had none."""

    seq: int
    ok: bool
    prefix: bytes
    err: str | None
    kid: bytes


def ack_aad(dev: str) -> bytes:
    """The external AAD that binds a v2 ack to its device: CBOR ["cim", 2, "ack", dev]."""
    return cose.aad("ack", dev)


def signed_ack_payload(seq: int, ok: bool, prefix: bytes, err: str | None = None) -> bytes:
    """The ack's payload map; ``prefix`` 8 bytes (may be empty for a nack without a signature)."""
    if type(seq) is not int or not 0 <= seq < 2**64 or type(ok) is not bool:
        raise ValueError(f"bad ack: seq={seq!r} ok={ok!r}")
    if len(prefix) != PREFIX_LEN and not (prefix == b"" and not ok):
        raise ValueError(f"an ack names the message by {PREFIX_LEN} signature bytes")
    body: dict[int, object] = {_SEQ: seq, _OK: ok, _PREFIX: bytes(prefix)}
    if not ok:
        body[_ERR] = (err or "refused")[:_MAX_ERR]
    return dumps_det(body)


def encode_signed_ack(key: Ed25519PrivateKey, dev: str, seq: int, ok: bool, prefix: bytes,
                      err: str | None = None, kid: bytes | None = None) -> bytes:
    """A v2 ack for ``dev``: COSE_Sign1 by the ingest key ``key`` with the ack's AAD."""
    return cose.sign1(signed_ack_payload(seq, ok, prefix, err), key, kid,
                      external_aad=ack_aad(dev))


def decode_signed_ack_payload(data: bytes) -> tuple[int, bool, bytes, str | None]:
    """(seq, ok, prefix, err) of a verified ack's payload; Reject when it is malformed."""
    obj = loads_untrusted(data, max_size=MAX_SIGNED_SIZE, max_depth=1)
    if type(obj) is not dict or not {_SEQ, _OK, _PREFIX} <= set(obj) <= {_SEQ, _OK, _PREFIX, _ERR}:
        raise Reject("malformed_payload", "ack is not a map of 1 seq, 2 ok, 3 prefix, 4 err?")
    seq, ok, prefix, err = obj[_SEQ], obj[_OK], obj[_PREFIX], obj.get(_ERR)
    if type(seq) is not int or not 0 <= seq < 2**64:
        raise Reject("malformed_payload", "ack seq is not a uint")
    if type(ok) is not bool:
        raise Reject("malformed_payload", "ack ok is not a bool")
    if type(prefix) is not bytes or len(prefix) not in ((PREFIX_LEN,) if ok else (0, PREFIX_LEN)):
        raise Reject("malformed_payload", f"ack prefix is not a bstr of {PREFIX_LEN} bytes")
    if ok == (_ERR in obj):
        raise Reject("malformed_payload", "ack err must be present exactly when ok is false")
    if not ok and (type(err) is not str or len(err) > _MAX_ERR):
        raise Reject("malformed_payload", f"ack err is not a text of at most {_MAX_ERR}")
    return seq, ok, prefix, err
