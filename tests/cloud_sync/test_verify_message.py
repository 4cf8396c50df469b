"""verify_message: one crafted input per reason code, the check order, and a fuzz test."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.cose import Sign1, aad, kid_for, sign1
from cimedge.cloud_sync.inflate import deflate
from cimedge.cloud_sync.reject import REASONS, Reject
from cimedge.cloud_sync.senml import BN, BT, V, encode_pack, event_payload
from cimedge.cloud_sync.verify import KeyInfo, Verified, verify_message
from cimedge.edge.model import Event, Quality, Reading

DEV = "gw-01"
NOW = 1.8e9
S0 = 1_732_486_800
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key().public_bytes_raw()
KID = kid_for(PUB)
STRANGER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
RECS = [{BN: f"{DEV}:pump1.level", BT: S0, V: 1.5}, {V: 1.75, 6: 1}]


def payload(**changes: object) -> bytes:
    obj: dict[str, object] = {"v": 1, "dev": DEV, "seq": 1, "ts": S0 + 2.0, "recs": RECS}
    obj.update(changes)
    return dumps_det(obj)


def registry(**changes: object) -> Callable[[bytes], KeyInfo | None]:
    fields: dict[str, object] = {"dev": DEV, "public_key": PUB, "status": "active"}
    fields.update(changes)
    keys = {KID: KeyInfo(**fields)}  # type: ignore[arg-type]
    return keys.get


def verify(data: bytes, lookup: Callable[[bytes], KeyInfo | None] | None = None,
           topic: str = DEV, kind: str = "batch", **kw: object) -> Verified:
    lookup = lookup or registry()
    return verify_message(topic, kind, data, lookup, now=NOW, **kw)  # type: ignore[arg-type]


def test_valid_batch() -> None:
    data = sign1(payload(seq=42), KEY)
    v = verify(data)
    assert (v.dev, v.seq, v.ts, v.kid, v.kind, v.events) == (DEV, 42, S0 + 2.0, KID, "batch", [])
    assert [(r.name, r.t, r.value) for r in v.records] == [
        ("gw-01:pump1.level", S0, 1.5), ("gw-01:pump1.level", S0 + 1, 1.75)]
    assert v.digest == hashlib.sha256(data).digest()
    # What a signed ack needs (DESIGN.md 4a): the contract, the signature and its prefix,
    # and the COSE fields as received.
    tag = cbor2.loads(data).value
    assert (v.contract, v.signature, v.sig_prefix) == (1, tag[3], tag[3][:8])
    assert v.cose == Sign1(protected=tag[0], kid=KID, payload=tag[2], signature=tag[3])


def test_valid_event() -> None:
    ev = Event(S0 * 10**9, "pump1.level", "raise", "level_high", "high", 2.5)
    v = verify(sign1(event_payload(DEV, 3, NOW, [ev]), KEY), kind="event")
    assert (v.kind, v.seq, v.records, v.events) == ("event", 3, [], [ev])


def test_digest_tells_a_resend_from_a_conflict() -> None:
    # seq_conflict is the receiver store's call: same (dev, seq), another digest.
    first = verify(sign1(payload(seq=7), KEY))
    assert verify(sign1(payload(seq=7), KEY)).digest == first.digest  # byte-for-byte resend
    assert verify(sign1(payload(seq=7, ts=S0 + 3.0), KEY)).digest != first.digest


def deep_cose() -> bytes:
    good = cbor2.loads(sign1(payload(), KEY)).value
    return dumps_det(cbor2.CBORTag(18, [good[0], {5: [[1]]}, good[2], good[3]]))


def flipped_signature() -> bytes:
    data = bytearray(sign1(payload(), KEY))
    data[-1] ^= 1
    return bytes(data)


Case = tuple[Callable[[], bytes], dict[str, object], str, str, "int | None"]
CASES: dict[str, Case] = {
    # name: (message, verify() arguments, topic, expected reason, expected seq)
    "too_large": (lambda: sign1(payload(), KEY), {"max_size": 100}, DEV, "too_large", None),
    "malformed_cbor": (lambda: sign1(payload(), KEY) + b"\x00", {}, DEV, "malformed_cbor",
                       None),
    "too_deep cose": (deep_cose, {}, DEV, "too_deep", None),
    "too_deep payload": (lambda: sign1(payload(recs=[{V: [[1]]}]), KEY), {}, DEV, "too_deep",
                         None),
    "malformed_cose": (lambda: dumps_det(cbor2.loads(sign1(payload(), KEY)).value), {}, DEV,
                       "malformed_cose", None),
    "unknown_kid": (lambda: sign1(payload(), STRANGER), {}, DEV, "unknown_kid", None),
    "revoked_kid": (lambda: sign1(payload(), KEY), {"lookup": registry(status="revoked")},
                    DEV, "revoked_kid", None),
    "unknown status": (lambda: sign1(payload(), KEY), {"lookup": registry(status="?")}, DEV,
                       "revoked_kid", None),
    "expired_kid": (lambda: sign1(payload(), KEY), {"lookup": registry(not_after=NOW - 1)},
                    DEV, "expired_kid", None),
    "bad_signature": (flipped_signature, {}, DEV, "bad_signature", None),
    "bad_signature, other key": (lambda: sign1(payload(), STRANGER, KID), {}, DEV,
                                 "bad_signature", None),
    "malformed_payload": (lambda: sign1(dumps_det([1]), KEY), {}, DEV, "malformed_payload",
                          None),
    "bad_version": (lambda: sign1(payload(v=2, seq=4), KEY), {}, DEV, "bad_version", 4),
    "dev_mismatch topic": (lambda: sign1(payload(seq=4), KEY), {}, "gw-02", "dev_mismatch", 4),
    "dev_mismatch payload": (lambda: sign1(payload(dev="gw-02", seq=4), KEY), {}, DEV,
                             "dev_mismatch", 4),
    "dev_mismatch key": (lambda: sign1(payload(seq=4), KEY), {"lookup": registry(dev="gw-02")},
                         DEV, "dev_mismatch", 4),
    "retired_kid": (lambda: sign1(payload(seq=11), KEY),
                    {"lookup": registry(status="retired", retired_after_seq=10)}, DEV,
                    "retired_kid", 11),
    "bad_field": (lambda: sign1(payload(seq=4, recs=[{**RECS[0], 5: 1}]), KEY), {}, DEV,
                  "bad_field", 4),
    "relative_time": (lambda: sign1(payload(seq=4, recs=[{**RECS[0], BT: 10}]), KEY), {}, DEV,
                      "relative_time", 4),
    "inflate_limit": (lambda: sign1(dumps_det({0: 2, 1: 4, 3: deflate(bytes(2 << 20))}), KEY,
                                    external_aad=aad("batch", DEV)), {}, DEV, "inflate_limit",
                      4),
}


@pytest.mark.parametrize("name", CASES)
def test_reason(name: str) -> None:
    make, kw, topic, reason, seq = CASES[name]
    with pytest.raises(Reject) as e:
        verify(make(), topic=topic, **kw)
    assert (e.value.reason, e.value.dev, e.value.seq) == (reason, topic, seq)


def test_every_reason_but_the_stores_is_covered() -> None:
    assert set(REASONS) - {case[3] for case in CASES.values()} == {"seq_conflict"}


def test_boundaries_that_pass() -> None:
    data = sign1(payload(seq=10), KEY)
    assert verify(data, registry(status="retired", retired_after_seq=10)).seq == 10
    assert verify(data, registry(not_after=NOW)).seq == 10  # expires after, not at, not_after
    assert verify(data, max_size=len(data)).seq == 10


@pytest.mark.parametrize(("data", "lookup", "reason"), [
    # A revoked key is refused before its (bad) signature costs a verification.
    (flipped_signature(), registry(status="revoked"), "revoked_kid"),
    # The signature is checked before any of the payload is parsed (the contract, which
    # says which AAD to verify with, is read from the payload's first key alone).
    (sign1(dumps_det([1]), STRANGER, KID), registry(), "bad_signature"),
    (sign1(dumps_det({0: 2, 1: [[[[1]]]]}), STRANGER, KID, external_aad=aad("batch", DEV)),
     registry(), "bad_signature"),
    # Key policy (dev, retirement) comes before the records.
    (sign1(payload(seq=11, recs=[{V: "x"}]), KEY),
     registry(status="retired", retired_after_seq=10), "retired_kid"),
    (sign1(payload(dev="gw-02", recs=[{V: "x"}]), KEY), registry(), "dev_mismatch"),
])
def test_check_order(data: bytes, lookup: Callable[[bytes], KeyInfo | None],
                     reason: str) -> None:
    with pytest.raises(Reject) as e:
        verify(data, lookup)
    assert e.value.reason == reason


def test_kind_is_checked() -> None:
    with pytest.raises(ValueError):
        verify(sign1(payload(), KEY), kind="cmd")
    with pytest.raises(Reject, match="malformed_payload"):
        verify(sign1(payload(), KEY), kind="event")  # recs on the event topic


# Fuzz: whatever arrives, the answer is Verified or Reject, never another exception.

VALID = sign1(dumps_det({"v": 1, "dev": DEV, "seq": 5, "ts": S0 + 0.5, "recs": encode_pack(
    DEV, [Reading(f"p{i}.x", S0 * 10**9 + k * 10**8, k * 1.1, q)
          for k in range(3) for i, q in enumerate(map(Quality, [0, 1, 3]))], {"p1.x": "m"})}),
    KEY)
LOOKUP = registry(status="retired", retired_after_seq=5)


def outcome(data: bytes, kind: str = "batch") -> None:
    try:
        verify_message(DEV, kind, data, LOOKUP, now=NOW)
    except Reject as e:
        assert e.reason in REASONS and e.dev == DEV


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, byte in edits:
        pos %= len(buf) + 1
        if op == 0 and pos < len(buf):
            buf[pos] = byte
        elif op == 1:
            buf.insert(pos, byte)
        elif pos < len(buf):
            del buf[pos]
    return bytes(buf)


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2000), st.integers(0, 255)),
                 min_size=1, max_size=6)
FUZZ = settings(max_examples=300, deadline=None)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    outcome(data)
    outcome(b"\xd2" + data)


@FUZZ
@given(edits)
def test_fuzz_mutated_message(changes: list[tuple[int, int, int]]) -> None:
    outcome(mutate(VALID, changes))


@FUZZ
@given(edits, st.sampled_from(["batch", "event"]))
def test_fuzz_mutated_payload_signed(changes: list[tuple[int, int, int]], kind: str) -> None:
    # Signed after mutation, so the junk gets past the signature into the payload decoder.
    outcome(sign1(mutate(cbor2.loads(VALID).value[2], changes), KEY), kind)


words = st.sampled_from(["v", "dev", "seq", "ts", "recs", "evt", "q", "t", "point", "kind",
                         "rule", "msg", "value", -4, -3, -2, 0, 1, 2, 3, 4, 5, 6])
leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(),
                   st.sampled_from([DEV, "gw-01:p1.x", "comm", "raise", "m", 1, 5, S0]),
                   st.text(max_size=8), st.binary(max_size=8))
trees = st.recursive(leaves, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(words, kids, max_size=6), max_leaves=25)


@FUZZ
@given(st.dictionaries(words, trees, max_size=7), st.sampled_from(["batch", "event"]))
def test_fuzz_signed_structured_junk(obj: dict[object, object], kind: str) -> None:
    outcome(sign1(dumps_det(obj), KEY), kind)


BASE = {
    "batch": cbor2.loads(cbor2.loads(VALID).value[2]),
    "event": cbor2.loads(event_payload(DEV, 5, NOW, [
        Event(S0 * 10**9, "p1.x", "raise", "hi", "high", 2.5),
        Event(S0 * 10**9 + 1, "p1.x", "clear", "hi", "")])),
}


@FUZZ
@given(st.data(), st.sampled_from(["batch", "event"]))
def test_fuzz_signed_field_swaps(data: st.DataObject, kind: str) -> None:
    # A valid payload with a few fields dropped or replaced: reaches every field check.
    obj = cbor2.loads(dumps_det(BASE[kind]))  # a deep copy
    body = obj["recs" if kind == "batch" else "evt"]
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from([obj, *body]))
        label = data.draw(words)
        if data.draw(st.booleans()):
            target.pop(label, None)
        else:
            target[label] = data.draw(leaves | st.lists(leaves, max_size=3))
    outcome(sign1(dumps_det(obj), KEY), kind)
