"""Untrusted CBOR decoded within hard limits, and deterministic CBOR (RFC 8949 §4.2)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from cimedge.cloud_sync.reject import Reject

_TAG18 = 0xD2  # tag 18 (COSE_Sign1) in its one-byte preferred form


def loads_untrusted(data: bytes, *, max_size: int = 1 << 20, max_depth: int = 5,
                    allow_tag18_top: bool = False) -> object:
    """Decode one CBOR item, or raise Reject ("too_large", "too_deep", "malformed_cbor").

    Only tag 18, and only at the top level when allow_tag18_top, is accepted; it comes back
    as cbor2.CBORTag(18, value). Map keys must be integers or text strings.
    """
    if len(data) > max_size:
        raise Reject("too_large", f"{len(data)} bytes, limit {max_size}")
    body = bytes(data)
    tagged = allow_tag18_top and body[:1] == bytes([_TAG18])
    if tagged:
        body = body[1:]
    _scan(body, max_depth, skip=int(tagged))
    try:
        value = cbor2.loads(body, tag_hook=_no_tag, semantic_decoders=_NoTags(),
                            max_depth=max_depth, allow_indefinite=False,
                            allow_duplicate_keys=False)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as e:
        # _scan has vetted the structure, so what is left is bad UTF-8 or a duplicate key.
        raise Reject("malformed_cbor", str(e) or type(e).__name__) from None
    return cbor2.CBORTag(18, value) if tagged else value


def _scan(buf: bytes, max_depth: int, skip: int = 0) -> None:
    """Walk the item's heads before cbor2 sees it, so limits hold whatever cbor2 would do.

    This rejects tags (cbor2 silently decodes some, such as 28 and 256), indefinite lengths,
    simple values but false/true/null, keys other than int/text (tuples of ints have
    predictable hashes, so they could be used to make a map insert quadratic), lengths
    beyond the bytes left (a claimed 2**64-item array costs nothing), and trailing bytes.
    Offsets in messages count the skip bytes (a stripped tag) too.
    """
    pos, end = 0, len(buf)
    stack: list[list[int]] = []  # per open container: [items still owed, 1 if map]
    while True:
        if pos >= end:
            _bad(f"truncated at byte {pos + skip}")
        at, head = pos + skip, buf[pos]
        major, info = head >> 5, head & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            n = 1 << (info - 24)
            if pos + n > end:
                _bad(f"truncated at byte {pos + skip}")
            arg = int.from_bytes(buf[pos:pos + n], "big")
            pos += n
        else:
            _bad(f"indefinite length or reserved head 0x{head:02x} at byte {at}")
        if stack and stack[-1][1] and stack[-1][0] % 2 == 0 and major not in (0, 1, 3):
            _bad(f"map key of major type {major} at byte {at}")
        if major in (2, 3):
            if arg > end - pos:
                _bad(f"string of {arg} bytes at byte {at}, {end - pos} left")
            pos += arg
        elif major in (4, 5):
            owed = arg * 2 if major == 5 else arg
            if owed > end - pos:  # every item takes at least one byte
                _bad(f"container of {arg} items at byte {at}, {end - pos} bytes left")
            if len(stack) >= max_depth:
                raise Reject("too_deep", f"nesting beyond {max_depth} at byte {at}")
            if owed:
                stack.append([owed, major == 5])
                continue
        elif major == 6:
            _bad(f"tag {arg} at byte {at}")
        elif major == 7 and info not in (20, 21, 22, 25, 26, 27):
            _bad(f"simple value 0x{head:02x} at byte {at}")
        # One item is complete: settle it against the containers it closes.
        while stack:
            stack[-1][0] -= 1
            if stack[-1][0]:
                break
            stack.pop()
        if not stack:
            break
    if pos != end:
        _bad(f"{end - pos} trailing bytes")


def _bad(detail: str) -> NoReturn:
    raise Reject("malformed_cbor", detail)


def _no_tag(tag: cbor2.CBORTag, immutable: bool) -> NoReturn:
    raise ValueError(f"tag {tag.tag} not allowed")


def _refuse(value: object, immutable: bool) -> NoReturn:
    raise ValueError("tag not allowed")


class _NoTags(Mapping[int, Any]):
    """Overrides every semantic tag decoder cbor2 has built in (datetime, bignum, sharing...)."""

    def __getitem__(self, tag: int) -> Any:
        return _refuse

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def dumps_det(obj: object) -> bytes:
    """Encode with RFC 8949 §4.2.1 core deterministic rules.

    cbor2's canonical mode gives shortest integers, lengths and floats, but sorts map keys
    length-first (RFC 7049); §4.2.1 wants the bytewise order of the encoded keys.
    """
    return cbor2.dumps(obj, canonical=True, encoders={dict: _encode_map})


def _encode_map(encoder: cbor2.CBOREncoder, obj: dict[Any, Any]) -> None:
    items = sorted(((dumps_det(k), v) for k, v in obj.items()), key=lambda kv: kv[0])
    encoder.encode_length(5, len(items))
    for key, value in items:
        encoder.write(key)
        encoder.encode(value)
