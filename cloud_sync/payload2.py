"""Contract v2 payloads (DESIGN.md 4a): integer keys, the pack or events, DEFLATE when smaller.

    {0: 2, 1: seq, 2: pack | 3: packz | 4: evt | 5: evtz}

``pack`` is a SenML CBOR array (RFC 8428 §6, "q_" quality, millisecond times); ``evt`` is
v1's event list; ``packz``/``evtz`` are the raw DEFLATE (RFC 1951) of the deterministic
CBOR of either, which the encoder sends when that is smaller. There is no ``dev`` and no
``ts``: the topic and the COSE external AAD carry the device, SenML times the time. A
batch carries 2 or 3, an event 4 or 5; the AAD binds which it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

import cbor2

from cimedge.cloud_sync.cbor_limits import loads_untrusted
from cimedge.cloud_sync.inflate import MAX_INFLATED, MAX_RATIO, deflate, inflate
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.senml import Payload, decode_pack, event_list, events_of
from cimedge.edge.model import Event

VERSION, SEQ, PACK, PACKZ, EVT, EVTZ = 0, 1, 2, 3, 4, 5
BODY = {"batch": (PACK, PACKZ), "event": (EVT, EVTZ)}
_MAX_SEQ = 2**63


def _head_size(n: int) -> int:
    return 1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5  # noqa: PLR2004


def _body(key: int, zkey: int, items: list) -> dict[int, object]:
    """The plain or the DEFLATE form of ``items``, whichever is smaller on the wire."""
    raw = cbor2.dumps(items, canonical=True)  # deterministic: see senml._dumps
    z = deflate(raw)
    if len(z) + _head_size(len(z)) < len(raw):
        return {zkey: z}
    return {key: items}


def _check_seq(seq: int) -> None:
    if type(seq) is not int or not 1 <= seq < _MAX_SEQ:
        raise ValueError(f"bad payload head: seq={seq!r}")


def batch_payload(seq: int, pack: list) -> bytes:
    """The v2 batch payload {0: 2, 1: seq, 2: pack | 3: packz}, deterministic CBOR."""
    _check_seq(seq)
    return cbor2.dumps({VERSION: 2, SEQ: seq, **_body(PACK, PACKZ, pack)}, canonical=True)


def event_payload(seq: int, events: Sequence[Event]) -> bytes:
    """The v2 event payload {0: 2, 1: seq, 4: evt | 5: evtz}; ValueError on a bad event."""
    _check_seq(seq)
    return cbor2.dumps({VERSION: 2, SEQ: seq, **_body(EVT, EVTZ, event_list(events))},
                       canonical=True)


def peek_contract(payload: bytes) -> int:
    """The contract a payload claims, from its first bytes alone: 2 when it is a map whose
    first key is 0 (deterministic encoding puts v2's key 0 first), else 1.

    Nothing is decoded, so a payload costs nothing before its signature is checked with
    this contract's AAD; decode_map() then checks the whole map agrees (contract_of).
    """
    if not payload:
        return 1
    head = payload[0]
    if head >> 5 != 5 or (head & 0x1F) > 27:  # noqa: PLR2004 - not a definite-length map
        return 1
    info = head & 0x1F
    at = 1 if info < 24 else 1 + (1 << (info - 24))  # noqa: PLR2004
    return 2 if payload[at:at + 1] == b"\x00" else 1


def contract_of(obj: object) -> int:
    """1 or 2, from a payload map's keys (DESIGN.md 4a); Reject when it is neither."""
    if type(obj) is not dict:
        _malformed("payload is not a map")
    if VERSION in obj:
        if type(obj[VERSION]) is not int:
            _malformed("key 0 (version) is not an integer")
        if obj[VERSION] != 2:  # noqa: PLR2004
            raise Reject("bad_version", f"version {obj[VERSION]}, expected 2 (or v1's 'v')")
        return 2
    if "v" in obj:
        return 1
    _malformed("payload map has neither 'v' (contract 1) nor 0 (contract 2)")


def decode_map(obj: dict, kind: str, dev: str, *, max_records: int = 100_000,
               precheck: Callable[[str, int], None] | None = None,
               max_inflated: int = MAX_INFLATED, max_ratio: int = MAX_RATIO,
               ts: float = 0.0) -> Payload:
    """Check a v2 payload map (already decoded with limits) and decode its body.

    ``dev`` is the topic's device (the AAD bound it). ``precheck(dev, seq)`` runs once the
    head is valid, before anything is inflated or decoded. The payload's ts, which v2 does
    not send, is the newest time in it, else ``ts``.
    """
    if kind not in BODY:
        raise ValueError(f"kind must be 'batch' or 'event', not {kind!r}")
    seq = obj.get(SEQ)
    try:
        return _decode(obj, kind, dev, max_records, precheck, max_inflated, max_ratio, ts)
    except Reject as e:
        if e.seq is None and type(seq) is int and 1 <= seq < _MAX_SEQ:
            e.seq = seq
        raise


def _decode(obj: dict, kind: str, dev: str, max_records: int,
            precheck: Callable[[str, int], None] | None, max_inflated: int, max_ratio: int,
            ts: float) -> Payload:
    key, zkey = BODY[kind]
    keys = set(obj)
    if any(type(k) is not int for k in keys) or len(keys & {key, zkey}) != 1 \
            or keys - {VERSION, SEQ, key, zkey}:
        _malformed(f"keys {sorted(map(repr, keys))}, expected 0, 1 and one of {key}, {zkey} "
                   f"for a {kind}")
    seq = obj[SEQ] if SEQ in obj else None
    if type(seq) is not int or not 1 <= seq < _MAX_SEQ:
        _malformed("seq (key 1) is not an integer in [1, 2**63)")
    if precheck is not None:
        precheck(dev, seq)
    inflated = 0
    if zkey in obj:
        if type(obj[zkey]) is not bytes:
            _malformed(f"key {zkey} is not a bstr of DEFLATE")
        raw = inflate(obj[zkey], max_out=max_inflated, max_ratio=max_ratio)
        inflated = len(raw)
        body = loads_untrusted(raw, max_size=max_inflated, max_depth=2)
    else:
        body = obj[key]
    records, events = [], []
    if kind == "batch":
        records = decode_pack(body, max_records=max_records, contract=2)
        if bad := [r.name for r in records if not r.name.startswith(f"{dev}:")]:
            raise Reject("bad_field", f"record name {bad[0]!r} is not under {dev}:")
        newest = max((r.t for r in records), default=ts)
    else:
        events = events_of(body, max_records)
        newest = max((e.ts_ns / 1e9 for e in events), default=ts)
    return Payload(v=2, dev=dev, seq=seq, ts=newest, kind=kind, records=records,
                   events=events, inflated=inflated)


def _malformed(detail: str) -> NoReturn:
    raise Reject("malformed_payload", detail)
