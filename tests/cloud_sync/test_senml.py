"""SenML packs and payloads: exact encodings, RFC 8428 resolution, field checks, round trips."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.senml import (
    BN, BT, BU, N, Q, T, U, V, VB, VS, Payload, Record, batch_payload, decode_pack,
    decode_payload, encode_pack, event_payload,
)
from cimedge.edge.model import Event, Quality, Reading

T0 = 1_732_486_800_000_000_000  # 2024-11-24T22:20:00Z in ns
S0 = T0 // 10**9
DEV = "gw-01"
UNITS = {"pump1.level": "m", "pump1.flow": "m3/h"}
READINGS = [
    Reading("pump1.level", T0, 1.5),
    Reading("pump1.flow", T0, 12),
    Reading("pump1.run", T0, True),
    Reading("pump1.level", T0 + 10**9, 1.75),
    Reading("pump1.state", T0 + 5 * 10**8, "auto"),
    Reading("pump1.flow", T0 + 2 * 10**9, None, Quality.COMM),
    Reading("pump1.level", T0 + 2 * 10**9, 2.0, Quality.STALE),
]


def test_encode_pack_exact() -> None:
    pack = encode_pack(DEV, READINGS, UNITS)
    # Unit-less points first (bu cannot be unset). One reading per time here, so point order
    # is smaller than time order: each point's unit once, whole-second t offsets as ints;
    # one folder, so bn is its prefix and each record names itself with a short n.
    assert pack == [
        {N: "run", VB: True, BN: "gw-01:pump1.", BT: S0},
        {N: "state", VS: "auto", T: 0.5},
        {N: "level", V: 1.5, BU: "m"},
        {N: "level", V: 1.75, T: 1},
        {N: "level", V: 2.0, T: 2, Q: "stale"},
        {N: "flow", V: 12, BU: "m3/h"},
        {N: "flow", T: 2, Q: "comm"},
    ]
    assert type(pack[0][BT]) is int and type(pack[3][T]) is int  # whole seconds: ints
    assert type(pack[5][V]) is int and type(pack[2][V]) is float


def test_encode_pack_one_poll_shares_bt_and_bn() -> None:
    # A device's poll: every point at one (fractional) time. bt once, bn the names' common
    # prefix, and each record only its short n and value.
    t = T0 + 123_456_789
    rs = [Reading(f"ps1.r{a}", t, a * 10) for a in (0, 2, 4, 10, 12)]
    assert encode_pack(DEV, rs, {}) == [
        {N: "0", V: 0, BN: "gw-01:ps1.r", BT: t / 1e9}, {N: "10", V: 100}, {N: "12", V: 120},
        {N: "2", V: 20}, {N: "4", V: 40}]


def test_encode_pack_polls_of_two_devices() -> None:
    # Two devices polled 3.2 ms apart: a bt per poll (a 9-byte float, once), a bn per device.
    t1, t2 = T0 + 10**8, T0 + 10**8 + 3_200_000
    rs = [Reading(f"d{d}.{p}", t, 10 * d + i) for d, t in ((2, t2), (1, t1))
          for i, p in enumerate("abc")]
    assert encode_pack(DEV, rs, {}) == [
        {N: "a", V: 10, BN: "gw-01:d1.", BT: t1 / 1e9}, {N: "b", V: 11}, {N: "c", V: 12},
        {N: "a", V: 20, BN: "gw-01:d2.", BT: t2 / 1e9}, {N: "b", V: 21}, {N: "c", V: 22}]


def test_encode_pack_takes_point_order_when_smaller() -> None:
    # Two points per device, a second poll of d1 a second later: naming and timing each
    # value in time order (3 bt, 3 bn) costs more than point order (2 bt, 2 bn, int t).
    t1, t2 = T0 + 10**8, T0 + 10**8 + 3_200_000
    rs = [Reading("d1.a", t1, 1), Reading("d1.b", t1, 2), Reading("d2.a", t2, 3),
          Reading("d2.b", t2, 4), Reading("d1.a", t1 + 10**9, 5), Reading("d1.b", t1 + 10**9, 6)]
    assert encode_pack(DEV, rs, {}) == [
        {N: "a", V: 1, BN: "gw-01:d1.", BT: t1 / 1e9}, {N: "a", V: 5, T: 1},
        {N: "b", V: 2}, {N: "b", V: 6, T: 1},
        {N: "a", V: 3, BN: "gw-01:d2.", BT: t2 / 1e9}, {N: "b", V: 4}]
    by_time = dumps_det(encode_pack(DEV, rs[:4], {}) + encode_pack(DEV, rs[4:], {}))
    assert len(dumps_det(encode_pack(DEV, rs, {}))) < len(by_time)


def test_encode_pack_empty_and_defaults() -> None:
    assert encode_pack(DEV, [], UNITS) == []
    # A config's point without a unit has "": no bu, and it goes with the unit-less ones.
    assert encode_pack(DEV, [Reading("a.b", T0, 1), Reading("a.c", T0, 2)],
                       {"a.b": "", "a.c": "m"}) == [
        {N: "b", V: 1, BN: "gw-01:a.", BT: S0}, {N: "c", V: 2, BU: "m"}]
    assert encode_pack(DEV, [Reading("a.b", T0 + 1, None)], {}) == [
        {BN: "gw-01:a.b", BT: (T0 + 1) / 1e9, Q: "comm"}]  # None with GOOD is still a failure


def test_encode_pack_a_backlog_of_one_point() -> None:
    # One point, times in order: bn once (no n), bt the earliest, whole-second offsets.
    pack = encode_pack(DEV, [Reading("a", T0 + 3 * 10**9, 1), Reading("a", T0, 2)], {})
    assert pack == [{V: 2, BN: "gw-01:a", BT: S0}, {V: 1, T: 3}]


@pytest.mark.parametrize(("reading", "units", "match"), [
    (Reading("pump 1", T0, 1.0), {}, "name"),
    (Reading("a" * 200, T0, 1.0), {}, r"name 'gw-01:a{200}' does not match .*\{1,200\}"),
    (Reading("a", T0, 2**64), {}, "beyond a CBOR integer"),
    (Reading("a", T0, "x" * 1025), {}, "vs"),
    (Reading("a", 0, 1.0), {}, "relative"),
    (Reading("a", 2**34 * 10**9, 1.0), {}, "2\\*\\*34"),
    (Reading("a", T0, 1.0), {"a": "\n"}, "unit"),
    (Reading("a", T0, [1]), {}, "not a number"),  # type: ignore[arg-type]
])
def test_encode_pack_refuses_what_the_receiver_would(reading: Reading, units: dict[str, str],
                                                     match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_pack(DEV, [reading], units)


def test_decode_resolves_base_fields_per_rfc8428() -> None:
    # RFC 8428 §5.1.2-style pack, with n, per-record u, bu changes and negative t.
    pack = [
        {BN: "urn:dev:ow:10e2073a01080063:", BT: 1.276020076001e9, BU: "A", N: "voltage",
         U: "V", V: 120.1},
        {N: "current", T: -5, V: 1.2},
        {N: "current", T: -4, V: 1.3, "q": "range"},
        {BU: "W", N: "power", VS: "on"},
        {BN: "x:", BT: 1.3e9, N: "y", VB: False},
    ]
    assert decode_pack(pack) == [
        Record("urn:dev:ow:10e2073a01080063:voltage", 1.276020076001e9, 120.1, "V", ""),
        Record("urn:dev:ow:10e2073a01080063:current", 1.276020071001e9, 1.2, "A", ""),
        Record("urn:dev:ow:10e2073a01080063:current", 1.276020072001e9, 1.3, "A", "range"),
        Record("urn:dev:ow:10e2073a01080063:power", 1.276020076001e9, "on", "W", ""),
        Record("x:y", 1.3e9, False, "W", ""),
    ]


def test_decode_round_trips_the_exact_pack() -> None:
    assert decode_pack(encode_pack(DEV, READINGS, UNITS)) == [
        Record("gw-01:pump1.run", S0, True, None, ""),
        Record("gw-01:pump1.state", S0 + 0.5, "auto", None, ""),
        Record("gw-01:pump1.level", S0, 1.5, "m", ""),
        Record("gw-01:pump1.level", S0 + 1, 1.75, "m", ""),
        Record("gw-01:pump1.level", S0 + 2, 2.0, "m", "stale"),
        Record("gw-01:pump1.flow", S0, 12, "m3/h", ""),
        Record("gw-01:pump1.flow", S0 + 2, None, "m3/h", "comm"),
    ]


GOOD = {BN: "gw-01:a", BT: S0, V: 1}


@pytest.mark.parametrize(("recs", "expected", "why"), [
    ({}, "bad_field", "pack not an array"),
    ([[1]], "bad_field", "record not a map"),
    ([{**GOOD, 5: 3}], "bad_field", "s (sum) label is not supported"),
    ([{**GOOD, -1: 10}], "bad_field", "bver"),
    ([{**GOOD, 8: "x"}], "bad_field", "vd"),
    ([{**GOOD, "x": 1}], "bad_field", "unknown text label"),
    ([{**GOOD, N: 1}], "bad_field", "n not text"),
    ([{**GOOD, BN: 1}], "bad_field", "bn not text"),
    ([{**GOOD, BT: "1"}], "bad_field", "bt not a number"),
    ([{**GOOD, BT: True}], "bad_field", "bt a bool"),
    ([{**GOOD, BT: math.nan}], "bad_field", "bt NaN"),
    ([{**GOOD, T: math.inf}], "bad_field", "t infinite"),
    ([{**GOOD, BT: 1e308, T: 1e308}], "bad_field", "resolved time overflows"),
    ([{**GOOD, T: 2.0**34}], "bad_field", "beyond 2**34"),
    ([{**GOOD, BT: 2**28 - 1}], "relative_time", "time below 2**28"),
    ([{BN: "gw-01:a", V: 1}], "relative_time", "no bt at all"),
    ([{**GOOD, V: "1"}], "bad_field", "v text"),
    ([{**GOOD, V: True}], "bad_field", "v bool"),
    ([{**GOOD, V: None}], "bad_field", "v null"),
    ([{BN: "gw-01:a", BT: S0, VS: 1}], "bad_field", "vs int"),
    ([{BN: "gw-01:a", BT: S0, VS: "x" * 1025}], "bad_field", "vs too long"),
    ([{BN: "gw-01:a", BT: S0, VB: 1}], "bad_field", "vb int"),
    ([{**GOOD, VB: True}], "bad_field", "two values"),
    ([{BN: "gw-01:a", BT: S0}], "bad_field", "no value, good quality"),
    ([{BN: "gw-01:a", BT: S0, Q: "bogus"}], "bad_field", "no value, bad q"),
    ([{**GOOD, Q: "bad"}], "bad_field", "q unknown"),
    ([{**GOOD, Q: ""}], "bad_field", "q empty"),
    ([{**GOOD, Q: 1}], "bad_field", "q int"),
    ([{**GOOD, Q: ["comm"]}], "bad_field", "q unhashable"),
    ([{**GOOD, U: ""}], "bad_field", "u empty"),
    ([{**GOOD, U: "m\x00"}], "bad_field", "u control char"),
    ([{**GOOD, BU: "x" * 33}], "bad_field", "bu too long"),
    ([{**GOOD, BN: "gw-01:a b"}], "bad_field", "space in name"),
    ([{**GOOD, BN: "gw-01:\u00e9"}], "bad_field", "non-ASCII name"),
    ([{**GOOD, BN: ""}], "bad_field", "empty name"),
    ([{**GOOD, BN: "a" * 150, N: "b" * 51}], "bad_field", "name over 200"),
])
def test_decode_pack_rejects(recs: object, expected: str, why: str) -> None:
    with pytest.raises(Reject) as e:
        decode_pack(recs)
    assert e.value.reason == expected, why


def test_decode_pack_limits() -> None:
    assert len(decode_pack([GOOD, {V: 2}], max_records=2)) == 2
    with pytest.raises(Reject, match="3 records, limit 2"):
        decode_pack([GOOD, {V: 2}, {V: 3}], max_records=2)
    assert decode_pack([{**GOOD, V: math.nan}])[0].value != 0  # NaN passes as a value
    assert decode_pack([{**GOOD, N: "x" * 190}])[0].name == "gw-01:a" + "x" * 190


points = st.sampled_from(["p1.level", "p1.flow", "p2.run", "p2.state", "p3.t"])
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                   st.floats(allow_nan=False), st.text(max_size=20))
readings = st.builds(
    Reading, points, st.integers((2**28 + 1) * 10**9, 2**33 * 10**9), values,
    st.sampled_from(Quality))
unit_maps = st.dictionaries(points, st.sampled_from(["m", "m3/h", "Cel", "%RH"]), max_size=5)


def expected(r: Reading, units: dict[str, str]) -> tuple[object, ...]:
    quality = r.quality.label or ("comm" if r.value is None else "")
    return (f"{DEV}:{r.point}", r.ts_ns / 1e9, repr(r.value), units.get(r.point), quality)


# Polls: a few times shared by many points of several folders, as a gateway's batches are.
poll_points = st.sampled_from([f"d{d}.{p}" for d in (1, 2, 10) for p in ("r0", "r2", "r10",
                                                                          "level", "lev")])
polled = st.builds(Reading, poll_points, st.sampled_from([T0, T0 + 3_200_000, T0 + 10**9,
                                                           T0 + 10**9 + 1]), values,
                   st.sampled_from(Quality))
poll_units = st.dictionaries(poll_points, st.sampled_from(["m", "m3/h", "A"]), max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.tuples(st.lists(readings, max_size=30), unit_maps),
                 st.tuples(st.lists(polled, max_size=60), poll_units)))
def test_pack_round_trip(case: tuple[list[Reading], dict[str, str]]) -> None:
    rs, units = case
    pack = encode_pack(DEV, rs, units)
    payload = decode_payload(batch_payload(DEV, 9, 1.7e9, pack), "batch")
    got = [(r.name, r.t, repr(r.value), r.unit, r.quality) for r in payload.records]
    assert len(got) == len(rs)
    # Within a point, records come in time order (readings of one time in their order).
    for p in {r.point for r in rs}:
        mine = [g for g in got if g[0] == f"{DEV}:{p}"]
        want = [expected(r, units) for r in sorted(rs, key=lambda r: r.ts_ns) if r.point == p]
        assert [g[:1] + g[2:] for g in mine] == [w[:1] + w[2:] for w in want]
        for g, w in zip(mine, want, strict=True):  # bt + t in float seconds: about 1 us
            assert math.isclose(g[1], w[1], rel_tol=0, abs_tol=2e-6)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.tuples(st.lists(readings, max_size=30), unit_maps),
                 st.tuples(st.lists(polled, max_size=60), poll_units)),
       st.integers(1, 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))
def test_payloads_are_deterministic_cbor(case: tuple[list[Reading], dict[str, str]], seq: int,
                                         ts: float) -> None:
    # batch_payload uses cbor2's C encoder (length-first key order); RFC 8949 §4.2.1 wants
    # bytewise order, which dumps_det implements: for these payloads the two agree.
    rs, units = case
    pack = encode_pack(DEV, rs, units)
    assert batch_payload(DEV, seq, ts, pack) == dumps_det(
        {"v": 1, "dev": DEV, "seq": seq, "ts": ts, "recs": pack})
    events = [Event(r.ts_ns, r.point, "raise", "rule-1", "msg",
                    r.value if type(r.value) is float else None) for r in rs[:5]]
    assert event_payload(DEV, seq, ts, events) == dumps_det(
        {"v": 1, "dev": DEV, "seq": seq, "ts": ts, "evt": cbor2.loads(
            event_payload(DEV, seq, ts, events))["evt"]})


wild_points = st.one_of(points, st.text(max_size=210))
wild_values = st.one_of(values, st.integers(-(2**66), 2**66), st.text(min_size=1000,
                                                                     max_size=1100))
wild_times = st.one_of(st.integers(0, 2**35 * 10**9),
                       st.sampled_from([2**28 * 10**9 - 1, 2**28 * 10**9, 2**34 * 10**9 - 1,
                                        2**34 * 10**9]))
wild_units = st.one_of(st.none(), st.sampled_from(["m", "\n", "", "x" * 33, "°C"]))


@settings(max_examples=500, deadline=None)
@given(wild_points, wild_times, wild_values, wild_units)
def test_encode_refuses_exactly_what_the_receiver_refuses(point: str, ts_ns: int, value: object,
                                                          unit: str | None) -> None:
    # The gateway's checks (before building a pack) against the receiver's decode of the
    # plainest pack for that reading: one refuses when the other does.
    r = Reading(point, ts_ns, value)  # type: ignore[arg-type]
    units = {} if unit is None else {point: unit}
    rec: dict = {BN: f"{DEV}:{point}", BT: ts_ns // 10**9 if ts_ns % 10**9 == 0
                 else ts_ns / 1e9, **({BU: unit} if unit else {})}  # "": no unit
    rec |= ({VB: value} if type(value) is bool else {VS: value} if type(value) is str
            else {Q: "comm"} if value is None else {V: value})
    try:
        decode_pack([rec])
        refused = False
    except Reject:
        refused = True
    try:
        pack = encode_pack(DEV, [r], units)
    except ValueError:
        # Refused here but not there: only a time within a second of 2**28 or 2**34 s, where
        # a float's rounding decides; the gateway keeps clear of both edges.
        assert refused or min(abs(ts_ns - 2**28 * 10**9), abs(ts_ns - 2**34 * 10**9)) < 10**9
    else:
        assert not refused
        assert len(decode_pack(pack)) == 1  # and what it does build, the receiver takes


# Payloads (DESIGN §4).

def test_batch_payload_exact() -> None:
    data = batch_payload(DEV, 1, 1.5e9, [{BN: "gw-01:a", BT: S0, V: 1}])
    # Keys in bytewise order of their encodings: v, ts, dev, seq, recs; then v(2), bn(-2),
    # bt(-3) in the record. ts 1.5e9 is exact in single precision, so it takes 5 bytes.
    assert data.hex() == (
        "a5" "6176" "01" "627473" "fa4eb2d05e" "63646576" "6567772d3031" "63736571" "01"
        "6472656373" "81" "a3" "02" "01" "21" "67" + b"gw-01:a".hex()
        + "22" "1a" + S0.to_bytes(4).hex())
    assert decode_payload(data, "batch") == Payload(
        v=1, dev=DEV, seq=1, ts=1.5e9, kind="batch",
        records=[Record("gw-01:a", S0, 1, None, "")], events=[])


EVENTS = [
    Event(T0, "pump1.level", "raise", "level_high", "level high: 2.1 m", 2.1),
    Event(T0 + 1_500_000, "pump1.level", "clear", "level_high", "", None),
    Event(T0 + 3 * 10**9, "pump1.level", "gap", "", "no data for 30 s"),
]


def test_event_payload_round_trip() -> None:
    data = event_payload(DEV, 4, 1.7e9, EVENTS)
    obj = cbor2.loads(data)
    assert obj["evt"][1] == {"t": (T0 + 1_500_000) / 1e9, "point": "pump1.level",
                             "kind": "clear", "rule": "level_high", "msg": ""}  # no value
    assert list(obj) == ["v", "ts", "dev", "evt", "seq"]  # bytewise: "evt" < "seq"
    assert obj["evt"][0]["t"] == S0 and type(obj["evt"][0]["t"]) is int
    payload = decode_payload(data, "event")
    assert (payload.kind, payload.seq, payload.records) == ("event", 4, [])
    for got, want in zip(payload.events, EVENTS, strict=True):
        assert abs(got.ts_ns - want.ts_ns) < 1000  # float seconds on the wire
        assert (got.point, got.kind, got.rule, got.msg, got.value) == (
            want.point, want.kind, want.rule, want.msg, want.value)


def test_payload_encoders_refuse_bad_heads_and_events() -> None:
    for dev, seq, ts in [("GW", 1, 1.0), ("gw-01", 0, 1.0), ("gw-01", 2**63, 1.0),
                         ("gw-01", 1, math.nan)]:
        with pytest.raises(ValueError):
            batch_payload(dev, seq, ts, [])
    with pytest.raises(ValueError, match="kind"):
        event_payload(DEV, 1, 1.0, [Event(T0, "a", "boom", "r", "m")])


def payload(**changes: object) -> bytes:
    obj: dict[str, object] = {"v": 1, "dev": DEV, "seq": 5, "ts": 1.7e9,
                              "recs": [{BN: "gw-01:a", BT: S0, V: 1}]}
    obj.update(changes)
    return dumps_det({k: v for k, v in obj.items() if v is not DROP})


DROP = object()
EVT = {"t": S0, "point": "a", "kind": "raise", "rule": "r", "msg": "m"}


@pytest.mark.parametrize(("data", "kind", "reason", "seq"), [
    (dumps_det([1]), "batch", "malformed_payload", None),
    (payload(v=2), "batch", "bad_version", 5),
    (payload(v=0, extra=1), "batch", "bad_version", 5),
    (payload(v="1"), "batch", "malformed_payload", 5),
    (payload(v=1.0), "batch", "malformed_payload", 5),
    (payload(v=DROP), "batch", "malformed_payload", 5),
    (payload(recs=DROP), "batch", "malformed_payload", 5),
    (payload(extra=1), "batch", "malformed_payload", 5),
    (payload(), "event", "malformed_payload", 5),  # recs where evt belongs
    (payload(dev="GW-01"), "batch", "malformed_payload", 5),
    (payload(dev="gw"), "batch", "malformed_payload", 5),
    (payload(dev="g" * 65), "batch", "malformed_payload", 5),
    (payload(dev=b"gw-01"), "batch", "malformed_payload", 5),
    (payload(seq=0), "batch", "malformed_payload", None),
    (payload(seq=-1), "batch", "malformed_payload", None),
    (payload(seq=2**63), "batch", "malformed_payload", None),
    (payload(seq=5.0), "batch", "malformed_payload", None),
    (payload(seq=True), "batch", "malformed_payload", None),
    (payload(ts=math.nan), "batch", "malformed_payload", 5),
    (payload(ts="now"), "batch", "malformed_payload", 5),
    (payload(recs={}), "batch", "bad_field", 5),
    (payload(recs=[{BN: "gw-02:a", BT: S0, V: 1}]), "batch", "bad_field", 5),
    (payload(recs=[{BN: "gw-01a", BT: S0, V: 1}]), "batch", "bad_field", 5),
    (payload(recs=[{BN: "gw-01:a", BT: 5, V: 1}]), "batch", "relative_time", 5),
    (payload(recs=[{BN: "gw-01:a", BT: S0, V: [[1]]}]), "batch", "too_deep", None),
    (payload(recs=DROP, evt=[EVT]), "event", None, None),
    (payload(recs=DROP, evt=[{**EVT, "t": 5}]), "event", "relative_time", 5),
    (payload(recs=DROP, evt=[{**EVT, "kind": ["raise"]}]), "event", "too_deep", None),
    (payload(recs=DROP, evt=[{**EVT, "kind": "boom"}]), "event", "bad_field", 5),
    (payload(recs=DROP, evt=[{**EVT, "value": None}]), "event", "bad_field", 5),
    (payload(recs=DROP, evt=[{**EVT, "value": "1"}]), "event", "bad_field", 5),
    (payload(recs=DROP, evt=[{**EVT, "extra": 1}]), "event", "bad_field", 5),
    (payload(recs=DROP, evt=[{k: v for k, v in EVT.items() if k != "msg"}]), "event",
     "bad_field", 5),
    (payload(recs=DROP, evt=[{**EVT, "point": "a b"}]), "event", "bad_field", 5),
    (payload(recs=DROP, evt=[{**EVT, "rule": 1}]), "event", "bad_field", 5),
    (payload(recs=DROP, evt=[{**EVT, "msg": "x" * 1025}]), "event", "bad_field", 5),
    (payload(recs=DROP, evt=[1]), "event", "bad_field", 5),
    (payload(recs=DROP, evt={}), "event", "bad_field", 5),
])
def test_decode_payload_rejects(data: bytes, kind: str, reason: str | None,
                                seq: int | None) -> None:
    if reason is None:  # the control case: the table's base event is valid
        assert decode_payload(data, kind).events[0].kind == "raise"
        return
    with pytest.raises(Reject) as e:
        decode_payload(data, kind)
    assert (e.value.reason, e.value.seq) == (reason, seq)


def test_decode_payload_limits() -> None:
    recs = [{BN: "gw-01:a", BT: S0, V: 1}, {V: 2}, {V: 3}]
    assert len(decode_payload(payload(recs=recs), "batch", max_records=3).records) == 3
    with pytest.raises(Reject, match="limit 2"):
        decode_payload(payload(recs=recs), "batch", max_records=2)
    with pytest.raises(ValueError):
        decode_payload(payload(), "cmd")


def test_precheck_runs_after_the_head_and_before_the_records() -> None:
    seen: list[tuple[str, int]] = []

    def precheck(dev: str, seq: int) -> None:
        seen.append((dev, seq))
        raise Reject("dev_mismatch", "stop")

    bad_records = payload(recs=[{BN: "gw-01:a", BT: S0}])
    with pytest.raises(Reject) as e:
        decode_payload(bad_records, "batch", precheck=precheck)
    assert (e.value.reason, e.value.seq, seen) == ("dev_mismatch", 5, [(DEV, 5)])
    seen.clear()
    with pytest.raises(Reject, match="malformed_payload"):
        decode_payload(payload(seq=0), "batch", precheck=precheck)
    assert seen == []


def test_pack_size() -> None:
    """100 readings of 10 float points: about 16 bytes a reading inside the payload."""
    units = {f"pump{i}.p": u for i, u in enumerate(["m", "m3/h", "bar", "Cel", "%RH", "kW",
                                                    "V", "A", "Hz", "m"])}
    rs = [Reading(p, T0 + k * 10**9, 10.0 + k / 7 + i / 3)
          for k in range(10) for i, p in enumerate(units)]
    data = batch_payload(DEV, 1, 1.7e9, encode_pack(DEV, rs, units))
    assert len(data) / len(rs) < 16
