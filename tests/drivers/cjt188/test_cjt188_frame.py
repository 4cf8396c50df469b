"""CJ/T 188 frames: frames from other implementations, round trips, a byte fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.drivers.cjt188 import frame
from cimedge.edge.errors import BadFrame, DeviceException

# Frames that did not come from our encoder, with where they were printed.
# aixiwang/python_cjt188 python_cjt188.py: the read-address request (broadcast, 81 0A) ...
READ_ADDRESS = "FEFEFEFE68AAAAAAAAAAAAAAAA0303810A004916"
# ... the meter's answer (cjt188_set_addr's debug answer, address 00000000000012) ...
ADDRESS_ANSWER = "FEFEFE681012000000000000830381 0A009B16".replace(" ", "")
# ... and the read-data request its step-1 self-test expects (90 1F, serial 00).
READ_DATA = "6810120000000000000103901F003D16"
# C# unit test FrameCJT188_2004Sample (namespace Friendcom.Protocol.Sample, SetDataSample):
# read-data request and answer of water meter 00201510270588: 0.00 m3, time 2017-01-09
# 17:20:06, status 00 00 (valve open).
FRIENDCOM_REQUEST = "6810880527101520000103901F012516"
FRIENDCOM_ANSWER = ("681088052710152000811690 1F0100000000 2C000000002C0620170901172000008E16"
                    .replace(" ", ""))
# ibid. IsProtocolSample: the same request with a wrong checksum (24 for 25), refused there too.
FRIENDCOM_BAD = "6810880527101520000103901F012416"


def test_reference_requests_are_what_we_build() -> None:
    assert frame.read_request(0x10, "00000000000012", 0, preamble=0).hex().upper() == READ_DATA
    assert frame.read_request(0x10, "00201510270588", 1, 0).hex().upper() == FRIENDCOM_REQUEST
    assert frame.build(0xAA, frame.BROADCAST, frame.READ_ADDRESS, frame.DI_ADDRESS + b"\x00",
                       4).hex().upper() == READ_ADDRESS


def test_reference_answers_parse() -> None:
    addr = frame.scan(bytes.fromhex(ADDRESS_ANSWER), frame.BROADCAST, frame.READ_ADDRESS)
    assert addr.frame is not None and addr.skipped == 3
    assert frame.parse(addr.frame).address == "00000000000012"
    found = frame.scan(bytes.fromhex(FRIENDCOM_ANSWER), "00201510270588", frame.READ_DATA)
    assert found.frame is not None
    answer = frame.parse(found.frame)
    assert (answer.meter_type, answer.address, answer.control) == (0x10, "00201510270588", 0x81)
    frame.check_answer(answer, 1, frame.DI_READ, "test")
    assert frame.read_values(answer) == {"flow_total": 0.0, "flow_settlement": 0.0,
                                         "valve_open": True, "valve_fault": False,
                                         "battery_low": False}
    assert answer.data[13:20][::-1].hex() == "20170109172006"


def test_wrong_checksum_is_refused() -> None:
    with pytest.raises(BadFrame, match="checksum"):
        frame.parse(bytes.fromhex(FRIENDCOM_BAD))
    bad = bytearray.fromhex(FRIENDCOM_ANSWER)
    bad[-2] ^= 0xFF
    assert frame.scan(bad, "00201510270588", frame.READ_DATA).bad_crc


def test_abnormal_answer_and_wrong_serial() -> None:
    abnormal = frame.parse(frame.build(0x10, "00201510270588", 0xC1, b"\x01\x04\x00", 0))
    with pytest.raises(DeviceException) as err:
        frame.check_answer(abnormal, 1, frame.DI_READ, "read")
    assert err.value.code == 4
    other = frame.parse(bytes.fromhex(FRIENDCOM_ANSWER))
    with pytest.raises(BadFrame, match="serial 2"):
        frame.check_answer(other, 2, frame.DI_READ, "read")


def test_units_are_converted_and_the_valve_fault_read() -> None:
    data = (frame.DI_READ + b"\x01" + frame.to_bcd(123456, 4) + b"\x29" + frame.to_bcd(1, 4)
            + b"\x77" + bytes(7) + b"\x07\x00")
    values = frame.read_values(frame.Frame(0x10, "00000000000001", 0x81, data))
    assert values["flow_total"] == pytest.approx(1.23456)  # litres to m3
    assert values["flow_settlement"] is None  # unit 77: unknown
    assert values["valve_open"] is None and values["valve_fault"] and values["battery_low"]


addresses = st.from_regex(r"[0-9]{14}", fullmatch=True)


@given(t=st.integers(0, 255), address=addresses, control=st.integers(0, 255),
       data=st.binary(max_size=frame.MAX_DATA), preamble=st.integers(0, 8),
       noise=st.binary(max_size=20))
@settings(max_examples=200, deadline=None)
def test_round_trip(t: int, address: str, control: int, data: bytes, preamble: int,
                    noise: bytes) -> None:
    raw = frame.build(t, address, control | frame.ANSWER, data, preamble)
    found = frame.scan(noise.replace(b"\x68", b"") + raw, address, control & 0x3F)
    assert found.frame == raw[preamble:]
    got = frame.parse(raw[preamble:])
    assert (got.meter_type, got.address, got.control, got.data) == (
        t, address, control | frame.ANSWER, data)


@given(values=st.tuples(st.integers(0, 99999999), st.integers(0, 99999999)),
       st_byte=st.integers(0, 255))
@settings(max_examples=100, deadline=None)
def test_water_values_round_trip(values: tuple[int, int], st_byte: int) -> None:
    data = (frame.DI_READ + b"\x05" + frame.to_bcd(values[0], 4) + b"\x2c"
            + frame.to_bcd(values[1], 4) + b"\x2c" + bytes(7) + bytes((st_byte, 0)))
    got = frame.read_values(frame.Frame(0x10, "00000000000001", 0x81, data))
    assert (got["flow_total"], got["flow_settlement"]) == (values[0] / 100, values[1] / 100)
    assert got["battery_low"] is bool(st_byte & 4)


@given(st.binary(max_size=300), addresses)
@settings(max_examples=400, deadline=None)
def test_fuzz_scan_and_parse(noise: bytes, address: str) -> None:
    for function in (frame.READ_DATA, frame.WRITE_DATA):
        found = frame.scan(noise, address, function)
        if found.frame is not None:
            got = frame.parse(found.frame)
            try:
                frame.check_answer(got, 1, frame.DI_READ, "fuzz")
                frame.read_values(got)
            except (BadFrame, DeviceException):
                pass
    try:
        frame.parse(noise)
    except BadFrame:
        pass
