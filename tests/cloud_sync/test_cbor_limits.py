"""loads_untrusted limits and dumps_det determinism, as exact-byte tables plus hypothesis."""

from __future__ import annotations

import math
import struct
import time
import tracemalloc

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.cloud_sync.cbor_limits import dumps_det, loads_untrusted
from cimedge.cloud_sync.reject import Reject


def reason(data: bytes, **kw: object) -> str:
    with pytest.raises(Reject) as e:
        loads_untrusted(data, **kw)  # type: ignore[arg-type]
    return e.value.reason


@pytest.mark.parametrize(("hexdata", "value"), [
    ("00", 0),
    ("1bffffffffffffffff", 2**64 - 1),
    ("3bffffffffffffffff", -(2**64)),
    ("f4", False), ("f5", True), ("f6", None),
    ("f93e00", 1.5),
    ("4401020304", b"\x01\x02\x03\x04"),
    ("62c3bc", "\u00fc"),
    ("83010203", [1, 2, 3]),
    ("a201020363616263", {1: 2, 3: "abc"}),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}),
])
def test_accepts(hexdata: str, value: object) -> None:
    assert loads_untrusted(bytes.fromhex(hexdata)) == value


@pytest.mark.parametrize(("hexdata", "why"), [
    ("", "empty"),
    ("0102", "trailing byte"),
    ("8301020304", "trailing byte after an array"),
    ("1c", "reserved additional info 28"),
    ("9f01ff", "indefinite array"),
    ("bf0101ff", "indefinite map"),
    ("5f4101ff", "indefinite bstr"),
    ("7f6161ff", "indefinite text"),
    ("ff", "lone break"),
    ("f7", "undefined"),
    ("f0", "simple(16)"),
    ("f820", "simple(32)"),
    ("a2010101 02".replace(" ", ""), "duplicate int key"),
    ("a2616101616102", "duplicate text key"),
    ("a1800a", "array as map key"),
    ("a1a0 0a".replace(" ", ""), "map as map key"),
    ("a1f93c000a", "float as map key"),
    ("a1f50a", "bool as map key"),
    ("a1f60a", "null as map key"),
    ("a141610a", "bstr as map key"),
    ("62fffe", "bad UTF-8"),
    ("1a0001", "truncated argument"),
    ("4301", "truncated bstr"),
    ("a101", "map missing its value"),
])
def test_malformed(hexdata: str, why: str) -> None:
    assert reason(bytes.fromhex(hexdata)) == "malformed_cbor", why


# Tags cbor2 decodes by itself (datetime, bignum, decimal, sharing, string references, sets,
# self-describe...) as well as unknown ones: none may pass, whatever cbor2 knows.
@pytest.mark.parametrize("tag", [*range(0, 300), 1004, 1040, 43000, 55799, 2**32, 2**64 - 1])
def test_no_tag_is_accepted(tag: int) -> None:
    for inner in (b"\x00", b"\x80", b"\xa0", b"\x40"):
        data = cbor2.dumps(cbor2.CBORTag(tag, cbor2.loads(inner)))
        assert reason(data) == "malformed_cbor"
        assert reason(b"\x81" + data) == "malformed_cbor"  # nested, too
        if tag != 18:
            assert reason(data, allow_tag18_top=True) == "malformed_cbor"


def test_tag18_only_at_the_top_and_only_when_allowed() -> None:
    msg = bytes.fromhex("d28440a04040")
    assert loads_untrusted(msg, allow_tag18_top=True) == cbor2.CBORTag(18, [b"", {}, b"", b""])
    assert reason(msg) == "malformed_cbor"
    assert reason(bytes.fromhex("d281d280"), allow_tag18_top=True) == "malformed_cbor"
    assert reason(bytes.fromhex("d8128440a04040"), allow_tag18_top=True) == "malformed_cbor"
    assert reason(bytes.fromhex("d2d28440a04040"), allow_tag18_top=True) == "malformed_cbor"
    assert reason(bytes.fromhex("d28440a0404000"), allow_tag18_top=True) == "malformed_cbor"
    assert loads_untrusted(b"\x80", allow_tag18_top=True) == []  # allowed, not required


def test_size_is_checked_before_decoding() -> None:
    assert loads_untrusted(b"\x43abc", max_size=4) == b"abc"
    assert reason(b"\x44abcd", max_size=4) == "too_large"
    assert reason(b"\xff" * 11, max_size=10) == "too_large"  # garbage, yet too_large first
    assert reason(b"\x00" * ((1 << 20) + 1)) == "too_large"


def nested(depth: int, leaf: bytes = b"\x00") -> bytes:
    return b"\x81" * depth + leaf


def test_depth() -> None:
    assert loads_untrusted(nested(5)) == [[[[[0]]]]]
    assert reason(nested(6)) == "too_deep"
    assert reason(nested(6, b"\x80")) == "too_deep"  # an empty container counts
    assert reason(nested(4, b"\xa1\x01\xa1\x01\x00")) == "too_deep"  # maps count
    assert reason(nested(2), max_depth=1) == "too_deep"
    assert reason(nested(10_000)) == "too_deep"  # no recursion error
    # Depth counts containers, not the stripped top-level tag 18.
    assert loads_untrusted(b"\xd2" + nested(2), max_depth=2, allow_tag18_top=True).value == [[0]]


@pytest.mark.parametrize("head", [
    "9bffffffffffffffff", "bbffffffffffffffff", "5bffffffffffffffff", "7bffffffffffffffff",
    "9b0000000100000000", "9affffffff", "bafffffffe", "5affffffff", "7a7fffffff",
    "9a7fffffff0101010101010101",
])
def test_huge_length_claims_fail_fast_and_small(head: str) -> None:
    data = bytes.fromhex(head)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        assert reason(data) == "malformed_cbor"
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.05
    assert peak < 64 * 1024


def test_every_truncation_is_malformed() -> None:
    data = dumps_det({"v": 1, "recs": [{0: "a", 2: 1.5, "q": "comm"}], "ts": 1.7e9})
    for n in range(len(data)):
        assert reason(data[:n]) == "malformed_cbor"


cbor_keys = st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=30))
cbor_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1),
    st.floats(allow_nan=False), st.text(max_size=30), st.binary(max_size=30))
cbor_values = st.recursive(
    cbor_leaves,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(cbor_keys, kids, max_size=4),
    max_leaves=20)


def depth(x: object) -> int:
    if isinstance(x, list):
        return 1 + max(map(depth, x), default=0)
    if isinstance(x, dict):
        return 1 + max(map(depth, x.values()), default=0)
    return 0


@settings(max_examples=200)
@given(cbor_values)
def test_round_trip(obj: object) -> None:
    data = dumps_det(obj)
    if depth(obj) <= 5:
        assert loads_untrusted(data) == obj
    else:
        assert reason(data) == "too_deep"
    assert dumps_det(cbor2.loads(data)) == data  # re-encoding is stable


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_reject(data: bytes) -> None:
    try:
        loads_untrusted(data)
    except Reject as e:
        assert e.reason in ("malformed_cbor", "too_deep")


# dumps_det: RFC 8949 §4.2.1 core deterministic encoding.

@pytest.mark.parametrize(("value", "hexdata"), [
    (0, "00"), (23, "17"), (24, "1818"), (1000000, "1a000f4240"), (-1, "20"),
    (2**64 - 1, "1bffffffffffffffff"),
    (0.0, "f90000"), (-0.0, "f98000"), (1.5, "f93e00"), (65504.0, "f97bff"),
    (100000.0, "fa47c35000"), (3.4028234663852886e38, "fa7f7fffff"),
    (1.1, "fb3ff199999999999a"), (1.0e300, "fb7e37e43c8800759c"),
    (5.960464477539063e-8, "f90001"), (math.inf, "f97c00"), (-math.inf, "f9fc00"),
    (math.nan, "f97e00"),
    ("IETF", "6449455446"), (b"\x01", "4101"), ([1, [2, 3]], "8201820203"),
    # Bytewise order of encoded keys: 0x00 < 0x1818 < 0x20 < 0x41.. < 0x61.. < 0x62..;
    # cbor2's canonical=True alone gives the RFC 7049 length-first order (-1 before 24).
    ({"bb": 5, "a": 3, -1: 2, 24: 1, 0: 4}, "a50004181801200261610362626205"),
    ({"seq": 1, "ts": 1.5, "v": 1, "dev": "a", "recs": []},
     "a5617601627473f93e006364657661616373657101647265637380"),
    (cbor2.CBORTag(18, [b"", {}]), "d28240a0"),
])
def test_dumps_det_exact(value: object, hexdata: str) -> None:
    assert dumps_det(value).hex() == hexdata


@settings(max_examples=200)
@given(st.dictionaries(cbor_keys, st.integers(), max_size=12))
def test_map_keys_in_bytewise_order_of_their_encodings(m: dict[object, int]) -> None:
    wire_order = list(cbor2.loads(dumps_det(m)))  # dicts keep the order read from the wire
    encoded = [cbor2.dumps(k) for k in wire_order]
    assert encoded == sorted(encoded)
    assert len(wire_order) == len(m)


@settings(max_examples=200)
@given(st.floats(allow_nan=False))
def test_floats_take_the_shortest_exact_form(x: float) -> None:
    def exact(fmt: str) -> bool:
        try:
            return struct.unpack(fmt, struct.pack(fmt, x))[0] == x
        except OverflowError:
            return False

    data = dumps_det(x)
    assert cbor2.loads(data) == x
    assert len(data) == (3 if exact(">e") else 5 if exact(">f") else 9)
