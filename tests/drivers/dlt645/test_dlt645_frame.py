"""DL/T 645 frames and BCD: exact bytes, the PyPI ``dlt645`` package as a cross-check, noise."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cimedge.drivers.dlt645 import frame
from cimedge.drivers.dlt645.frame import Format
from cimedge.drivers.dlt645.identifiers import CATALOGUE
from cimedge.edge.errors import BadFrame, DeviceException

dlt645 = pytest.importorskip("dlt645", reason="the cross-check needs `pip install dlt645==3.2.0`")
from dlt645.common.transform import bcd_to_float, float_to_bcd  # noqa: E402
from dlt645.model.data.define import DIMap  # noqa: E402
from dlt645.protocol.protocol import DLT645Protocol  # noqa: E402

addresses = st.lists(
    st.one_of(st.integers(0, 99).map(lambda n: f"{n:02d}"), st.just("AA")), min_size=6, max_size=6
).map("".join)
formats = st.builds(Format, st.integers(1, 6), st.integers(0, 4), st.booleans())


def test_known_frame_byte_for_byte() -> None:
    # Read forward active energy (00 01 00 00) from meter 000000000001: a textbook example.
    assert frame.read_request("000000000001", 0x00010000, preamble=0) == bytes.fromhex(
        "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16"
    )
    assert frame.read_address_request(preamble=4) == bytes.fromhex(
        "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"
    )
    assert frame.address_bytes("123456789012") == bytes.fromhex("12 90 78 56 34 12")


@given(addresses, st.integers(0, 255), st.binary(max_size=200), st.integers(0, 4))
def test_frames_match_the_dlt645_package(
    address: str, control: int, data: bytes, preamble: int
) -> None:
    ours = frame.build(address, control, data, preamble)
    theirs = DLT645Protocol.build_frame(frame.address_bytes(address), control, data, preamble)
    assert ours == bytes(theirs)
    # Their parser on our frame alone: given leading noise with a 0x68 in it, dlt645 3.2.0
    # loses a frame whose address holds a 0x68 byte too (AA68000000AA) instead of
    # resynchronising; that is their scanner, not the frame (ours resyncs: test_scan_*).
    rest, parsed = DLT645Protocol.deserialize_with_remaining(ours)
    assert parsed is not None and rest == b""
    assert (parsed.ctrl_code, bytes(parsed.data), bytes(parsed.addr)) == (
        control, data, frame.address_bytes(address),
    )  # fmt: skip
    mine = frame.parse(ours[preamble:])
    assert (mine.address, mine.control, mine.data) == (address, control, data)


@given(st.sampled_from(sorted({q.format for q in CATALOGUE.values()}, key=repr)), st.data())
def test_bcd_matches_the_dlt645_package(fmt: Format, data: st.DataObject) -> None:
    """Agreement below the sign bit: dlt645 reads the top bit as a sign in every format, where
    the standard has unsigned import/export energy, voltage and frequency (so from 800000.00
    kWh up the two differ, by design)."""
    digits = 2 * fmt.length
    top = 8 * 10 ** (digits - 1) - 1
    n = data.draw(st.integers(-top if fmt.signed else 0, top))
    value = n / 10**fmt.decimals
    ours = frame.bcd_encode(value, fmt)
    pattern = "X" * (digits - fmt.decimals) + "." + "X" * fmt.decimals
    assert bytes(float_to_bcd(value, pattern, "little")) == ours
    assert frame.bcd_decode(ours, fmt) == bcd_to_float(ours, pattern, "little")


@given(formats, st.data())
def test_bcd_round_trips(fmt: Format, data: st.DataObject) -> None:
    digits = 2 * fmt.length
    top = 8 * 10 ** (digits - 1) - 1 if fmt.signed else 10**digits - 1
    n = data.draw(st.integers(-top if fmt.signed else 0, top))
    value = n / 10**fmt.decimals
    assert frame.bcd_decode(frame.bcd_encode(value, fmt), fmt) == value


def test_catalogue_agrees_with_the_dlt645_package() -> None:
    for name, q in CATALOGUE.items():
        item = DIMap[q.di]
        whole, _, decimals = item.data_format.partition(".")
        assert (len(whole) + len(decimals), len(decimals)) == (
            2 * q.format.length, q.format.decimals,
        ), name  # fmt: skip


@given(st.binary(max_size=300), addresses, st.sampled_from([frame.READ_DATA, frame.READ_ADDRESS]))
def test_scan_never_raises_and_finds_only_checked_answers(
    data: bytes, address: str, function: int
) -> None:
    found = frame.scan(data, address, function)
    if found.frame is not None:
        parsed = frame.parse(found.frame)
        assert parsed.control & 0x9F == 0x80 | function


@given(st.binary(min_size=12, max_size=60), formats)
def test_read_value_raises_only_driver_errors(data: bytes, fmt: Format) -> None:
    try:
        frame.read_value(data, 0x02010100, fmt, "t")
    except (BadFrame, DeviceException):
        pass


@given(addresses, st.binary(max_size=20), st.integers(0, 4))
@example("AA68000000AA", b"\x00\x68\x16", 0)  # where dlt645 3.2.0 loses the frame
def test_answers_are_found_behind_noise(address: str, noise: bytes, preamble: int) -> None:
    meter = address.replace("AA", "11")
    payload = (0x02010100).to_bytes(4, "little") + frame.bcd_encode(229.8, Format(2, 1))
    answer = frame.build(meter, 0x91, payload, preamble)
    found = frame.scan(noise + answer, address, frame.READ_DATA)
    assert found.frame == answer[preamble:]
    assert frame.read_value(answer[preamble:], 0x02010100, Format(2, 1), "t") == 229.8


def test_abnormal_answer_raises_with_the_status_bits() -> None:
    answer = frame.build("000012345678", 0xD1, bytes((0x02,)), 0)
    with pytest.raises(DeviceException) as err:
        frame.read_value(answer, 0x02010100, Format(2, 1), "meter")
    assert err.value.code == 2
    assert "no such data" in str(err.value)
    assert frame.describe_error(0x05) == "other error; password wrong or not authorised"


def test_wrong_identifier_short_value_and_non_bcd_are_bad_frames() -> None:
    fmt = Format(2, 1)
    other = frame.build("000012345678", 0x91, (0x02010200).to_bytes(4, "little") + b"\x98\x22", 0)
    with pytest.raises(BadFrame, match="answer is for data identifier 02010200"):
        frame.read_value(other, 0x02010100, fmt, "t")
    short = frame.build("000012345678", 0x91, (0x02010100).to_bytes(4, "little") + b"\x98", 0)
    with pytest.raises(BadFrame, match="carries 5 data bytes, expected 6"):
        frame.read_value(short, 0x02010100, fmt, "t")
    with pytest.raises(BadFrame, match="is not BCD"):
        frame.bcd_decode(b"\xff\x22", fmt)


def test_signs_and_limits() -> None:
    assert frame.bcd_encode(-0.412, Format(3, 3, signed=True)) == bytes.fromhex("12 04 80")
    assert frame.bcd_decode(bytes.fromhex("12 04 80"), Format(3, 3, signed=False)) == 800.412
    with pytest.raises(ValueError, match="does not fit"):
        frame.bcd_encode(80.0, Format(3, 4, signed=True))
    with pytest.raises(ValueError, match="does not fit"):
        frame.bcd_encode(-1.0, Format(2, 1))
    with pytest.raises(ValueError, match="not a DL/T 645 address"):
        frame.address_bytes("12345")
