"""The ack the backend sends per batch: {"seq": uint, "ok": bool, "err": text?} in CBOR."""

from __future__ import annotations

import msgspec

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
