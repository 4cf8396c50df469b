"""Codec: exact register tables for every dtype and order, and hypothesis round trips."""

from __future__ import annotations

import math
import struct

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cimedge.drivers.modbus.codec import (
    INTEGERS,
    NUMBERS,
    DType,
    Layout,
    Order,
    decode,
    encode,
    registers_bytes,
    unpacker,
    width,
)

B, L = "big", "little"

# (dtype, word_order, byte_order, value, registers as they travel, lowest address first)
TABLE = [
    ("int16", B, B, -2, [0xFFFE]),
    ("int16", B, L, -2, [0xFEFF]),
    ("uint16", B, B, 0x1234, [0x1234]),
    ("uint16", L, L, 0x1234, [0x3412]),
    ("int32", B, B, -123456, [0xFFFE, 0x1DC0]),
    ("uint32", B, B, 0x12345678, [0x1234, 0x5678]),
    ("uint32", L, B, 0x12345678, [0x5678, 0x1234]),
    ("uint32", B, L, 0x12345678, [0x3412, 0x7856]),
    ("uint32", L, L, 0x12345678, [0x7856, 0x3412]),
    ("int64", B, B, -1, [0xFFFF] * 4),
    ("uint64", B, B, 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    ("uint64", L, B, 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    ("uint64", B, L, 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
    ("float32", B, B, 1.0, [0x3F80, 0x0000]),
    ("float32", L, B, 1.0, [0x0000, 0x3F80]),
    ("float32", B, L, 1.0, [0x803F, 0x0000]),
    ("float32", L, L, 1.0, [0x0000, 0x803F]),
    ("float32", B, B, -2.5, [0xC020, 0x0000]),
    ("float64", B, B, 1.5, [0x3FF8, 0, 0, 0]),
    ("float64", L, B, 1.5, [0, 0, 0, 0x3FF8]),
]


@pytest.mark.parametrize(("dtype", "word", "byte", "value", "regs"), TABLE)
def test_exact_registers(dtype: str, word: str, byte: str, value: float, regs: list[int]) -> None:
    layout = Layout(dtype=dtype, word_order=word, byte_order=byte)  # type: ignore[arg-type]
    assert encode(value, layout) == regs
    got = decode(regs, layout)
    assert got == value
    assert type(got) is type(value)


def test_string_runs_in_address_order_and_stops_at_nul() -> None:
    layout = Layout(dtype="string", length=3)
    assert encode("AB C", layout) == [0x4142, 0x2043, 0x0000]
    assert decode([0x4142, 0x2043, 0x0000], layout) == "AB C"
    assert decode([0x4142, 0x0043, 0x4444], layout) == "AB"  # stops at the first NUL
    assert decode([0x4142, 0x2020, 0x2020], layout) == "AB"  # space padding dropped
    swapped = Layout(dtype="string", length=2, byte_order="little", word_order="little")
    assert encode("ABCD", swapped) == [0x4241, 0x4443]  # word order does not apply to text
    assert decode([0x4241, 0x4443], swapped) == "ABCD"


def test_bit_fields() -> None:
    assert decode([0x0008], Layout(dtype="bool", bit=3)) is True
    assert decode([0x0008], Layout(dtype="bool", bit=2)) is False
    assert decode([0x0100], Layout(dtype="bool", bit=0, byte_order="little")) is True
    assert decode([0x8000], Layout(dtype="bool", bit=15)) is True


def test_scale_and_offset() -> None:
    tenths = Layout(dtype="int16", scale=0.1)
    assert decode([235], tenths) == pytest.approx(23.5)
    assert encode(23.5, tenths) == [235]
    assert encode(-0.1, tenths) == [0xFFFF]
    shifted = Layout(dtype="uint16", scale=0.5, offset=-40.0)
    assert decode([100], shifted) == 10.0
    assert encode(10.0, shifted) == [100]
    assert decode([7], Layout(dtype="uint16")) == 7  # identity keeps an int


def test_coil_value_is_one_bit() -> None:
    assert encode(True, Layout(dtype="bool")) == [1]
    assert encode(0, Layout(dtype="bool")) == [0]


@pytest.mark.parametrize(
    ("value", "layout", "message"),
    [
        (70000, Layout(dtype="uint16"), "does not fit in uint16"),
        (-1, Layout(dtype="uint32"), "does not fit in uint32"),
        (1e39, Layout(dtype="float32"), "does not fit in float32"),
        (math.nan, Layout(dtype="int32"), "not a finite number"),
        ("x", Layout(dtype="int16"), "takes a number"),
        ("toolong", Layout(dtype="string", length=3), "7 bytes do not fit in 3 registers"),
        (5, Layout(dtype="string", length=3), "takes text"),
        (2, Layout(dtype="bool"), "true or false"),
        (True, Layout(dtype="bool", bit=3), "write the whole register"),
        (6553.6, Layout(dtype="uint16", scale=0.1), "does not fit in uint16"),
    ],
)
def test_unrepresentable_values_raise_value_error(
    value: object, layout: Layout, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode(value, layout)  # type: ignore[arg-type]


def test_wrong_register_count_or_range_is_value_error() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode([1], Layout(dtype="float32"))
    with pytest.raises(ValueError, match="16-bit"):
        decode([70000], Layout(dtype="uint16"))


DTYPES: list[DType] = [
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "bool",
    "string",
]
ORDERS: list[Order] = ["big", "little"]
orders = st.sampled_from(ORDERS)


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    dtype = draw(st.sampled_from(DTYPES))
    return Layout(
        dtype=dtype,
        word_order=draw(orders),
        byte_order=draw(orders),
        bit=draw(st.integers(0, 15)) if dtype == "bool" else None,
        length=draw(st.integers(1, 8)) if dtype == "string" else None,
    )


@given(st.data())
def test_any_registers_decode_without_error(data: st.DataObject) -> None:
    layout = data.draw(layouts())
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=width(layout.dtype, layout.length),
                              max_size=width(layout.dtype, layout.length)))  # fmt: skip
    value = decode(regs, layout)
    expected = {"bool": bool, "string": str, "float32": float, "float64": float}.get(
        layout.dtype, int
    )
    assert type(value) is expected


@given(st.data())
def test_registers_round_trip(data: st.DataObject) -> None:
    layout = data.draw(layouts().filter(lambda lay: lay.dtype not in ("bool", "string")))
    n = width(layout.dtype)
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n))
    value = decode(regs, layout)
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payloads need not survive float32 -> double -> float32
    assert encode(value, layout) == regs


INT_RANGES = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


@given(st.data())
def test_values_round_trip(data: st.DataObject) -> None:
    layout = data.draw(layouts().filter(lambda lay: lay.dtype != "bool"))
    if layout.dtype in INTEGERS:
        bits = INT_RANGES[layout.dtype]
        lo, hi = (
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if layout.dtype[0] == "i"
            else (0, 2**bits - 1)
        )
        value: object = data.draw(st.integers(lo, hi))
    elif layout.dtype == "float32":
        value = data.draw(st.floats(width=32, allow_nan=False))
    elif layout.dtype == "float64":
        value = data.draw(st.floats(allow_nan=False))
    else:
        alphabet = st.characters(exclude_characters="\0", exclude_categories=["Cs"])
        text = data.draw(st.text(alphabet, max_size=2 * (layout.length or 0)))
        value = text.rstrip(" ")
        if len(value.encode()) > 2 * (layout.length or 0):
            return
    assert decode(encode(value, layout), layout) == value  # type: ignore[arg-type]


@given(st.floats(width=32, allow_nan=False), st.sampled_from([B, L]), st.sampled_from([B, L]))
def test_float32_agrees_with_struct(value: float, word: str, byte: str) -> None:
    big = list(struct.unpack(">HH", struct.pack(">f", value)))
    regs = encode(value, Layout(dtype="float32", word_order=word, byte_order=byte))  # type: ignore[arg-type]
    if word == L:
        regs = regs[::-1]
    if byte == L:
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    assert regs == big


@given(st.data())
def test_unpacker_agrees_with_decode(data: st.DataObject) -> None:
    layout = data.draw(layouts())
    if data.draw(st.booleans()):
        layout = msgspec.structs.replace(layout, scale=data.draw(st.sampled_from([0.1, -2.0])),
                                         offset=data.draw(st.sampled_from([0.0, 40.5])))
    unpack = unpacker(layout)
    if layout.dtype not in NUMBERS or layout.word_order == L or layout.byte_order == L:
        assert unpack is None
        return
    assert unpack is not None
    n = width(layout.dtype)
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n + 6))
    at = data.draw(st.integers(0, len(regs) - n))
    got, want = unpack(registers_bytes(regs), at), decode(regs[at : at + n], layout)
    assert type(got) is type(want)
    assert got == want or (math.isnan(got) and math.isnan(want))


def test_registers_bytes_refuses_what_is_not_a_register() -> None:
    assert registers_bytes([0x1234, 0]) == b"\x12\x34\x00\x00"
    with pytest.raises(ValueError, match="16-bit"):
        registers_bytes([70000])
