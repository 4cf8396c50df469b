"""Acks: exact bytes, round trip, and refusal of anything malformed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.cloud_sync.ack import Ack, decode_ack, encode_ack
from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.reject import Reject


def test_exact_bytes() -> None:
    # Bytewise key order: "ok" (62..) < "err" (63 65..) < "seq" (63 73..).
    assert encode_ack(5, True).hex() == "a2" "626f6b" "f5" "63736571" "05"
    assert encode_ack(7, False, "bad_signature").hex() == (
        "a3" "626f6b" "f4" "63657272" "6d" + b"bad_signature".hex() + "63736571" "07")


@settings(max_examples=200)
@given(st.integers(0, 2**64 - 1), st.booleans(), st.none() | st.text(max_size=512))
def test_round_trip(seq: int, ok: bool, err: str | None) -> None:
    assert decode_ack(encode_ack(seq, ok, err)) == Ack(seq=seq, ok=ok, err=err)


def test_encode_refuses_bad_arguments() -> None:
    for seq, ok in [(-1, True), (2**64, True), (1, 1), ("1", True)]:
        with pytest.raises(ValueError):
            encode_ack(seq, ok)  # type: ignore[arg-type]
    assert decode_ack(encode_ack(1, False, "x" * 600)).err == "x" * 512


@pytest.mark.parametrize(("data", "reason"), [
    (dumps_det([1, True]), "malformed_payload"),
    (dumps_det({"seq": 1}), "malformed_payload"),
    (dumps_det({"ok": True}), "malformed_payload"),
    (dumps_det({"seq": 1, "ok": True, "extra": 1}), "malformed_payload"),
    (dumps_det({"seq": -1, "ok": True}), "malformed_payload"),
    (dumps_det({"seq": "1", "ok": True}), "malformed_payload"),
    (dumps_det({"seq": 1.0, "ok": True}), "malformed_payload"),
    (dumps_det({"seq": 1, "ok": 1}), "malformed_payload"),
    (dumps_det({"seq": 1, "ok": False, "err": 3}), "malformed_payload"),
    (dumps_det({"seq": 1, "ok": False, "err": None}), "malformed_payload"),
    (dumps_det({"seq": 1, "ok": False, "err": "x" * 513}), "malformed_payload"),
    (dumps_det({"seq": 1, "ok": False, "err": ["x"]}), "too_deep"),
    (bytes.fromhex("c1a2626f6bf563736571 05".replace(" ", "")), "malformed_cbor"),
    (bytes.fromhex("a2626f6bf56373657105 00".replace(" ", "")), "malformed_cbor"),
    (b"", "malformed_cbor"),
    (dumps_det({"seq": 1, "ok": False, "err": "x" * 1100}), "too_large"),
])
def test_decode_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(Reject) as e:
        decode_ack(data)
    assert e.value.reason == reason
