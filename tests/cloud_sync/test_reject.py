"""Reject: the closed set of reason codes and the exception's shape."""

from __future__ import annotations

import pickle

import pytest

from cimedge.cloud_sync.reject import REASONS, Reject


def test_reasons_are_the_contract_set() -> None:
    assert REASONS == ("too_large", "malformed_cbor", "too_deep", "malformed_cose",
                       "unknown_kid", "revoked_kid", "retired_kid", "expired_kid",
                       "bad_signature", "malformed_payload", "bad_version", "dev_mismatch",
                       "bad_field", "relative_time", "seq_conflict", "inflate_limit")


def test_str_and_attributes() -> None:
    e = Reject("bad_field", "record 3: v is not a number", dev="gw-01", seq=7)
    assert str(e) == "bad_field: record 3: v is not a number"
    assert (e.reason, e.detail, e.dev, e.seq) == ("bad_field", "record 3: v is not a number",
                                                  "gw-01", 7)
    assert (Reject("too_large", "x").dev, Reject("too_large", "x").seq) == (None, None)


def test_unknown_reason_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown reject reason"):
        Reject("bad_sig", "typo")


def test_pickles_with_context() -> None:
    e = pickle.loads(pickle.dumps(Reject("seq_conflict", "other bytes", dev="gw-01", seq=3)))
    assert (e.reason, e.detail, e.dev, e.seq, str(e)) == (
        "seq_conflict", "other bytes", "gw-01", 3, "seq_conflict: other bytes")
