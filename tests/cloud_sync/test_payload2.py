"""Contract v2 payloads (DESIGN.md 4a): exact bytes, DEFLATE, bounded inflation, "q_",
millisecond times, and the SenML resolved by RFC 8428 rules written here, not by our decoder."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.cloud_sync import payload2
from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.cose import aad, kid_for, sign1
from cimedge.cloud_sync.inflate import MAX_INFLATED, deflate, inflate
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.senml import BN, BT, BU, N, Q, Q2, T, U, V, VB, VS, decode_pack, encode_pack
from cimedge.cloud_sync.verify import KeyInfo, Verified, verify_message
from cimedge.edge.model import Event, Quality, Reading

DEV = "gw-01"
S0 = 1_732_486_800
T0 = S0 * 10**9
NOW = 1.8e9
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key().public_bytes_raw()
KID = kid_for(PUB)
KEYS = {KID: KeyInfo(dev=DEV, public_key=PUB, status="active")}


def verify(data: bytes, kind: str = "batch", topic: str = DEV, **kw: object) -> Verified:
    return verify_message(topic, kind, data, KEYS.get, now=NOW, **kw)  # type: ignore[arg-type]


def signed(payload: bytes, kind: str = "batch", dev: str = DEV) -> bytes:
    return sign1(payload, KEY, external_aad=aad(kind, dev))


# -- RFC 8428 §4.6, written out here: our decoder is not used to judge our encoder ----------

def rfc8428_resolve(pack: list[dict]) -> list[tuple[str, float, object, str | None, str]]:
    """Resolve a SenML pack: base name, time and unit carry over to later records until
    replaced; name = bn + n, time = bt + t, unit = u else bu; plus our quality label."""
    out = []
    bn, bt, bu = "", 0, None
    for rec in pack:
        bn = rec.get(BN, bn)
        bt = rec.get(BT, bt)
        bu = rec.get(BU, bu)
        value = next((rec[k] for k in (V, VS, VB) if k in rec), None)
        out.append((bn + rec.get(N, ""), bt + rec.get(T, 0), value, rec.get(U, bu),
                    rec.get(Q2, "")))
    return out


def independent_pack(payload: bytes) -> list[dict]:
    """The pack of a v2 batch payload through plain cbor2 and zlib, not our code."""
    obj = cbor2.loads(payload)
    if 3 in obj:
        return cbor2.loads(zlib.decompress(obj[3], wbits=-15))
    return obj[2]


# -- exact bytes ---------------------------------------------------------------------------

def test_batch_payload_exact() -> None:
    pack = [{BN: "gw-01:a", BT: S0, V: 1}]
    assert payload2.batch_payload(7, pack) == bytes.fromhex(
        "a3"            # map of 3
        "00 02"         # 0 (version): 2
        "01 07"         # 1 (seq): 7
        "02 81"         # 2 (pack): array of 1
        "a3"            #   record: map of 3
        "02 01"         #     v: 1
        "21 67 67772d30313a61"  # bn (-2): "gw-01:a"
        "22 1a 6743a690"        # bt (-3): 1732486800
        .replace(" ", ""))


def test_a_compressible_pack_goes_as_packz() -> None:
    readings = [Reading(f"ps1.p{i % 20}", T0 + (i // 20) * 10**9, float(i % 7))
                for i in range(400)]
    pack = encode_pack(DEV, readings, {}, contract=2)
    data = payload2.batch_payload(9, pack)
    obj = cbor2.loads(data)
    assert sorted(obj) == [0, 1, 3] and obj[0] == 2 and obj[1] == 9
    assert zlib.decompress(obj[3], wbits=-15) == dumps_det(pack)  # raw DEFLATE of det. CBOR
    assert len(data) < len(dumps_det(pack)) / 3
    v = verify(signed(data))
    assert v.size == len(signed(data)) + len(dumps_det(pack))  # what it costs to hold
    assert payload2.batch_payload(9, pack) == data  # deterministic


def test_events_go_as_evt_or_evtz() -> None:
    one = [Event(T0, "p.x", "raise", "high", "up", 3.5)]  # too short to compress
    obj = cbor2.loads(payload2.event_payload(3, one))
    assert sorted(obj) == [0, 1, 4]
    assert obj[4] == [{"t": S0, "point": "p.x", "kind": "raise", "rule": "high",
                       "msg": "up", "value": 3.5}]  # v1's event list
    many = one * 30
    obj = cbor2.loads(payload2.event_payload(4, many))
    assert sorted(obj) == [0, 1, 5]
    assert len(cbor2.loads(zlib.decompress(obj[5], wbits=-15))) == 30
    with pytest.raises(ValueError, match="unsendable event"):
        payload2.event_payload(5, [Event(T0, "ps1.level", "boom", "r", "m")])
    for seq in (0, -1, 2**63, 1.0):
        with pytest.raises(ValueError):
            payload2.batch_payload(seq, [])  # type: ignore[arg-type]


def test_quality_is_the_must_understand_q_() -> None:
    readings = [Reading("a.x", T0, None, Quality.COMM), Reading("a.y", T0, 2.5, Quality.STALE),
                Reading("a.z", T0, 1.0)]
    pack = encode_pack(DEV, readings, {}, contract=2)
    assert [r.get(Q2) for r in pack] == ["comm", "stale", None]
    assert not any(Q in r for r in pack)
    assert [(r.name, r.value, r.quality) for r in decode_pack(pack, contract=2)] == [
        ("gw-01:a.x", None, "comm"), ("gw-01:a.y", 2.5, "stale"), ("gw-01:a.z", 1.0, "")]
    v1 = encode_pack(DEV, readings, {})
    for bad, contract in ((v1, 2), (pack, 1)):  # each contract knows only its own label
        with pytest.raises(Reject, match="unknown label") as e:
            decode_pack(bad, contract=contract)
        assert e.value.reason == "bad_field"
    with pytest.raises(Reject, match="no value and no q_"):
        decode_pack([{BN: "gw-01:a", BT: S0}], contract=2)  # a good record needs a value


def test_times_are_whole_seconds_as_ints_else_the_shortest_float_at_the_ms() -> None:
    ms = 10**6
    readings = [Reading("a.x", T0, 1.0), Reading("a.x", T0 + 2 * 10**9, 2.0),
                Reading("a.x", T0 + 2 * 10**9 + 500 * ms, 3.0),       # .5: a half float
                Reading("a.x", T0 + 3 * 10**9 + 123 * ms + 400, 4.0),  # sub-ms: rounded
                Reading("a.x", T0 + 300 * 10**9 + 7 * ms, 5.0)]        # far: single
    pack = encode_pack(DEV, readings, {}, contract=2)
    assert [type(r.get(T, 0)) for r in pack] == [int, int, float, float, float]
    enc = [len(cbor2.dumps(r[T], canonical=True)) for r in pack[2:]]
    assert enc == [3, 3, 5]  # half, half, single precision: not 9-byte doubles
    got = [round(t * 1000) for _, t, *_ in rfc8428_resolve(pack)]
    assert got == [S0 * 1000, (S0 + 2) * 1000, (S0 + 2) * 1000 + 500, (S0 + 3) * 1000 + 123,
                   (S0 + 300) * 1000 + 7]
    assert [r.t * 1000 for r in decode_pack(pack, contract=2)] == got  # exact ms


# -- bounded inflation ----------------------------------------------------------------------

def zeros_bomb(n_mib: int) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    mib = bytes(1 << 20)
    return b"".join(c.compress(mib) for _ in range(n_mib)) + c.flush()


def test_a_kilobyte_that_inflates_past_1_mib_is_refused() -> None:
    bomb = deflate(bytes(2 << 20))
    assert len(bomb) < 2100
    with pytest.raises(Reject) as e:
        inflate(bomb)
    assert e.value.reason == "inflate_limit"


def test_the_64x_ratio() -> None:
    raw = bytes(100_000)  # inflates to far below 1 MiB, but ~1000x its compressed size
    with pytest.raises(Reject, match="inflate_limit"):
        inflate(deflate(raw))
    text = b"".join(b"%d," % (i * 7919 % 10007) for i in range(20_000))
    z = deflate(text)
    ratio = len(text) / len(z)
    assert 1 < ratio < 64  # noqa: PLR2004
    assert inflate(z) == text
    assert inflate(z, max_ratio=int(ratio) + 1) == text
    with pytest.raises(Reject, match="inflate_limit"):
        inflate(z, max_ratio=int(ratio))
    assert inflate(z, max_out=len(text)) == text  # the bound is inclusive
    with pytest.raises(Reject, match="inflate_limit"):
        inflate(z, max_out=len(text) - 1)


def test_inflation_never_holds_more_than_the_bound() -> None:
    bomb = zeros_bomb(64)  # 64 MiB of zeros in ~64 KB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(Reject, match="inflate_limit"):
            inflate(bomb)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < MAX_INFLATED + 3 * len(bomb) + (256 << 10), peak


@pytest.mark.parametrize(("data", "why"), [
    (b"", "empty"),
    (b"\xff\xff\xff", "not DEFLATE"),
    (deflate(b"hello world" * 10)[:-3], "truncated"),
    (deflate(b"hello world" * 10) + b"\x00", "a byte after the end"),
    (zlib.compress(b"hello world" * 10), "zlib (RFC 1950) wrapper"),
])
def test_bad_deflate_is_malformed(data: bytes, why: str) -> None:
    with pytest.raises(Reject) as e:
        inflate(data)
    assert e.value.reason == "malformed_payload", why


# -- the payload map -------------------------------------------------------------------------

PACK = [{BN: f"{DEV}:a", BT: S0, V: 1}]


@pytest.mark.parametrize(("obj", "kind", "reason"), [
    ({0: 2, 1: 1, 2: PACK, 3: b""}, "batch", "malformed_payload"),  # two bodies
    ({0: 2, 1: 1}, "batch", "malformed_payload"),                   # none
    ({0: 2, 1: 1, 4: []}, "batch", "malformed_payload"),            # an event list as a batch
    ({0: 2, 1: 1, 2: PACK}, "event", "malformed_payload"),          # a pack as an event
    ({0: 2, 1: 1, 2: PACK, 6: 0}, "batch", "malformed_payload"),    # an unknown key
    ({0: 2, 1: 1, 2: PACK, "dev": DEV}, "batch", "malformed_payload"),
    ({0: 2, 1: 0, 2: PACK}, "batch", "malformed_payload"),          # seq 0
    ({0: 2, 1: 2**63, 2: PACK}, "batch", "malformed_payload"),
    ({0: 2, 2: PACK}, "batch", "malformed_payload"),                # no seq
    ({0: 2, 1: 1, 3: "text"}, "batch", "malformed_payload"),        # packz not a bstr
    ({0: 2, 1: 1, 3: b"\x01\x02"}, "batch", "malformed_payload"),   # not DEFLATE
    ({0: 2, 1: 1, 3: deflate(b"\x82\x01")}, "batch", "malformed_cbor"),  # truncated CBOR
    ({0: 2, 1: 1, 3: deflate(dumps_det([[[[1]]]]))}, "batch", "too_deep"),
    ({0: 3, 1: 1, 2: PACK}, "batch", "bad_version"),
    ({0: "2", 1: 1, 2: PACK}, "batch", "malformed_payload"),
    ({0: 2, 1: 1, 2: [{BN: "gw-02:a", BT: S0, V: 1}]}, "batch", "bad_field"),  # not under dev
    ({0: 2, 1: 1, 2: [{BN: f"{DEV}:a", BT: 10, V: 1}]}, "batch", "relative_time"),
    ({0: 2, 1: 1, 5: deflate(dumps_det([{"t": S0}]))}, "event", "bad_field"),
])
def test_decode_rejects(obj: dict, kind: str, reason: str) -> None:
    with pytest.raises(Reject) as e:
        verify(signed(dumps_det(obj), kind), kind)
    assert e.value.reason == reason


# -- through verify_message -----------------------------------------------------------------

def test_a_v2_batch_verifies_bound_to_its_device_and_kind() -> None:
    readings = [Reading("ps1.level", T0 + 51_000_000, 1.25), Reading("ps1.run", T0, True)]
    data = signed(payload2.batch_payload(12, encode_pack(DEV, readings, {"ps1.level": "m"},
                                                         contract=2)))
    v = verify(data)
    assert (v.contract, v.dev, v.seq, v.kind, v.kid) == (2, DEV, 12, "batch", KID)
    assert v.ts == S0 + 0.051  # no ts on the wire: the newest time in it
    assert sorted((r.name, r.t, r.value, r.unit) for r in v.records) == [
        ("gw-01:ps1.level", S0 + 0.051, 1.25, "m"), ("gw-01:ps1.run", S0, True, None)]
    assert v.signature == cbor2.loads(data).value[3] and v.cose is not None
    assert v.size == len(data)  # inline pack: nothing inflated
    # The AAD binds the topic's device and kind: the same bytes anywhere else do not verify.
    other = {**KEYS, kid_for(PUB): KeyInfo(dev="gw-02", public_key=PUB, status="active")}
    for kind, topic, lookup in (("event", DEV, KEYS.get), ("batch", "gw-02", other.get)):
        with pytest.raises(Reject) as e:
            verify_message(topic, kind, data, lookup, now=NOW)
        assert e.value.reason == "bad_signature", (kind, topic)
    unbound = sign1(payload2.batch_payload(12, []), KEY)  # v1's empty AAD
    with pytest.raises(Reject, match="bad_signature"):
        verify(unbound)


def test_a_v2_event_verifies() -> None:
    ev = Event(T0, "ps1.level", "raise", "high", "level high", 3.5)
    v = verify(signed(payload2.event_payload(3, [ev]), "event"), "event")
    assert (v.contract, v.kind, v.seq, v.records, v.events, v.ts) == (2, "event", 3, [], [ev],
                                                                      S0)


def test_key_0_must_come_first() -> None:
    # Deterministic CBOR puts key 0 first; a map that hides it is read as v1 for the AAD,
    # and then refused for saying otherwise.
    body = b"\xa3\x01\x05\x00\x02\x02" + dumps_det(PACK)
    with pytest.raises(Reject) as e:
        verify(sign1(body, KEY))
    assert e.value.reason == "malformed_payload"


def test_an_inflation_bomb_is_refused_and_nothing_is_decoded() -> None:
    data = signed(dumps_det({0: 2, 1: 8, 3: deflate(bytes(2 << 20))}))
    assert len(data) < 2300
    with pytest.raises(Reject) as e:
        verify(data)
    assert (e.value.reason, e.value.seq, e.value.dev) == ("inflate_limit", 8, DEV)


# -- round trips ----------------------------------------------------------------------------

points = st.sampled_from(["ps1.level", "ps1.flow", "ps2.run", "lp1.note", "x"])
values = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.integers(-(2**40), 2**40), st.booleans(),
                   st.text(st.characters(codec="utf-8", exclude_characters="\0"),
                           max_size=12), st.none())
readings_st = st.lists(st.builds(
    lambda p, t, v, q: Reading(p, t, v, Quality.COMM if v is None else q),
    points, st.integers(T0, T0 + 3600 * 10**9).map(lambda t: t - t % 1000),
    values, st.sampled_from(list(Quality))), min_size=1, max_size=60)
UNITS = {"ps1.level": "m", "ps1.flow": "m3/h"}


def _ms(ns: int) -> int:
    return (ns + 500_000) // 1_000_000


def _expect(readings: list[Reading]) -> list[tuple]:
    return sorted(((f"{DEV}:{r.point}", _ms(r.ts_ns), r.value, UNITS.get(r.point),
                    r.quality.label) for r in readings), key=repr)


@settings(max_examples=150, deadline=None)
@given(readings_st, st.integers(1, 2**62))
def test_round_trip_by_rfc8428_rules(readings: list[Reading], seq: int) -> None:
    payload = payload2.batch_payload(seq, encode_pack(DEV, readings, UNITS, contract=2))
    resolved = rfc8428_resolve(independent_pack(payload))
    got = sorted(((n, round(t * 1000), v, u, q) for n, t, v, u, q in resolved), key=repr)
    assert got == _expect(readings)


@settings(max_examples=150, deadline=None)
@given(readings_st, st.integers(1, 2**62))
def test_round_trip_through_the_receivers_check_path(readings: list[Reading], seq: int) -> None:
    v = verify(signed(payload2.batch_payload(seq, encode_pack(DEV, readings, UNITS,
                                                              contract=2))))
    assert (v.contract, v.seq) == (2, seq)
    got = sorted(((r.name, r.t, r.value, r.unit, r.quality) for r in v.records), key=repr)
    assert got == sorted(((n, ms / 1000, val, u, q) for n, ms, val, u, q in _expect(readings)),
                         key=repr)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.builds(Event, st.integers(T0, T0 + 10**12), points,
                          st.sampled_from(["raise", "clear", "action", "gap"]),
                          st.text("abc_", min_size=1, max_size=8), st.text(max_size=40),
                          st.none() | st.floats(allow_nan=False)), min_size=1, max_size=40),
       st.integers(1, 2**62))
def test_event_round_trip(events: list[Event], seq: int) -> None:
    events = [e for e in events if "\0" not in e.msg]
    if not events:
        return
    v = verify(signed(payload2.event_payload(seq, events), "event"), "event")
    assert [(e.point, e.kind, e.rule, e.msg, e.value) for e in v.events] == [
        (e.point, e.kind, e.rule, e.msg, e.value) for e in events]
    assert all(abs(a.ts_ns - b.ts_ns) < 1000 for a, b in zip(v.events, events, strict=True))


def test_peek_contract() -> None:
    peek: Callable[[bytes], int] = payload2.peek_contract
    assert peek(payload2.batch_payload(1, PACK)) == 2
    assert peek(dumps_det({"v": 1, "dev": DEV})) == 1
    assert peek(b"") == peek(b"\x81\x00") == peek(b"\xbf\x00") == 1
    assert peek(b"\xb8\x20\x00") == 2  # a one-byte length head
