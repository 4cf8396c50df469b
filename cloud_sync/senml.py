"""SenML packs in CBOR (RFC 8428 §6) and the batch and event payloads that carry them.

Packs follow the contract they travel in (DESIGN.md 4 and 4a): v1 marks quality with the
extension label "q"; v2 with the must-understand "q_" (RFC 8428 §4.4), and its times have
millisecond resolution: the encoder rounds each reading's time to the millisecond and
sends it as whole seconds (an int) where it is one, else as the shortest float that
resolves to that millisecond, and the receiver rounds what it resolves to the millisecond.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import cbor2
import msgspec

from cimedge.cloud_sync.cbor_limits import loads_untrusted
from cimedge.cloud_sync.reject import Reject
from cimedge.edge.model import Event, Quality, Reading

# RFC 8428 §6 integer labels; "q" (quality) is our extension label and stays text; v2 uses
# the must-understand "q_", so a consumer that does not know it refuses the pack.
BN, BT, BU, N, U, V, VS, VB, T = -2, -3, -4, 0, 1, 2, 3, 4, 6
Q, Q2 = "q", "q_"
QUALITY_LABEL = {1: Q, 2: Q2}  # per contract
_LABELS = {BN, BT, BU, N, U, V, VS, VB, T, Q}
_LABELS_BY_CONTRACT = {1: frozenset(_LABELS), 2: frozenset(_LABELS - {Q} | {Q2})}
_QUALITIES = frozenset(q.label for q in Quality if q.label)
_NAME = re.compile(r"[A-Za-z0-9:._/-]{1,200}")
_UNIT = re.compile(r"[^\x00-\x1f\x7f]{1,32}")
_DEV = re.compile(r"[a-z0-9-]{3,64}")
_MAX_TEXT = 1024  # vs, msg
_MIN_TIME = 2.0**28  # RFC 8428 §4.5.3: below this a time is relative to "now"
_MAX_TIME = 2.0**34  # year 2514; beyond is a broken clock, and ns conversion must not overflow
_EVENT_KINDS = frozenset({"raise", "clear", "action", "gap"})  # DESIGN.md section 4, v1
_EVENT_KEYS = frozenset({"t", "point", "kind", "rule", "msg"})


class Record(msgspec.Struct, frozen=True):
    """One resolved SenML record: full name, absolute time in seconds, value, unit, quality."""

    name: str
    t: float
    value: float | int | bool | str | None
    unit: str | None
    quality: str  # "" for good, else "stale" | "range" | "comm"


class Payload(msgspec.Struct, frozen=True):
    """A decoded batch or event payload (DESIGN §4)."""

    v: int
    dev: str
    seq: int
    ts: float
    kind: str  # "batch" | "event"
    records: list[Record]
    events: list[Event]
    inflated: int = 0  # v2: bytes a packz or evtz inflated to


def _seconds(ns: int) -> float | int:
    # Whole seconds go out as CBOR ints: 1-5 bytes where a float would often take 9.
    return ns // 10**9 if ns % 10**9 == 0 else ns / 1e9


_MS = 10**6  # ns


def _offset_ms(bt: float | int, bt_ns: int, ts_ns: int) -> float | int:
    """A v2 t offset from bt to ts_ns (both whole ms): an int where whole seconds, else the
    shortest float (half, single, double) with which bt + t resolves to ts_ns's ms."""
    delta = ts_ns - bt_ns
    if delta % 10**9 == 0:
        return delta // 10**9
    exact = delta / 1e9
    want = ts_ns // _MS
    for fmt in ("<e", "<f"):
        try:
            x = struct.unpack(fmt, struct.pack(fmt, exact))[0]
        except OverflowError:
            continue
        if round((bt + x) * 1000) == want and abs(x - exact) < 2.5e-4:  # noqa: PLR2004
            return x
    return exact


def _to_ms(readings: Sequence[Reading]) -> list[Reading]:
    """The readings with their times rounded to the millisecond (contract v2)."""
    return [r if r.ts_ns % _MS == 0 else
            Reading(r.point, (r.ts_ns + _MS // 2) // _MS * _MS, r.value, r.quality)
            for r in readings]


# A second inside the receiver's time limits: at the edges a float's rounding would decide.
_MIN_NS, _MAX_NS = (int(_MIN_TIME) + 1) * 10**9, (int(_MAX_TIME) - 1) * 10**9
_SEPARATORS = ".:/"  # where a point name's "folder" ends: "pump1." of "pump1.level"


def encode_pack(dev: str, readings: Sequence[Reading], units: Mapping[str, str], *,
                contract: int = 1) -> list[dict]:
    """Readings -> a SenML pack as small as valid SenML allows (DESIGN §4, RFC 8428 §4.5).

    ``contract`` 2 marks quality with "q_" and rounds times to the millisecond (4a).

    Unit-less points come first (bu cannot be unset). Then records go in time order, by
    folder, unit and name within one time, so a device's poll, which shares one time, is one
    run of records; and where that names and times values at a high cost (one reading per
    time, as a backlog of one point has), in point order instead, whichever is smaller:

    - bt opens a new time, unless a t offset on each record of that time costs less (whole
      seconds: small ints); a float time costs 9 bytes, so once per poll, not per value;
    - bn is, per run of names in one folder ("{dev}:pump1."), either their longest common
      prefix with a short n on each record, or each name whole as it changes;
    - bu is set when the unit changes.

    Raises ValueError, before building anything, on a reading the receiver would refuse (bad
    name, unit, time or value): the gateway must not sign what is never acked.
    """
    if not readings:
        return []
    if contract not in QUALITY_LABEL:
        raise ValueError(f"no contract {contract!r}")
    order = _points(dev, readings, units)
    _check_values(readings)
    if contract == 2:  # noqa: PLR2004
        readings = _to_ms(readings)
    rows = sorted(readings, key=lambda r: (order[r.point][0], r.ts_ns, *order[r.point][1:]))
    pack, cost = _build(rows, order, contract)
    if cost > _COSTLY * len(rows):
        by_point = sorted(readings, key=lambda r: (*_unit_name(order[r.point]), r.ts_ns))
        other, other_cost = _build(by_point, order, contract)
        if other_cost < cost:
            pack = other
    return pack


_COSTLY = 6  # bytes a value for its name and time, above which point order is tried too


def _unit_name(key: tuple[bool, str, str, str]) -> tuple[bool, str, str]:
    return key[0], key[2], key[3]


def _folder(name: str) -> str:
    return name[:max(name.rfind(c) for c in _SEPARATORS) + 1]


def _build(rows: list[Reading], order: Mapping[str, tuple[bool, str, str, str]],
           contract: int = 1) -> tuple[list[dict], int]:
    """The pack for ``rows`` in this order, and the bytes it spends on names, units, times."""
    names = [order[r.point][3] for r in rows]
    bases = _base_names(names, [order[r.point][1] for r in rows])
    pack: list[dict] = []
    bn = bu = None
    bt_ns = rows[0].ts_ns
    bt = _seconds(bt_ns)
    q_label = QUALITY_LABEL[contract]
    cost = 0
    i, n = 0, len(rows)
    while i < n:
        ts_ns, j = rows[i].ts_ns, i + 1
        while j < n and rows[j].ts_ns == ts_ns:
            j += 1
        # One time: a bt (once) or a t offset on each of its j - i records, whichever is less.
        offset = _seconds(ts_ns - bt_ns) if contract == 1 else _offset_ms(bt, bt_ns, ts_ns)
        new_bt = not pack or (offset != 0 and _size(_seconds(ts_ns)) < (j - i) * _size(offset))
        if new_bt:
            bt_ns, offset, bt = ts_ns, 0, _seconds(ts_ns)
            cost += _size(bt)
        elif offset != 0:
            cost += (j - i) * _size(offset)
        for k in range(i, j):
            r = rows[k]
            # Keys in RFC 8949 §4.2.1 order (n, u, v, vs, vb, t, bn, bt, bu, "q"/"q_"), so the
            # C encoder's length-first sort leaves them as they are (see _dumps).
            rec: dict = {}
            base = bases[k]
            if names[k] != base:
                rec[N] = names[k][len(base):]
                cost += len(rec[N]) + 2
            value = r.value
            if isinstance(value, bool):
                rec[VB] = value
            elif isinstance(value, str):
                rec[VS] = value
            elif value is not None:
                rec[V] = value
            if offset != 0:
                rec[T] = offset
            if base != bn:
                bn = rec[BN] = base
                cost += len(base) + 3
            if k == i and new_bt:
                rec[BT] = _seconds(ts_ns)
            if (u := order[r.point][2] or None) != bu:
                bu = rec[BU] = u
                cost += len(u or "") + 2
            if r.quality != Quality.GOOD or value is None:
                rec[q_label] = r.quality.label or "comm"
            pack.append(rec)
        i = j
    return pack, cost


def _base_names(names: list[str], folders: list[str]) -> list[str]:
    """Per record, its bn: per run of one folder, a common prefix or each name whole."""
    out: list[str] = []
    i = 0
    for _, group in itertools.groupby(folders):
        j = i + sum(1 for _ in group)
        run = names[i:j]
        common = os.path.commonprefix([min(run), max(run)])  # the run's, from its extremes
        # bn + n on each record (n omitted where it would be "") vs bn at each change of name
        same = sum(map(common.__eq__, run))
        prefixed = len(common) + 3 + sum(map(len, run)) - (j - i) * (len(common) - 2) \
            - 2 * same
        changes = [b for a, b in zip(run, run[1:], strict=False) if a != b]
        whole = len(run[0]) + 3 + sum(map(len, changes)) + 3 * len(changes)
        out.extend(run if not changes or whole <= prefixed else [common] * (j - i))
        i = j
    return out


def _size(x: int | float) -> int:
    """Bytes of a number in deterministic CBOR (shortest form), its label included."""
    if type(x) is int:
        m = x if x >= 0 else -1 - x
        return 2 if m < 24 else 3 if m < 256 else 4 if m < 65536 else 6 if m < 2**32 else 10
    try:
        if struct.unpack("<e", struct.pack("<e", x))[0] == x:
            return 4
    except OverflowError:
        pass
    return 6 if struct.unpack("<f", struct.pack("<f", x))[0] == x else 10


def _points(dev: str, readings: Sequence[Reading],
            units: Mapping[str, str]) -> dict[str, tuple[bool, str, str, str]]:
    """Per point: (has a unit, folder, unit or "", full name), name and unit checked once.

    Refuses, as ValueError, a name or unit decode_pack at the receiver would (tested to agree).
    """
    order: dict[str, tuple[bool, str, str, str]] = {}
    for r in readings:
        if r.point in order:
            continue
        name = f"{dev}:{r.point}"
        if len(name) > 200 or not _NAME.fullmatch(name):  # noqa: PLR2004
            raise ValueError(f"unsendable reading: name {name!r} does not match "
                             f"{_NAME.pattern}")
        unit = units.get(r.point) or ""  # "" is no unit, as a config without one has
        if unit and (type(unit) is not str or not _UNIT.fullmatch(unit)):
            raise ValueError(f"unsendable reading: {r.point} unit {unit!r} is not a unit "
                             f"({_UNIT.pattern})")
        order[r.point] = (unit != "", _folder(name), unit, name)
    return order


def _check_values(readings: Sequence[Reading]) -> None:
    """Refuse, as ValueError, a time or value decode_pack at the receiver would."""
    for r in readings:
        if type(r.ts_ns) is not int or not _MIN_NS <= r.ts_ns < _MAX_NS:
            what = "relative" if type(r.ts_ns) is int and r.ts_ns < _MIN_NS else "past 2**34"
            raise ValueError(f"unsendable reading: {r.point} time {r.ts_ns} ns is not in "
                             f"[2**28 + 1, 2**34 - 1) s ({what})")
        v = r.value
        if v is None or type(v) is bool or type(v) is float:
            continue
        if type(v) is int:
            if not -(2**64) <= v < 2**64:
                raise ValueError(f"unsendable reading: {r.point} value is beyond a CBOR integer")
        elif type(v) is str:
            if len(v) > _MAX_TEXT:
                raise ValueError(f"unsendable reading: {r.point} vs is longer than "
                                 f"{_MAX_TEXT} characters")
        else:
            raise ValueError(f"unsendable reading: {r.point} value {v!r} is not a number, "
                             "bool or text")


def decode_pack(recs: object, *, max_records: int = 100_000, contract: int = 1) -> list[Record]:
    """Resolve a SenML pack (bn, bt, bu per RFC 8428 §4.5) after checking every field.

    ``contract`` 2 takes quality from "q_" (and refuses "q"), and rounds each resolved
    time to the millisecond (DESIGN.md 4a).
    """
    labels, q_label = _LABELS_BY_CONTRACT[contract], QUALITY_LABEL[contract]
    if type(recs) is not list:
        _bad("recs is not an array")
    if len(recs) > max_records:
        _bad(f"{len(recs)} records, limit {max_records}")
    out: list[Record] = []
    bn, bt, bu = "", 0.0, None
    for i, rec in enumerate(recs):
        if type(rec) is not dict:
            _bad(f"record {i} is not a map")
        for label in rec:
            # Type first: True == 1 and 2.0 == 2 would pass the set lookup.
            if type(label) not in (int, str) or label not in labels:
                _bad(f"record {i}: unknown label {label!r}")
        if BN in rec:
            bn = _text(rec[BN], f"record {i} bn", 200)
        if BT in rec:
            bt = _number(rec[BT], f"record {i} bt")
        if BU in rec:
            bu = _unit(rec[BU], f"record {i} bu")
        name = bn + _text(rec.get(N, ""), f"record {i} n", 200)
        if not _NAME.fullmatch(name):
            _bad(f"record {i}: name {name!r} does not match {_NAME.pattern}")
        t = _time(bt + _number(rec.get(T, 0), f"record {i} t"), f"record {i}")
        if contract == 2:  # noqa: PLR2004
            t = round(t * 1000) / 1000
        unit = _unit(rec[U], f"record {i} u") if U in rec else bu
        out.append(Record(name=name, t=t, value=_value(rec, i, q_label), unit=unit,
                          quality=_quality(rec, i, q_label)))
    return out


def _value(rec: dict, i: int, q_label: str = Q) -> float | int | bool | str | None:
    if sum(label in rec for label in (V, VS, VB)) > 1:
        _bad(f"record {i}: more than one value")
    if V in rec:
        # NaN and infinities pass: CBOR carries them and a device may report them.
        return _number(rec[V], f"record {i} v", finite=False)
    if VS in rec:
        return _text(rec[VS], f"record {i} vs", _MAX_TEXT)
    if VB in rec:
        if type(rec[VB]) is not bool:
            _bad(f"record {i}: vb is not a bool")
        return rec[VB]
    if q_label not in rec:  # RFC 8428 wants a value; only a flagged reading may lack one
        _bad(f"record {i}: no value and no {q_label} (a failed poll has {q_label} comm)")
    return None


def _quality(rec: dict, i: int, q_label: str = Q) -> str:
    if q_label not in rec:
        return ""
    if (q := _choice(rec[q_label], _QUALITIES)) is None:
        _bad(f"record {i}: {q_label} {rec[q_label]!r} is not one of {sorted(_QUALITIES)}")
    return q


def _choice(x: object, choices: frozenset[str]) -> str | None:
    # Type first: an unhashable value (a list) would make the set lookup raise TypeError.
    return x if type(x) is str and x in choices else None


def _number(x: object, what: str, *, finite: bool = True) -> float | int:
    if type(x) is not int and type(x) is not float:
        _bad(f"{what} is not a number")
    if type(x) is int and not -(2**64) <= x < 2**64:
        _bad(f"{what} is beyond a CBOR integer")  # cbor2 would write a bignum tag
    if finite and not math.isfinite(x):
        _bad(f"{what} is not finite")
    return x


def _time(t: float, what: str) -> float:
    if not math.isfinite(t) or t >= _MAX_TIME:
        _bad(f"{what}: time {t!r} is not finite or not below 2**34")
    if t < _MIN_TIME:
        raise Reject("relative_time", f"{what}: time {t!r} is below 2**28 (relative)")
    return float(t)


def _text(x: object, what: str, limit: int) -> str:
    if type(x) is not str or len(x) > limit:
        _bad(f"{what} is not a text of at most {limit} characters")
    return x


def _unit(x: object, what: str) -> str:
    if type(x) is not str or not _UNIT.fullmatch(x):
        _bad(f"{what} is not a unit ({_UNIT.pattern})")
    return x


def _bad(detail: str) -> NoReturn:
    raise Reject("bad_field", detail)


def _head(dev: str, seq: int, ts: float) -> dict:
    # The gateway checks what the receiver will check: a refused batch is never acked.
    if not _DEV.fullmatch(dev) or not 1 <= seq < 2**63 or not math.isfinite(ts):
        raise ValueError(f"bad payload head: dev={dev!r} seq={seq!r} ts={ts!r}")
    return {"v": 1, "dev": dev, "seq": seq, "ts": float(ts)}


def _dumps(obj: object) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1) for the payloads built here, in cbor2's C encoder.

    cbor2's canonical mode sorts map keys length-first (RFC 7049), §4.2.1 bytewise. The two
    orders agree when every key encodes in one byte (ints -24..23) or is a text shorter than
    24 bytes whose head byte carries its length, and one-byte keys all sort before texts:
    true of every key these payloads have (SenML labels, "q", the head and event keys).
    tests/cloud_sync/test_senml.py checks it against dumps_det. dumps_det's Python map
    encoder costs about 2x the whole C encoding, per batch.
    """
    return cbor2.dumps(obj, canonical=True)


def batch_payload(dev: str, seq: int, ts: float, recs: list) -> bytes:
    """The batch payload: {"v": 1, "dev", "seq", "ts", "recs"}, deterministic CBOR."""
    return _dumps({**_head(dev, seq, ts), "recs": recs})


def event_list(events: Sequence[Event]) -> list[dict]:
    """Events as the "evt" list of DESIGN.md section 4 (v1 and v2 alike).

    Raises ValueError on an event the receiver would refuse, as encode_pack does.
    """
    evt = []
    for e in events:
        item = {"t": _seconds(e.ts_ns), "point": e.point, "kind": e.kind, "rule": e.rule,
                "msg": e.msg}
        if e.value is not None:
            item["value"] = e.value
        evt.append(item)
    try:
        events_of(evt, len(evt))
    except Reject as e:
        raise ValueError(f"unsendable event: {e}") from None
    return evt


def event_payload(dev: str, seq: int, ts: float, events: Sequence[Event]) -> bytes:
    """The event payload: the batch map with "evt" (a list of event maps) for "recs".

    Raises ValueError on an event the receiver would refuse, as encode_pack does.
    """
    head = _head(dev, seq, ts)
    return _dumps({**head, "evt": event_list(events)})


def decode_payload(data: bytes, kind: str, *, max_records: int = 100_000,
                   precheck: Callable[[str, int], None] | None = None) -> Payload:
    """Decode and check a batch or event payload; raise Reject on anything malformed.

    precheck(dev, seq), if given, runs once the head is valid and before the records are
    decoded, so a verifier can apply key policy first (DESIGN §5 order).
    """
    return decode_map(loads_untrusted(data, max_depth=PAYLOAD_DEPTH), kind,
                      max_records=max_records, precheck=precheck)


PAYLOAD_DEPTH = 3  # map -> recs array -> record map


def decode_map(obj: object, kind: str, *, max_records: int = 100_000,
               precheck: Callable[[str, int], None] | None = None) -> Payload:
    """decode_payload for a v1 payload already decoded with limits (loads_untrusted)."""
    if kind not in ("batch", "event"):
        raise ValueError(f"kind must be 'batch' or 'event', not {kind!r}")
    if type(obj) is not dict:
        _malformed("payload is not a map")
    seq = obj.get("seq")
    try:
        return _payload(obj, kind, max_records, precheck)
    except Reject as e:
        # The seq lets the gateway match an ok:false ack to its batch, so pass it when sane.
        if e.seq is None and type(seq) is int and 1 <= seq < 2**63:
            e.seq = seq
        raise


def _payload(obj: dict, kind: str, max_records: int,
             precheck: Callable[[str, int], None] | None) -> Payload:
    body_key = "recs" if kind == "batch" else "evt"
    if type(obj.get("v")) is int and obj["v"] != 1:
        raise Reject("bad_version", f"v={obj['v']}, expected 1")
    if set(obj) != {"v", "dev", "seq", "ts", body_key}:
        _malformed(f"keys {sorted(map(str, obj))}, expected dev, seq, ts, v, {body_key}")
    dev, seq, ts, body = obj["dev"], obj["seq"], obj["ts"], obj[body_key]
    if type(obj["v"]) is not int:
        _malformed("v is not an integer")
    if type(dev) is not str or not _DEV.fullmatch(dev):
        _malformed(f"dev is not a device id ({_DEV.pattern})")
    if type(seq) is not int or not 1 <= seq < 2**63:
        _malformed("seq is not an integer in [1, 2**63)")
    if type(ts) not in (int, float) or not math.isfinite(ts):
        _malformed("ts is not a finite number")
    if precheck is not None:
        precheck(dev, seq)
    records: list[Record] = []
    events: list[Event] = []
    if kind == "event":
        events = events_of(body, max_records)
    else:
        records = decode_pack(body, max_records=max_records)
        if bad := [r.name for r in records if not r.name.startswith(f"{dev}:")]:
            _bad(f"record name {bad[0]!r} is not under {dev}:")
    return Payload(v=1, dev=dev, seq=seq, ts=float(ts), kind=kind, records=records,
                   events=events)


def events_of(evt: object, max_events: int) -> list[Event]:
    """Check and decode an "evt" list; Reject("bad_field") on anything malformed."""
    if type(evt) is not list or len(evt) > max_events:
        _bad(f"evt is not an array of at most {max_events} events")
    return [_event(item, i) for i, item in enumerate(evt)]


def _event(item: object, i: int) -> Event:
    if type(item) is not dict or not _EVENT_KEYS <= set(item) <= _EVENT_KEYS | {"value"}:
        _bad(f"event {i} is not a map of {', '.join(sorted(_EVENT_KEYS))} and value?")
    t = _time(_number(item["t"], f"event {i} t"), f"event {i}")
    point = _text(item["point"], f"event {i} point", 200)
    if not _NAME.fullmatch(point):
        _bad(f"event {i}: point {point!r} does not match {_NAME.pattern}")
    if (kind := _choice(item["kind"], _EVENT_KINDS)) is None:
        _bad(f"event {i}: kind {item['kind']!r} is not one of {sorted(_EVENT_KINDS)}")
    value = None
    if "value" in item:  # absent when the event has none; null is refused
        value = float(_number(item["value"], f"event {i} value", finite=False))
    return Event(ts_ns=round(t * 1e9), point=point, kind=kind,
                 rule=_text(item["rule"], f"event {i} rule", 200),
                 msg=_text(item["msg"], f"event {i} msg", _MAX_TEXT), value=value)


def _malformed(detail: str) -> NoReturn:
    raise Reject("malformed_payload", detail)
