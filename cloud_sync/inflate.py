"""Raw DEFLATE (RFC 1951) both ways: the smallest encoding, and inflation within a bound.

A contract-v2 payload may carry its pack or event list DEFLATE-compressed (DESIGN.md 4a).
The receiver inflates untrusted bytes, so it does it step by step with a cap on what each
step may produce, and gives up the moment the output would pass the bound: at most
``MAX_INFLATED`` bytes and at most ``MAX_RATIO`` times the compressed size. A bomb of a
few KB that would inflate to gigabytes costs at most the bound in memory and time.
"""

from __future__ import annotations

import zlib

from cimedge.cloud_sync.reject import Reject

MAX_INFLATED = 1 << 20  # 1 MiB
MAX_RATIO = 64
_STEP = 64 << 10  # output per inflate step
_WBITS = -15  # raw DEFLATE: no zlib or gzip header (RFC 1951, not 1950)
LEVEL = 9  # payloads are small: level 9 costs little more CPU than 6 and saves a few bytes


def deflate(data: bytes) -> bytes:
    """Raw DEFLATE of ``data`` (RFC 1951), best compression."""
    c = zlib.compressobj(LEVEL, zlib.DEFLATED, _WBITS, 9)
    return c.compress(data) + c.flush()


def inflate(data: bytes, *, max_out: int = MAX_INFLATED, max_ratio: int = MAX_RATIO) -> bytes:
    """Inflate raw DEFLATE ``data``, or raise Reject.

    Past ``min(max_out, max_ratio * len(data))`` bytes of output: "inflate_limit". A stream
    that is corrupt, truncated or followed by other bytes: "malformed_payload".
    """
    limit = min(max_out, max_ratio * len(data))
    d = zlib.decompressobj(_WBITS)
    out = bytearray()
    pending = bytes(data)
    try:
        while True:
            # Never more than the bound plus one byte: one byte past it is proof enough.
            chunk = d.decompress(pending, min(_STEP, limit + 1 - len(out)))
            out += chunk
            if len(out) > limit:
                raise Reject("inflate_limit", f"inflates past {limit} bytes "
                             f"({len(data)} compressed; limits {max_out} bytes and "
                             f"{max_ratio}x)")
            pending = d.unconsumed_tail
            if d.eof or not chunk:  # the end, or the input ran out (truncated)
                break
    except zlib.error as e:
        raise Reject("malformed_payload", f"not a raw DEFLATE stream: {e}") from None
    if not d.eof:
        raise Reject("malformed_payload", "DEFLATE stream is truncated")
    if d.unused_data:
        raise Reject("malformed_payload",
                     f"{len(d.unused_data)} bytes after the end of the DEFLATE stream")
    return bytes(out)
