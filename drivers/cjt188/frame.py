"""CJ/T 188-2004 meter frames (water, heat, gas meters on RS-485/M-Bus) and their data; pure.

A frame on the wire::

    FE .. FE | 68 | T | A0..A6 | C | L | DATA | CS | 16

The 0xFE preamble wakes the meter. T is the meter type (10H-19H water, 20H-29H heat,
30H-39H gas). The address is 14 BCD digits sent low byte first ("AA" bytes are wildcards).
C is the control code: bit 7 set in an answer, bit 6 set in an abnormal answer, bits 0-5 the
function (01H read data, 03H read address, 04H write data). L is the length of DATA; CS the
sum, modulo 256, of every byte from 68 to the end of DATA. DATA starts with the data
identifier (DI0 DI1: 90 1F read meter data, A0 17 valve control, 81 0A read address) and a
serial number SER the answer repeats. Quantities are little-endian BCD followed by a unit
byte; the status word ST (two bytes) ends a read answer: ST bits 0-1 the valve (00 open,
01 closed, 11 fault), bit 2 battery low.
"""

from __future__ import annotations

import re

import msgspec

from cimedge.edge.errors import BadFrame, DeviceException

START, END, WAKE = 0x68, 0x16, 0xFE
READ_DATA, READ_ADDRESS, WRITE_DATA = 0x01, 0x03, 0x04
ANSWER, ABNORMAL = 0x80, 0x40
DI_READ, DI_VALVE, DI_ADDRESS = b"\x90\x1f", b"\xa0\x17", b"\x81\x0a"
VALVE_OPEN, VALVE_CLOSE = 0x55, 0x99
BROADCAST = "AAAAAAAAAAAAAA"
ADDRESS = re.compile(r"^(?:[0-9]{2}|AA){7}$")
MAX_DATA = 100

# Unit bytes (CJ/T 188-2004 table of units) as (unit, factor to the field's unit).
ENERGY = {0x02: 1e-3, 0x05: 1.0, 0x08: 1e3, 0x0A: 1e5, 0x01: 1 / 3.6e6, 0x0B: 1 / 3600,
          0x0E: 1 / 3.6, 0x11: 1e3 / 3.6, 0x13: 1e5 / 3.6}  # to kWh
POWER = {0x14: 1e-3, 0x17: 1.0, 0x1A: 1e3}  # to kW
VOLUME = {0x29: 1e-3, 0x2C: 1.0}  # to m3
FLOW = {0x32: 1e-3, 0x35: 1.0}  # to m3/h

# Fields of a read answer: name -> (offset in DATA, BCD bytes, decimals, unit table or None).
WATER_FIELDS: dict[str, tuple[int, int, int, dict[int, float] | None]] = {
    "flow_total": (3, 4, 2, VOLUME),
    "flow_settlement": (8, 4, 2, VOLUME),
}
HEAT_FIELDS: dict[str, tuple[int, int, int, dict[int, float] | None]] = {
    "heat_settlement": (3, 4, 2, ENERGY),
    "heat_total": (8, 4, 2, ENERGY),
    "heat_power": (13, 4, 2, POWER),
    "flow_rate": (18, 4, 4, FLOW),
    "flow_total": (23, 4, 2, VOLUME),
    "supply_temp": (28, 3, 2, None),
    "return_temp": (31, 3, 2, None),
    "working_hours": (34, 3, 0, None),
}
WATER_SIZE, HEAT_SIZE = 22, 46  # DATA bytes of a read answer
STATUS_FIELDS = ("valve_open", "valve_fault", "battery_low")
UNITS = {"flow_total": "m3", "flow_settlement": "m3", "heat_settlement": "kWh",
         "heat_total": "kWh", "heat_power": "kW", "flow_rate": "m3/h", "supply_temp": "Cel",
         "return_temp": "Cel", "working_hours": "h"}


def is_heat(meter_type: int) -> bool:
    """True for a heat (or cooling) meter, whose read answer has the longer layout."""
    return 0x20 <= meter_type <= 0x29  # noqa: PLR2004


def fields_of(meter_type: int) -> tuple[str, ...]:
    """The field names a read answer of this meter type carries."""
    table = HEAT_FIELDS if is_heat(meter_type) else WATER_FIELDS
    return (*table, *STATUS_FIELDS)


def address_bytes(address: str) -> bytes:
    """Seven address bytes, low byte first, from 14 digits ("AA" pairs are wildcards)."""
    if not ADDRESS.match(address):
        msg = f"{address!r} is not a CJ/T 188 address (14 digits; AA pairs as wildcards)"
        raise ValueError(msg)
    return bytes.fromhex(address)[::-1]


def build(meter_type: int, address: str, control: int, data: bytes, preamble: int = 3) -> bytes:
    """A whole frame with ``preamble`` wake-up bytes."""
    if len(data) > MAX_DATA:
        msg = f"{len(data)} data bytes do not fit in one frame"
        raise ValueError(msg)
    body = bytes((START, meter_type)) + address_bytes(address) + bytes((control, len(data))) + data
    return bytes((WAKE,)) * preamble + body + bytes((sum(body) & 0xFF, END))


def read_request(meter_type: int, address: str, serial: int, preamble: int = 3) -> bytes:
    """Read the meter's data (90 1F)."""
    return build(meter_type, address, READ_DATA, DI_READ + bytes((serial,)), preamble)


def valve_request(meter_type: int, address: str, serial: int, open_: bool,
                  preamble: int = 3) -> bytes:
    """Open (55) or close (99) the meter's valve (A0 17)."""
    action = VALVE_OPEN if open_ else VALVE_CLOSE
    return build(meter_type, address, WRITE_DATA, DI_VALVE + bytes((serial, action)), preamble)


class Scan(msgspec.Struct, frozen=True):
    """What ``scan()`` found: a checked answer frame, or why there is none yet."""

    frame: bytes | None = None
    skipped: int = 0
    bad_crc: bool = False
    incomplete: bool = False


def scan(buf: bytes | bytearray, address: str, function: int) -> Scan:
    """Find the first answer to ``function`` from a meter matching ``address``; never raises."""
    want = address_bytes(address)
    bad = incomplete = False
    for at in range(len(buf)):
        if buf[at] != START:
            continue
        if at + 11 > len(buf):
            incomplete = True
            continue
        control = buf[at + 9]
        if not control & ANSWER or control & 0x3F != function:
            continue
        if any(w not in (0xAA, got) for w, got in zip(want, buf[at + 2 : at + 9], strict=True)):
            continue
        end = at + 13 + buf[at + 10]
        if end > len(buf):
            incomplete = True
            continue
        if buf[end - 2] == sum(buf[at : end - 2]) & 0xFF and buf[end - 1] == END:
            return Scan(bytes(buf[at:end]), at, bad, incomplete)
        bad = True
    return Scan(None, len(buf), bad, incomplete)


class Frame(msgspec.Struct, frozen=True):
    """One checked frame."""

    meter_type: int
    address: str
    control: int
    data: bytes

    @property
    def abnormal(self) -> bool:
        """True for an error answer (control bit 6)."""
        return bool(self.control & ABNORMAL)


def parse(raw: bytes) -> Frame:
    """The frame ``raw`` holds exactly (no preamble); BadFrame when it is not one."""
    if len(raw) < 13 or raw[0] != START or raw[-1] != END:  # noqa: PLR2004
        raise BadFrame(f"not a CJ/T 188 frame: {raw[:16].hex(' ')}")
    if len(raw) != 13 + raw[10] or raw[-2] != sum(raw[:-2]) & 0xFF:
        raise BadFrame(f"length or checksum wrong: {raw[:16].hex(' ')}")
    return Frame(raw[1], raw[2:9][::-1].hex().upper(), raw[9], bytes(raw[11:-2]))


def bcd(data: bytes) -> int:
    """The number in little-endian BCD ``data``; BadFrame for a nibble above 9."""
    n = 0
    for byte in data[::-1]:
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:  # noqa: PLR2004
            raise BadFrame(f"{data.hex(' ')} is not BCD")
        n = n * 100 + hi * 10 + lo
    return n


def to_bcd(n: int, size: int) -> bytes:
    """``n`` in ``size`` little-endian BCD bytes; ValueError when it does not fit."""
    if not 0 <= n < 10 ** (2 * size):
        msg = f"{n} does not fit in {size} BCD bytes"
        raise ValueError(msg)
    return bytes.fromhex(f"{n:0{2 * size}d}")[::-1]


def check_answer(frame: Frame, serial: int, di: bytes, what: str) -> None:
    """Raise DeviceException for an abnormal answer, BadFrame for another DI or SER."""
    if frame.abnormal:
        status = int.from_bytes(frame.data[1:3], "little") if len(frame.data) >= 3 else 0  # noqa: PLR2004
        raise DeviceException(status, f"{what}: abnormal answer, status {status:04X}")
    if frame.data[:2] != di or len(frame.data) < 3 or frame.data[2] != serial:  # noqa: PLR2004
        raise BadFrame(f"{what}: answer is for {frame.data[:3].hex(' ')}, not {di.hex(' ')} "
                       f"serial {serial}")


def read_values(frame: Frame) -> dict[str, float | bool | None]:
    """Every field of a read answer (DATA after the DI and SER checks), units converted.

    A field whose unit byte is unknown is None; ``valve_open`` is None while the valve
    reports a fault. Raises BadFrame when DATA is shorter than the layout or not BCD.
    """
    heat = is_heat(frame.meter_type)
    table, size = (HEAT_FIELDS, HEAT_SIZE) if heat else (WATER_FIELDS, WATER_SIZE)
    data = frame.data
    if len(data) < size:
        raise BadFrame(f"read answer carries {len(data)} data bytes, expected {size}")
    out: dict[str, float | bool | None] = {}
    for name, (at, n, decimals, units) in table.items():
        value = bcd(data[at : at + n]) / 10**decimals
        if units is not None:
            factor = units.get(data[at + n])
            out[name] = None if factor is None else value * factor
        else:
            out[name] = value
    st = data[size - 2]
    valve = st & 0x03
    out["valve_fault"] = valve == 0x03  # noqa: PLR2004
    out["valve_open"] = None if valve == 0x03 else valve == 0  # noqa: PLR2004
    out["battery_low"] = bool(st & 0x04)
    return out
