"""RTU frames: exact bytes, pymodbus's framer as an independent check, and random bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from cimedge.drivers.modbus import rtu
from cimedge.edge.errors import BadFrame, DeviceException

units = st.integers(1, 247)
addresses = st.integers(0, 65535 - 125)
registers = st.lists(st.integers(0, 65535), min_size=1, max_size=123)


def pymodbus_frame(pdu: ModbusPDU) -> bytes:
    return FramerRTU(DecodePDU(is_server=False)).buildFrame(pdu)


def test_known_frames_byte_for_byte() -> None:
    # The classic example: read 10 holding registers from unit 1 at address 0.
    assert rtu.read_request(1, "holding", 0, 10) == bytes.fromhex("01 03 00 00 00 0A C5 CD")
    assert rtu.crc16(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert rtu.write_coil(17, 172, on=True) == bytes.fromhex("11 05 00 AC FF 00 4E 8B")
    assert rtu.write_register(17, 1, 3) == bytes.fromhex("11 06 00 01 00 03 9A 9B")


@given(units, addresses, st.integers(1, 125))
def test_read_requests_match_pymodbus(unit: int, address: int, count: int) -> None:
    for table, cls in (
        ("holding", ReadHoldingRegistersRequest), ("input", ReadInputRegistersRequest),
        ("coil", ReadCoilsRequest), ("discrete", ReadDiscreteInputsRequest),
    ):  # fmt: skip
        expected = pymodbus_frame(cls(address=address, count=count, dev_id=unit))
        assert rtu.read_request(unit, table, address, count) == expected  # type: ignore[arg-type]


@given(units, addresses, registers, st.booleans())
def test_write_requests_match_pymodbus(unit: int, address: int, regs: list[int], on: bool) -> None:
    many = WriteMultipleRegistersRequest(address=address, registers=regs, dev_id=unit)
    one = WriteSingleRegisterRequest(address=address, registers=regs[:1], dev_id=unit)
    coil = WriteSingleCoilRequest(address=address, bits=[on], dev_id=unit)
    assert rtu.write_registers(unit, address, regs) == pymodbus_frame(many)
    assert rtu.write_register(unit, address, regs[0]) == pymodbus_frame(one)
    assert rtu.write_coil(unit, address, on) == pymodbus_frame(coil)


@given(units, registers, st.binary(max_size=12))
def test_answers_built_by_pymodbus_are_found_behind_noise(
    unit: int, regs: list[int], noise: bytes
) -> None:
    answer = pymodbus_frame(ReadInputRegistersResponse(registers=regs, dev_id=unit))
    found = rtu.scan(noise + answer, unit, 4)
    assert found.frame == answer
    assert rtu.read_values(answer, "input", len(regs), "t") == regs


@given(units, st.lists(st.booleans(), min_size=1, max_size=2000))
def test_bit_answers_round_trip(unit: int, bits: list[bool]) -> None:
    answer = pymodbus_frame(ReadCoilsResponse(bits=bits, dev_id=unit))
    found = rtu.scan(answer, unit, 1)
    assert found.frame == answer
    assert rtu.read_values(answer, "coil", len(bits), "t") == bits


@given(st.binary(max_size=300), units, st.sampled_from([1, 2, 3, 4, 5, 6, 16]))
def test_scan_never_raises_on_random_bytes(data: bytes, unit: int, fc: int) -> None:
    found = rtu.scan(data, unit, fc)
    if found.frame is not None:
        assert found.frame[0] == unit and found.frame[1] & 0x7F == fc
        assert rtu.crc16(found.frame[:-2]) == int.from_bytes(found.frame[-2:], "little")


@given(st.binary(min_size=5, max_size=300), st.sampled_from(["holding", "coil"]))
def test_read_values_raises_only_driver_errors(data: bytes, table: str) -> None:
    try:
        rtu.read_values(data, table, 3, "t")  # type: ignore[arg-type]
    except (BadFrame, DeviceException):
        pass


def test_scan_skips_another_units_late_answer_and_flags_crc() -> None:
    late = pymodbus_frame(ReadInputRegistersResponse(registers=[7], dev_id=2))
    mine = pymodbus_frame(ReadInputRegistersResponse(registers=[9], dev_id=3))
    found = rtu.scan(late + mine, 3, 4)
    assert (found.frame, found.skipped) == (mine, len(late))
    bad = mine[:-1] + bytes((mine[-1] ^ 1,))
    assert rtu.scan(bad, 3, 4) == rtu.Scan(None, len(bad), bad_crc=True)
    assert rtu.scan(mine[:4], 3, 4).incomplete


def test_exception_answer_raises_its_code() -> None:
    answer = pymodbus_frame(ExceptionResponse(3, 2, device_id=5))
    assert rtu.scan(answer, 5, 3).frame == answer
    with pytest.raises(DeviceException) as err:
        rtu.read_values(answer, "holding", 1, "unit 5")
    assert err.value.code == 2
    assert "illegal data address" in str(err.value)


def test_short_or_mismatched_answers_are_bad_frames() -> None:
    answer = rtu.frame(1, struct.pack(">BBH", 3, 2, 42))  # one register, two were asked
    with pytest.raises(BadFrame, match="carries 2 bytes, expected 4"):
        rtu.read_values(answer, "holding", 2, "t")
    request = rtu.write_register(1, 10, 5)
    with pytest.raises(BadFrame, match="does not echo"):
        rtu.check_echo(rtu.write_register(1, 10, 6), request, "t")
    rtu.check_echo(request, request, "t")
