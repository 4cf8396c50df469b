"""Modbus RTU frames, master side: requests out, answers found in a noisy byte stream; pure.

An RTU frame is ``unit, function code, data, CRC-16`` (CRC low byte first). RTU has no
transaction id and no length field, so the master finds its answer by what it expects:
the unit it asked, the function code it sent (or that code + 0x80 for an exception), the
length that code implies, and a CRC that checks. ``scan()`` tries every offset, so bytes of
noise before the answer, or an answer from another unit that arrived late, are skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import msgspec

from cimedge.drivers.modbus.plan import Table
from cimedge.edge.errors import BadFrame, DeviceException

READ_FC: dict[Table, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
WRITE_COIL, WRITE_REGISTER, WRITE_REGISTERS = 5, 6, 16
MAX_FRAME = 256  # bytes: the largest RTU frame the standard allows

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (busy with a long command)",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS of ``data`` (polynomial 0xA001 reflected, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def frame(unit: int, pdu: bytes) -> bytes:
    """``unit + pdu`` with its CRC appended, low byte first."""
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def read_request(unit: int, table: Table, address: int, count: int) -> bytes:
    """A read of ``count`` registers (or bits) of ``table`` from ``address``."""
    return frame(unit, struct.pack(">BHH", READ_FC[table], address, count))


def write_coil(unit: int, address: int, on: bool) -> bytes:  # noqa: FBT001  # the coil's value
    """Function 5: switch one coil (0xFF00 on, 0x0000 off)."""
    return frame(unit, struct.pack(">BHH", WRITE_COIL, address, 0xFF00 if on else 0))


def write_register(unit: int, address: int, value: int) -> bytes:
    """Function 6: one holding register."""
    return frame(unit, struct.pack(">BHH", WRITE_REGISTER, address, value))


def write_registers(unit: int, address: int, values: Sequence[int]) -> bytes:
    """Function 16: consecutive holding registers (1-123 of them)."""
    head = struct.pack(">BHHB", WRITE_REGISTERS, address, len(values), 2 * len(values))
    return frame(unit, head + struct.pack(f">{len(values)}H", *values))


def answer_length(fc: int, head: bytes | bytearray) -> int | None:
    """Length of the answer frame to function ``fc`` that starts with ``head``.

    ``head`` is the frame's first bytes (unit, function code, byte count). Returns None when
    more bytes are needed to tell, 0 when ``head`` cannot start an answer to ``fc``.
    """
    if len(head) < 2:
        return None
    if head[1] == fc | 0x80:
        return 5
    if head[1] != fc:
        return 0
    if fc in READ_FC.values():
        return None if len(head) < 3 else 5 + head[2]
    return 8


class Scan(msgspec.Struct, frozen=True):
    """What ``scan()`` found: a checked frame, or why there is none yet."""

    frame: bytes | None = None
    skipped: int = 0  # bytes before the frame that belonged to no answer
    bad_crc: bool = False  # a complete candidate failed its CRC
    incomplete: bool = False  # a candidate needs more bytes


def scan(buf: bytes | bytearray, unit: int, fc: int) -> Scan:
    """Find the first answer from ``unit`` to ``fc`` in ``buf`` whose CRC checks.

    Never raises: any bytes give a Scan.
    """
    bad_crc = incomplete = False
    for at in range(len(buf)):
        if buf[at] != unit:
            continue
        size = answer_length(fc, buf[at : at + 3])
        if size == 0:
            continue
        if size is None or at + size > len(buf):
            incomplete = True
            continue
        body, crc = buf[at : at + size - 2], buf[at + size - 2 : at + size]
        if crc16(body) == int.from_bytes(crc, "little"):
            return Scan(bytes(buf[at : at + size]), at, bad_crc, incomplete)
        bad_crc = True
    return Scan(None, len(buf), bad_crc, incomplete)


def check_exception(answer: bytes, what: str) -> None:
    """Raise DeviceException when ``answer`` is an exception frame."""
    if answer[1] & 0x80:
        code = answer[2]
        raise DeviceException(code, f"{what}: {EXCEPTION_NAMES.get(code, 'unknown')}")


def read_values(answer: bytes, table: Table, count: int, what: str) -> list[int] | list[bool]:
    """The ``count`` registers or bits carried by a checked ``answer`` to a read."""
    check_exception(answer, what)
    data = answer[3:-2]
    bits = table in ("coil", "discrete")
    expected = (count + 7) // 8 if bits else 2 * count
    if len(data) != expected:
        msg = f"{what}: answer carries {len(data)} bytes, expected {expected}"
        raise BadFrame(msg)
    if bits:
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
    return list(struct.unpack(f">{count}H", data))


def check_echo(answer: bytes, request: bytes, what: str) -> None:
    """A write's answer echoes the request's first six bytes (unit, fc, address, value/count)."""
    check_exception(answer, what)
    if answer[:6] != request[:6]:
        msg = f"{what}: answer {answer.hex(' ')} does not echo the request"
        raise BadFrame(msg)
