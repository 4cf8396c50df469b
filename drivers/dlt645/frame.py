"""DL/T 645-2007 frames and BCD values; pure.

A frame on the wire::

    FE FE FE FE | 68 | A0..A5 | 68 | C | L | DATA (each byte + 0x33) | CS | 16

The optional 0xFE preamble wakes the meter's receiver. The address is 12 BCD digits sent
low byte first ("AA" bytes are wildcards; all six AA is the broadcast address). C is the
control code: bit 7 set in an answer, bit 6 set in an abnormal (error) answer, bit 5 set
when follow-up frames come, bits 0-4 the function (0x11 read data, 0x13 read address). CS is
the sum, modulo 256, of every byte from the first 0x68 to the end of DATA. Multi-byte data
(data identifiers, values) is little-endian; values are BCD with an implied decimal point,
the top bit of the most significant byte being the sign where the quantity has one.
"""

from __future__ import annotations

import re

import msgspec

from cimedge.edge.errors import BadFrame, DeviceException

START, END, WAKE = 0x68, 0x16, 0xFE
READ_DATA, READ_ADDRESS = 0x11, 0x13
ANSWER, ABNORMAL, FOLLOWS = 0x80, 0x40, 0x20
BROADCAST = "AAAAAAAAAAAA"
MAX_DATA = 200  # bytes of DATA in one frame, by the standard
ADDRESS = re.compile(r"^(?:[0-9]{2}|AA){6}$")

# Bits of the error status byte of an abnormal answer.
ERROR_BITS = (
    "other error",
    "no such data (the meter does not know this data identifier)",
    "password wrong or not authorised",
    "baud rate cannot be changed",
    "too many annual time zones",
    "too many daily time periods",
    "too many tariffs",
)


def address_bytes(address: str) -> bytes:
    """Six address bytes, low byte first, from 12 digits ("AA" pairs are wildcards)."""
    if not ADDRESS.match(address):
        msg = f"{address!r} is not a DL/T 645 address (12 digits; AA pairs as wildcards)"
        raise ValueError(msg)
    return bytes.fromhex(address)[::-1]


def address_text(raw: bytes) -> str:
    """The 12-digit address carried by six address bytes."""
    return raw[::-1].hex().upper()


def build(address: str, control: int, data: bytes = b"", preamble: int = 4) -> bytes:
    """A whole frame; ``data`` is given plain and sent with 0x33 added to each byte."""
    if len(data) > MAX_DATA:
        msg = f"{len(data)} data bytes do not fit in one frame (at most {MAX_DATA})"
        raise ValueError(msg)
    body = (
        bytes((START,)) + address_bytes(address) + bytes((START, control, len(data)))
        + bytes((b + 0x33) & 0xFF for b in data)
    )  # fmt: skip
    return bytes((WAKE,)) * preamble + body + bytes((sum(body) & 0xFF, END))


def read_request(address: str, di: int, preamble: int = 4) -> bytes:
    """Read data identifier ``di`` (written DI3 DI2 DI1 DI0, e.g. 0x02010100) from a meter."""
    return build(address, READ_DATA, di.to_bytes(4, "little"), preamble)


def read_address_request(preamble: int = 4) -> bytes:
    """Ask the one meter on the line for its address (broadcast, function 0x13)."""
    return build(BROADCAST, READ_ADDRESS, b"", preamble)


class Scan(msgspec.Struct, frozen=True):
    """What ``scan()`` found: a checked answer frame, or why there is none yet."""

    frame: bytes | None = None
    skipped: int = 0  # bytes before the frame (preamble, noise)
    bad_crc: bool = False  # a complete candidate failed its checksum or end byte
    incomplete: bool = False  # a candidate needs more bytes


def scan(buf: bytes | bytearray, address: str, function: int) -> Scan:
    """Find the first answer to ``function`` from a meter matching ``address`` in ``buf``.

    ``address`` may hold AA wildcards: the answer carries the meter's own address. Never
    raises: any bytes give a Scan.
    """
    want = address_bytes(address)
    bad = incomplete = False
    for at in range(len(buf)):
        if buf[at] != START:
            continue
        if at + 10 > len(buf):
            incomplete = incomplete or at + 7 >= len(buf) or buf[at + 7] == START
            continue
        control = buf[at + 8]
        if buf[at + 7] != START or not control & ANSWER or control & 0x1F != function:
            continue
        if any(w not in (0xAA, got) for w, got in zip(want, buf[at + 1 : at + 7], strict=True)):
            continue
        end = at + 12 + buf[at + 9]
        if end > len(buf):
            incomplete = True
            continue
        if buf[end - 2] == sum(buf[at : end - 2]) & 0xFF and buf[end - 1] == END:
            return Scan(bytes(buf[at:end]), at, bad, incomplete)
        bad = True
    return Scan(None, len(buf), bad, incomplete)


class Frame(msgspec.Struct, frozen=True):
    """One checked frame, its data with the 0x33 offset removed."""

    address: str
    control: int
    data: bytes

    @property
    def abnormal(self) -> bool:
        """True for an error answer (control bit 6)."""
        return bool(self.control & ABNORMAL)


def parse(raw: bytes) -> Frame:
    """The frame ``raw`` holds exactly (no preamble); BadFrame when it is not one."""
    if len(raw) < 12 or raw[0] != START or raw[7] != START or raw[-1] != END:  # noqa: PLR2004
        msg = f"not a DL/T 645 frame: {raw[:16].hex(' ')}"
        raise BadFrame(msg)
    if len(raw) != 12 + raw[9] or raw[-2] != sum(raw[:-2]) & 0xFF:
        msg = f"length or checksum wrong: {raw[:16].hex(' ')}"
        raise BadFrame(msg)
    data = bytes((b - 0x33) & 0xFF for b in raw[10:-2])
    return Frame(address_text(raw[1:7]), raw[8], data)


def describe_error(status: int) -> str:
    """The reasons an error status byte gives, in words."""
    names = [name for bit, name in enumerate(ERROR_BITS) if status >> bit & 1]
    return "; ".join(names) or f"error status {status:#04x}"


class Format(msgspec.Struct, frozen=True):
    """How a value is stored: ``length`` BCD bytes, ``decimals`` after the point, sign bit."""

    length: int
    decimals: int
    signed: bool = False


def read_value(raw: bytes, di: int, fmt: Format, what: str) -> float:
    """The value a checked answer ``raw`` to a read of ``di`` carries.

    Raises DeviceException (code: the error status byte) for an abnormal answer, BadFrame
    when the answer is for another identifier, too short, or not BCD.
    """
    frame = parse(raw)
    if frame.abnormal:
        status = frame.data[0] if frame.data else 0
        raise DeviceException(status, f"{what}: {describe_error(status)}")
    if len(frame.data) < 4 + fmt.length:  # noqa: PLR2004  # the DI, then the value
        msg = f"{what}: answer carries {len(frame.data)} data bytes, expected {4 + fmt.length}"
        raise BadFrame(msg)
    got = int.from_bytes(frame.data[:4], "little")
    if got != di:
        msg = f"{what}: answer is for data identifier {got:08X}"
        raise BadFrame(msg)
    return bcd_decode(frame.data[4 : 4 + fmt.length], fmt)


def bcd_decode(data: bytes, fmt: Format) -> float:
    """The number held by little-endian BCD ``data``; BadFrame for a nibble above 9."""
    big = bytearray(data[::-1])
    negative = fmt.signed and bool(big and big[0] & 0x80)
    if negative:
        big[0] &= 0x7F
    n = 0
    for byte in big:
        high, low = byte >> 4, byte & 0x0F
        if high > 9 or low > 9:  # noqa: PLR2004
            msg = f"{data.hex(' ')} is not BCD"
            raise BadFrame(msg)
        n = n * 100 + high * 10 + low
    value: float = n / 10**fmt.decimals
    return -value if negative else value


def bcd_encode(value: float, fmt: Format) -> bytes:
    """``value`` as little-endian BCD; ValueError when it does not fit."""
    n = round(abs(value) * 10**fmt.decimals)
    digits = 2 * fmt.length
    limit = 8 * 10 ** (digits - 1) if fmt.signed else 10**digits
    if n >= limit or (value < 0 and not fmt.signed):
        msg = f"{value} does not fit in {fmt.length} BCD bytes with {fmt.decimals} decimals"
        raise ValueError(msg)
    big = bytearray(bytes.fromhex(f"{n:0{digits}d}"))
    if value < 0 and n:
        big[0] |= 0x80
    return bytes(big[::-1])
