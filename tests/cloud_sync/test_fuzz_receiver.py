"""Fuzz the receiver's whole check path: bytes -> verify_message -> store, for hostile input.

test_verify_message.py fuzzes verify_message with random and mutated bytes; this adds what
those rarely reach: CBOR built from a grammar that lies (lengths beyond the data or near
2**64, tags, indefinite items, non-UTF-8 text, nesting past the limit), as the COSE envelope
and as a signed payload, carried on to the store, plus a differential property for valid
batches (what the gateway encodes is what the store keeps).

Invariants: every input is Verified (then stored or found a duplicate, and the same again on
replay) or refused with a reason from REASONS; nothing else escapes; a refusal stores nothing.

CI runs CIM_FUZZ_EXAMPLES (default 150) examples per target; the long run in
cloud_sync/receiver/README.md sets it to 100000.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cimedge.cloud_sync import payload2
from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.cose import aad, kid_for, sign1
from cimedge.cloud_sync.inflate import deflate
from cimedge.cloud_sync.receiver.store import SqliteStore
from cimedge.cloud_sync.reject import REASONS, Reject
from cimedge.cloud_sync.senml import batch_payload, encode_pack
from cimedge.cloud_sync.verify import KeyInfo, verify_message
from cimedge.edge.model import Quality, Reading

DEV = "gw-01"
NOW = 1.8e9
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KID = kid_for(KEY.public_key().public_bytes_raw())
KEYS = {KID: KeyInfo(dev=DEV, public_key=KEY.public_key().public_bytes_raw(), status="active")}
EXAMPLES = int(os.environ.get("CIM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# CIM_FUZZ_MEMORY=1: measure what verify_message allocates per input (tracemalloc; slow).
MEMORY = bool(os.environ.get("CIM_FUZZ_MEMORY"))
peaks = {"bytes": 0, "input": 0, "calls": 0}

_store: SqliteStore | None = None
SEQS = itertools.count(10**12)


def store() -> SqliteStore:
    """One in-memory store for the whole run: accepted messages accumulate, as in service."""
    global _store  # noqa: PLW0603 - hypothesis examples cannot share a function fixture
    if _store is None:
        _store = SqliteStore(Path(":memory:"))
    return _store


def receive(data: bytes, kind: str = "batch") -> str:
    """The receiver's path for one message; returns the outcome or the reason refused."""
    before = store().message_count()
    if MEMORY:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    try:
        try:
            v = verify_message(DEV, kind, data, KEYS.get, now=NOW, max_size=1 << 16)
        finally:
            if MEMORY:
                peaks["bytes"] = max(peaks["bytes"], tracemalloc.get_traced_memory()[1] - base)
                peaks["input"] = max(peaks["input"], len(data))
                peaks["calls"] += 1
    except Reject as r:
        assert r.reason in REASONS, r
        assert r.dev == DEV
        assert store().message_count() == before
        event(f"refused: {r.reason}")
        return r.reason
    first = store().commit([v])[0]
    again = store().commit([v])[0]  # a replay: never stored twice
    if isinstance(first, Reject):
        assert first.reason in ("seq_conflict", "bad_field")
        assert isinstance(again, Reject)
        assert again.reason == first.reason
        event(f"store refused: {first.reason}")
        return first.reason
    assert again == "duplicate"
    event(f"accepted: {first}")
    return first


@pytest.fixture(scope="module", autouse=True)
def memory_report() -> Iterator[None]:
    """With CIM_FUZZ_MEMORY set, trace allocations and print the largest per input."""
    if MEMORY:
        tracemalloc.start()
    yield
    if MEMORY:
        tracemalloc.stop()
        print(f"\nverify_message: {peaks['calls']} inputs of up to {peaks['input']} bytes; "
              f"the most any one allocated at its peak: {peaks['bytes']} bytes")


def head(major: int, arg: int, width: int) -> bytes:
    """A CBOR head for arg, in the shortest form or a longer one (which cbor2 also reads)."""
    if width == 0 and arg < 24:  # noqa: PLR2004
        return bytes([major << 5 | arg])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * size) and size >= width:
            return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
    return bytes([major << 5 | 27]) + (arg % (1 << 64)).to_bytes(8, "big")


lies = st.one_of(st.integers(0, 5), st.integers(0, 300),
                 st.sampled_from([2**16, 2**31 - 1, 2**32, 2**63, 2**64 - 1]))


def claim(draw: st.DrawFn, true: int) -> int:
    """The length a head states: mostly the truth, so that items nest; one in eight lies."""
    return draw(lies) if draw(st.integers(0, 7)) == 0 else true
widths = st.integers(0, 4).map(lambda n: [0, 1, 2, 4, 8][n])


@st.composite
def cbor(draw: st.DrawFn, depth: int = 0) -> bytes:  # noqa: C901, PLR0911 - one case per kind
    """One CBOR item whose heads may lie; children are real items, as many as fit the draw."""
    kinds = ["uint", "nint", "bytes", "text", "float", "simple", "tag", "indefinite"]
    if depth < 7:  # noqa: PLR2004 - past the decoders' limits, not forever
        kinds += ["array", "map", "array", "map"]
    kind = draw(st.sampled_from(kinds))
    w = draw(widths)
    if kind in ("uint", "nint"):
        return head(0 if kind == "uint" else 1, draw(st.integers(0, 2**64 - 1)), w)
    if kind in ("bytes", "text"):
        body = draw(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
        return head(2 if kind == "bytes" else 3, claim(draw, len(body)), w) + body
    if kind == "float":
        x = draw(st.floats(allow_nan=True, allow_infinity=True))
        return draw(st.sampled_from([b"\xfb" + struct.pack(">d", x),
                                     b"\xfa" + struct.pack(">f", x if abs(x) < 3e38 or
                                                           not math.isfinite(x) else 0.0),
                                     b"\xf9\x7e\x00", b"\xf9\x7c\x00"]))
    if kind == "simple":
        return draw(st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\x20",
                                     b"\xff", b"\xfc"]))
    if kind == "tag":
        tag = draw(st.sampled_from([0, 1, 2, 3, 18, 24, 28, 29, 55799, 256, 2**32]))
        return head(6, tag, w) + draw(cbor(depth + 1))
    if kind == "indefinite":
        items = draw(st.lists(cbor(depth + 1), max_size=3))
        return draw(st.sampled_from([b"\x9f", b"\xbf", b"\x5f", b"\x7f"])) + b"".join(items) + \
            draw(st.sampled_from([b"\xff", b""]))
    n = draw(st.integers(0, 4))
    items = [draw(cbor(depth + 1)) for _ in range(n * (2 if kind == "map" else 1))]
    return head(4 if kind == "array" else 5, claim(draw, n), w) + b"".join(items)


text_keys = st.sampled_from([b"\x61v", b"\x63dev", b"\x63seq", b"\x62ts", b"\x64recs",
                             b"\x63evt", b"\x61q", b"\x62vs"])


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A map that looks like a batch payload, its values hostile items or the right ones."""
    good = {b"\x61v": b"\x01", b"\x63dev": dumps_det(DEV), b"\x63seq": b"\x05",
            b"\x62ts": dumps_det(1.7e9),
            b"\x64recs": dumps_det([{-2: f"{DEV}:p.x", -3: 1.7e9, 2: 1.5}])}
    keys = draw(st.lists(text_keys, max_size=6, unique=True) | st.permutations(list(good)))
    body = b"".join(k + (good[k] if k in good and draw(st.integers(0, 3)) else draw(cbor(2)))
                    for k in keys)
    return head(5, claim(draw, len(keys)), 0) + body


@st.composite
def payloads2(draw: st.DrawFn) -> bytes:
    """A map that looks like a v2 payload (key 0 first, so it is read as v2): its values
    hostile items or the right ones, and a packz/evtz that is hostile CBOR or not DEFLATE."""
    pack = dumps_det([{-2: f"{DEV}:p.x", -3: 1.7e9, 2: 1.5}])
    good = {0: b"\x02", 1: b"\x05", 2: pack, 3: dumps_det(deflate(pack)),
            4: dumps_det([]), 5: dumps_det(deflate(b"\x80"))}
    keys = [0, *draw(st.lists(st.integers(1, 6), max_size=4, unique=True))]
    body = b""
    for k in keys:
        choice = draw(st.integers(0, 4))
        if k in good and choice:
            value = good[k]
        elif k in (3, 5) and choice == 0 and draw(st.booleans()):
            inner = draw(cbor(1)) if draw(st.booleans()) else draw(st.binary(max_size=60))
            value = dumps_det(deflate(inner) if draw(st.integers(0, 3)) else inner)
        else:
            value = draw(cbor(2))
        body += bytes([k]) + value
    return head(5, claim(draw, len(keys)), 0) + body


@FUZZ
@given(cbor())
def test_fuzz_hostile_cbor_as_the_envelope(data: bytes) -> None:
    receive(data)
    receive(b"\xd2" + data)  # behind a COSE_Sign1 tag


@FUZZ
@given(cbor(), st.sampled_from(["batch", "event"]))
def test_fuzz_hostile_cbor_signed_as_the_payload(data: bytes, kind: str) -> None:
    receive(sign1(data, KEY), kind)


@FUZZ
@given(payloads())
def test_fuzz_hostile_fields_in_a_signed_payload(data: bytes) -> None:
    receive(sign1(data, KEY))


@FUZZ
@given(payloads2(), st.sampled_from(["batch", "event"]))
def test_fuzz_hostile_fields_in_a_signed_v2_payload(data: bytes, kind: str) -> None:
    receive(sign1(data, KEY, external_aad=aad(kind, DEV)), kind)


@FUZZ
@given(cbor(), st.sampled_from(["batch", "event"]), st.booleans())
def test_fuzz_hostile_cbor_inflated_from_a_signed_v2_payload(data: bytes, kind: str,
                                                            raw: bool) -> None:
    # What a packz/evtz inflates to is untrusted CBOR too (or the version's value is).
    zkey = b"\x03" if kind == "batch" else b"\x05"
    body = b"\xa1\x00" + data if raw else b"\xa3\x00\x02\x01\x05" + zkey + dumps_det(deflate(data))
    receive(sign1(body, KEY, external_aad=aad(kind, DEV)), kind)


def _stored(value: object) -> object:
    """A value as the store keeps it: numbers as floats (SenML v is a number)."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


names = st.sampled_from(["p1.level", "p2.flow", "lamp.on", "env.note", "x"])
values = st.one_of(st.floats(allow_nan=False, width=64), st.integers(-(2**53), 2**53),
                   st.booleans(), st.text(max_size=30).filter(lambda s: "\0" not in s),
                   st.none())


@FUZZ
@given(st.lists(st.tuples(names, st.integers(2**28, 2**33), values,
                          st.sampled_from(list(Quality))), min_size=1, max_size=40),
       st.integers(1, 2**40))
def test_fuzz_what_the_gateway_sends_is_what_the_store_keeps(  # v1 and v2 in turn
        rows: list[tuple[str, int, object, Quality]], seq: int) -> None:
    seq = next(SEQS)  # unique, so the store's earlier examples do not conflict
    contract = 1 + seq % 2
    readings = [Reading(n, t * 10**9 + 123_000, v, q if v is not None else Quality.COMM)
                for n, t, v, q in rows]
    try:
        recs = encode_pack(DEV, readings, {"p1.level": "m"}, contract=contract)
    except ValueError:
        return  # the gateway refuses to sign what the receiver would refuse
    data = sign1(batch_payload(DEV, seq, NOW, recs), KEY) if contract == 1 else \
        sign1(payload2.batch_payload(seq, recs), KEY, external_aad=aad("batch", DEV))
    outcome = receive(data)
    assert outcome == "stored"
    rows = store()._db.execute(  # noqa: SLF001 - only this seq: the store grows all run
        "SELECT name, t, v, vs, vb, q FROM readings WHERE dev = ? AND seq = ?", (DEV, seq))
    got = sorted(((n, t, bool(vb) if vb is not None else vs if vs is not None else v, q)
                  for n, t, v, vs, vb, q in rows), key=repr)
    sent = sorted(((f"{DEV}:{r.point}", r.ts_ns / 1e9, _stored(r.value),
                    r.quality.label or "") for r in readings), key=repr)
    assert len(got) == len(sent)
    for (n1, t1, v1, q1), (n2, t2, v2, q2) in zip(sent, got, strict=True):
        assert (n1, q1) == (n2, q2)
        assert t1 == pytest.approx(t2, abs=1e-6 if contract == 1 else 5e-4)
        assert v1 == v2


def _batch_map(recs: bytes, n: int) -> bytes:
    return (b"\xa5" + dumps_det("v") + b"\x01" + dumps_det("dev") + dumps_det(DEV)
            + dumps_det("seq") + b"\x05" + dumps_det("ts") + dumps_det(1.7e9)
            + dumps_det("recs") + head(4, n, 0) + recs)


def _zeros_deflated(mib: int) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    return b"".join(c.compress(bytes(1 << 20)) for _ in range(mib)) + c.flush()


SIZE = 256 << 10
HOSTILE = {  # name: (input, the most it may allocate per byte of input)
    "nested arrays": (b"\x81" * (SIZE - 1) + b"\x00", 1.5),
    "bstr claiming 2**64-1 bytes": (b"\xd2\x84\x5b" + b"\xff" * 8 + bytes(SIZE), 1.5),
    "array claiming 2**32 items": (b"\xd2\x84\x9a\xff\xff\xff\xff" + bytes(SIZE), 1.5),
    "junk behind a tag": (b"\xd2" + bytes(range(256)) * (SIZE // 256), 1.5),
    # Only an enrolled key gets this far: cbor2 builds every map before the fields are read.
    "signed, tiny records": (sign1(_batch_map(b"\xa1\x02\x01" * (SIZE // 3), SIZE // 3),
                                   KEY), 100),
    # v2: what inflates is bounded by 1 MiB, whatever the wire size; a zero-filled stream
    # stops at the bound, before any of it is decoded.
    "signed v2 packz of a 64 MiB zero stream": (
        sign1(b"\xa3\x00\x02\x01\x05\x03" + dumps_det(_zeros_deflated(64)), KEY,
              external_aad=aad("batch", DEV)), 1.3 * 2**20 / 65_000),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_large_hostile_input_allocates_in_proportion_to_its_size(name: str) -> None:
    data, factor = HOSTILE[name]
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(Reject):
            verify_message(DEV, "batch", data, KEYS.get, now=NOW)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()
    assert peak < factor * len(data) + 64_000, f"{peak} bytes for {len(data)}"
