"""Registers to point values and back, per dtype, word order, byte order, scale and offset; pure."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

DType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool", "string"
]
Order = Literal["big", "little"]
Raw = int | float | bool | str

_FORMAT = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}  # fmt: skip
NUMBERS = frozenset(_FORMAT)
INTEGERS = NUMBERS - {"float32", "float64"}


def width(dtype: str, length: int | None = None) -> int:
    """Registers one value occupies: a bool is one register's bit, a string its length."""
    if dtype == "string":
        return length or 0
    if dtype == "bool":
        return 1
    return struct.calcsize(_FORMAT[dtype]) // 2


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """Where one point's value sits in its registers, with device defaults already applied.

    ``byte_order`` orders the two bytes inside each register ("big": high byte first, as
    the Modbus spec sends them); ``word_order`` orders the registers of a multi-register
    value ("big": most significant register at the lowest address). Strings ignore
    ``word_order``: their bytes run in address order.
    """

    dtype: DType
    word_order: Order = "big"
    byte_order: Order = "big"
    bit: int | None = None
    length: int | None = None
    scale: float = 1.0
    offset: float = 0.0


def decode(registers: Sequence[int], layout: Layout) -> Raw:
    """The value held by ``registers`` (exactly ``width`` of them, each 0-65535).

    Integers stay ``int`` unless scale or offset change them; any register contents decode
    without error (floats may be NaN or infinite, strings stop at the first NUL and lose
    trailing spaces, undecodable UTF-8 becomes U+FFFD).
    """
    data = _to_bytes(registers, layout)
    if layout.dtype == "string":
        text = data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        return text.rstrip(" ")
    if layout.dtype == "bool":
        return bool(int.from_bytes(data[:2], "big") >> (layout.bit or 0) & 1)
    raw: int | float = struct.unpack(">" + _FORMAT[layout.dtype], data)[0]
    if layout.scale == 1.0 and layout.offset == 0.0:
        return raw
    return raw * layout.scale + layout.offset


def registers_bytes(registers: Sequence[int]) -> bytes:
    """A response's registers as the bytes they travel in (big-endian), for ``unpacker``."""
    try:
        return struct.pack(f">{len(registers)}H", *registers)
    except struct.error as exc:
        msg = f"registers {list(registers)} are not all 16-bit unsigned"
        raise ValueError(msg) from exc


def unpacker(layout: Layout) -> Callable[[bytes, int], Raw] | None:
    """``decode`` for a number in big-endian words and bytes (the Modbus default), read in
    place: ``f(registers_bytes(regs), i)`` is ``decode(regs[i:i + width], layout)``, without
    the per-value copies. None for every other layout: those take ``decode``.
    """
    if layout.dtype not in NUMBERS or layout.word_order != "big" or layout.byte_order != "big":
        return None
    unpack = struct.Struct(">" + _FORMAT[layout.dtype]).unpack_from
    scale, offset = layout.scale, layout.offset
    if scale == 1.0 and offset == 0.0:
        return lambda data, reg: unpack(data, 2 * reg)[0]  # type: ignore[no-any-return]
    return lambda data, reg: unpack(data, 2 * reg)[0] * scale + offset  # type: ignore[no-any-return]


def encode(value: Raw, layout: Layout) -> list[int]:
    """The registers that hold ``value``; ValueError when it cannot be represented."""
    if layout.dtype == "string":
        data = _text_bytes(value, layout.length or 0)
    elif layout.dtype == "bool":
        if layout.bit is not None:
            msg = "a bit field is part of a shared register; write the whole register"
            raise ValueError(msg)
        data = (1 if _as_bool(value) else 0).to_bytes(2, "big")
    else:
        data = _number_bytes(value, layout)
    return _from_bytes(data, layout)


def _text_bytes(value: Raw, length: int) -> bytes:
    if not isinstance(value, str):
        msg = f"a string point takes text, not {value!r}"
        raise ValueError(msg)  # noqa: TRY004  # one error type for every unwritable value
    data = value.encode("utf-8")
    if len(data) > 2 * length:
        msg = f"{len(data)} bytes do not fit in {length} registers"
        raise ValueError(msg)
    return data.ljust(2 * length, b"\0")


def _as_bool(value: Raw) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    msg = f"a bool point takes true or false, not {value!r}"
    raise ValueError(msg)


def _number_bytes(value: Raw, layout: Layout) -> bytes:
    if isinstance(value, str):
        msg = f"a {layout.dtype} point takes a number, not {value!r}"
        raise ValueError(msg)  # noqa: TRY004  # one error type for every unwritable value
    raw: int | float = value
    if layout.scale != 1.0 or layout.offset != 0.0:
        raw = (value - layout.offset) / layout.scale
    fmt = ">" + _FORMAT[layout.dtype]
    if layout.dtype in INTEGERS:
        if not math.isfinite(raw):
            msg = f"{value!r} is not a finite number"
            raise ValueError(msg)
        raw = round(raw)
    try:
        return struct.pack(fmt, raw)
    except (struct.error, OverflowError) as exc:
        msg = f"{value!r} does not fit in {layout.dtype}"
        raise ValueError(msg) from exc


def _to_bytes(registers: Sequence[int], layout: Layout) -> bytes:
    words = registers if layout.word_order == "big" or layout.dtype == "string" else registers[::-1]
    try:
        data = b"".join(w.to_bytes(2, "big") for w in words)
    except OverflowError as exc:
        msg = f"registers {list(registers)} are not all 16-bit unsigned"
        raise ValueError(msg) from exc
    expected = width(layout.dtype, layout.length)
    if len(registers) != expected:
        msg = f"{layout.dtype} needs {expected} registers, got {len(registers)}"
        raise ValueError(msg)
    return _swap(data) if layout.byte_order == "little" else data


def _from_bytes(data: bytes, layout: Layout) -> list[int]:
    if layout.byte_order == "little":
        data = _swap(data)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words if layout.word_order == "big" or layout.dtype == "string" else words[::-1]


def _swap(data: bytes) -> bytes:
    """Swap the two bytes of every register."""
    swapped = bytearray(data)
    swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
    return bytes(swapped)
