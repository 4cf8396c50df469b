"""SL 651-2014 hydrological telemetry messages, HEX/BCD encoding: framing, CRC, elements; pure.

A message (SL 651-2014 section 6.2, HEX/BCD form)::

    7E 7E | addresses | PW(2) | FC | D+LLL(2) | STX 02 or SYN 16 [+ 3 packet bytes] | body | end | CRC(2)

Up (station to centre) the addresses are the centre (1 byte) then the station (5); down,
the station then the centre. ``D`` is the direction nibble (0 up, 8 down), ``LLL`` the
body length in 12 bits (the bytes between the start character and the end character; the
three packet bytes of a multi-packet message, 12 bits of total and 12 of number, count in
it). The end character is ETX 03 (last packet), ETB 17 (more follow), ENQ 05 (a query),
ACK 06, NAK 15, EOT 04 (link may close), ESC 1B (stay online). The CRC is CRC-16 with
polynomial 0xA001 from 0xFFFF (the Modbus one) over everything from the first 7E up to
and including the end character, sent high byte first.

A report's body: serial number (2), send time (6 BCD, YYMMDDhhmmss), then elements. An
element is an identifier byte and a data-definition byte (high 5 bits: value length in
bytes, low 3 bits: decimals) followed by the value in BCD (a leading FF byte: negative;
all FF: no value). Guides have their own shapes: F1 F1 + station address (5) + station
type (1), F0 F0 + observation time (5 BCD, YYMMDDhhmm), 04 18 + time step (3 BCD DDhhmm);
45 20 (status and alarm) and F4/F5 (5-minute series) are binary, not BCD.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from cimedge.edge.errors import BadFrame

START = b"\x7e\x7e"
STX, SYN = 0x02, 0x16
ETX, ETB, ENQ, ACK, NAK, EOT, ESC = 0x03, 0x17, 0x05, 0x06, 0x15, 0x04, 0x1B
ENDS = {ETX, ETB, ENQ, ACK, NAK, EOT, ESC}
UP, DOWN = 0x0, 0x8
MAX_BODY = 4095

# Function codes (SL 651-2014 table 9) this package uses.
FC_LINK, FC_TEST, FC_INTERVAL, FC_TIMED, FC_ADDED, FC_HOUR, FC_MANUAL = (
    0x2F, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35)
FC_QUERY_NOW, FC_QUERY_HISTORY, FC_SET_CLOCK, FC_QUERY_CLOCK = 0x37, 0x38, 0x4A, 0x51
REPORTS = (FC_TEST, FC_INTERVAL, FC_TIMED, FC_ADDED, FC_HOUR, FC_MANUAL)

# Guide identifiers that do not follow the id + definition + BCD rule.
ID_OBS_TIME, ID_ADDRESS, ID_STEP, ID_STATUS = 0xF0, 0xF1, 0x04, 0x45
BINARY_IDS = {0x45, 0xF4, 0xF5}

# Element identifiers the sites use (SL 651-2014 appendix C, table C.1), by name.
ELEMENTS: dict[str, tuple[int, str, str]] = {
    "air_temperature": (0x03, "Cel", "air temperature"),
    "water_temperature": (0x04, "Cel", "water temperature"),
    "rainfall_1h": (0x1A, "mm", "rainfall in the last hour"),
    "rainfall_day": (0x1F, "mm", "rainfall of the day"),
    "rainfall_now": (0x20, "mm", "current rainfall (since the last report)"),
    "rainfall_5min": (0x22, "mm", "rainfall in the last 5 minutes"),
    "rainfall_total": (0x26, "mm", "cumulative rainfall"),
    "flow": (0x27, "m3/s", "instantaneous flow"),
    "voltage": (0x38, "V", "supply voltage"),
    "water_level": (0x39, "m", "instantaneous river water level"),
    "status": (0x45, "", "status and alarm bits"),
    "ph": (0x46, "pH", "pH"),
    "dissolved_oxygen": (0x47, "mg/L", "dissolved oxygen"),
    "conductivity": (0x48, "uS/cm", "conductivity"),
    "turbidity": (0x49, "NTU", "turbidity"),
}
# Bits of the status and alarm element (45 20), bit 0 first.
STATUS_BITS = ("AC charging stopped", "battery voltage low", "water level over limit",
               "flow over limit", "water quality over limit", "flow meter fault",
               "water level meter fault", "cabinet door open", "memory fault")


def _step8(reg: int) -> int:
    for _ in range(8):
        reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1
    return reg


_TABLE = tuple(_step8(i) for i in range(256))


def crc16(data: bytes) -> int:
    """CRC-16 (0xA001, from 0xFFFF) of ``data``; table-driven."""
    reg = 0xFFFF
    table = _TABLE
    for byte in data:
        reg = (reg >> 8) ^ table[(reg ^ byte) & 0xFF]
    return reg


class Frame(msgspec.Struct, frozen=True, kw_only=True):
    """One message: who, what, and the body; ``packets``/``packet`` for multi-packet ones."""

    centre: int
    station: str  # 10 hex digits as printed (BCD for hydrological stations)
    password: str  # 4 hex digits
    fc: int
    up: bool = True
    body: bytes = b""
    end: int = ETX
    packets: int = 0  # 0: a single-packet message (STX)
    packet: int = 0


def encode(f: Frame) -> bytes:
    """The whole message for ``f``; ValueError for fields out of range."""
    station = bytes.fromhex(f.station)
    if len(station) != 5 or not 0 <= f.centre <= 255 or len(bytes.fromhex(f.password)) != 2:  # noqa: PLR2004
        msg = "station address is 5 bytes, centre 1, password 2"
        raise ValueError(msg)
    addresses = bytes((f.centre,)) + station if f.up else station + bytes((f.centre,))
    lead = bytes((STX,))
    body = f.body
    if f.packets:
        lead = bytes((SYN,))
        body = ((f.packets << 12) | f.packet).to_bytes(3, "big") + body
    if len(body) > MAX_BODY:
        msg = f"a body of {len(body)} bytes does not fit the 12-bit length"
        raise ValueError(msg)
    head = (START + addresses + bytes.fromhex(f.password) + bytes((f.fc,))
            + (((UP if f.up else DOWN) << 12) | len(body)).to_bytes(2, "big"))
    out = head + lead + body + bytes((f.end,))
    return out + crc16(out).to_bytes(2, "big")


def parse(raw: bytes) -> Frame:
    """The message ``raw`` holds exactly; BadFrame naming the problem when it is not one."""
    if len(raw) < 17 or raw[:2] != START:  # noqa: PLR2004
        raise BadFrame(f"not an SL 651 HEX message: {raw[:16].hex(' ')}")
    if int.from_bytes(raw[-2:], "big") != crc16(raw[:-2]):
        raise BadFrame(f"CRC {raw[-2:].hex().upper()} wrong (computed {crc16(raw[:-2]):04X})")
    word = int.from_bytes(raw[11:13], "big")
    direction, length = word >> 12, word & 0x0FFF
    if direction not in (UP, DOWN) or len(raw) != 17 + length:
        raise BadFrame(f"direction/length {raw[11:13].hex()} does not match the message")
    lead, end = raw[13], raw[-3]
    if lead not in (STX, SYN) or end not in ENDS:
        raise BadFrame(f"start {lead:02X} or end {end:02X} character wrong")
    up = direction == UP
    centre, station = (raw[2], raw[3:8]) if up else (raw[7], raw[2:7])
    body, packets, packet = raw[14:-3], 0, 0
    if lead == SYN:
        if len(body) < 3:  # noqa: PLR2004
            raise BadFrame("multi-packet message without its packet numbers")
        n = int.from_bytes(body[:3], "big")
        packets, packet, body = n >> 12, n & 0x0FFF, body[3:]
        if not 1 <= packet <= packets:
            raise BadFrame(f"packet {packet} of {packets}")
    return Frame(centre=centre, station=station.hex().upper(), password=raw[8:10].hex().upper(),
                 fc=raw[10], up=up, body=bytes(body), end=end, packets=packets, packet=packet)


class Split:
    """Cuts SL 651 HEX messages out of a TCP byte stream (``drivers.tcp_listen.Framing``)."""

    def split(self, buf: bytearray) -> tuple[list[bytes], int]:
        """Remove every complete message from ``buf``: (messages with a good CRC, bad ones)."""
        frames: list[bytes] = []
        bad = 0
        resync = False
        while True:
            at = buf.find(START)
            if at < 0:
                keep = 1 if buf.endswith(b"\x7e") else 0
                if len(buf) > keep:
                    bad += int(not resync)
                    del buf[: len(buf) - keep]
                return frames, bad
            if at:
                del buf[:at]
                bad += int(not resync)
            resync = False
            if len(buf) < 13:  # noqa: PLR2004
                return frames, bad
            end = 17 + (int.from_bytes(buf[11:13], "big") & 0x0FFF)
            if buf[11] >> 4 not in (UP, DOWN):
                del buf[:1]
                continue
            if len(buf) < end:
                return frames, bad
            raw = bytes(buf[:end])
            try:
                parse(raw)
            except BadFrame:
                del buf[:2]
                bad += 1
                resync = True
                continue
            del buf[:end]
            frames.append(raw)

    def key(self, raw: bytes) -> str | None:
        """The station address of an upward message."""
        return raw[3:8].hex().upper() if raw[11] >> 4 == UP else None


# -- BCD and times --------------------------------------------------------------------------


def bcd(data: bytes) -> int:
    """The number ``data`` holds in BCD, high digit first; BadFrame for a nibble above 9."""
    n = 0
    for byte in data:
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:  # noqa: PLR2004
            raise BadFrame(f"{data.hex(' ')} is not BCD")
        n = n * 100 + hi * 10 + lo
    return n


def to_bcd(n: int, size: int) -> bytes:
    """``n`` in ``size`` BCD bytes; ValueError when it does not fit."""
    if not 0 <= n < 10 ** (2 * size):
        msg = f"{n} does not fit in {size} BCD bytes"
        raise ValueError(msg)
    return bytes.fromhex(f"{n:0{2 * size}d}")


def time_bytes(when: dt.datetime, size: int = 6) -> bytes:
    """YYMMDDhhmmss (6), YYMMDDhhmm (5) or YYMMDDhh (4) in BCD."""
    return bytes.fromhex(when.strftime("%y%m%d%H%M%S")[: 2 * size])


def parse_time(data: bytes, tz: dt.tzinfo) -> dt.datetime:
    """The time held by 4, 5 or 6 BCD bytes (YYMMDD[hh[mm[ss]]]); BadFrame when none is."""
    bcd(data)
    text = data.hex()
    try:
        return dt.datetime.strptime(text, "%y%m%d%H%M%S"[: len(text)]).replace(tzinfo=tz)
    except ValueError:
        raise BadFrame(f"{data.hex(' ')} is not a time") from None


def value_bytes(value: float | None, definition: int) -> bytes:
    """``value`` per a data-definition byte (BCD, a leading FF for negatives; None: all FF)."""
    size, decimals = definition >> 3, definition & 0x07
    if value is None:
        return b"\xff" * size
    n = round(abs(value) * 10**decimals)
    if value < 0:
        return b"\xff" + to_bcd(n, size - 1)
    return to_bcd(n, size)


def definition(size: int, decimals: int) -> int:
    """The data-definition byte for ``size`` bytes with ``decimals``."""
    return (size << 3) | decimals


# -- bodies ---------------------------------------------------------------------------------


class Report(msgspec.Struct):
    """A report's body: serial, send time, station, observation time and element values."""

    serial: int
    sent: bytes  # the 6 BCD bytes, kept raw: turned into a time with the station's zone
    station: str = ""
    station_type: int = 0
    observed: bytes = b""  # 5 BCD bytes, or b""
    step: bytes = b""  # 3 BCD bytes DDhhmm, or b""
    values: dict[int, list[float | None]] = {}  # id -> values (repeated ids keep each)
    binary: dict[int, bytes] = {}  # status and 5-minute series


def parse_report(body: bytes) -> Report:
    """The parts of a report body; BadFrame when an element runs past the end or is not BCD."""
    if len(body) < 8:  # noqa: PLR2004
        raise BadFrame("report body shorter than serial number and send time")
    out = Report(int.from_bytes(body[:2], "big"), body[2:8], values={}, binary={})
    at = 8
    while at < len(body):
        ident = body[at]
        if at + 2 > len(body):
            raise BadFrame(f"element {ident:02X} cut short")
        if ident == ID_ADDRESS and body[at + 1] == ID_ADDRESS:
            chunk = _take(body, at + 2, 6, "station address")
            out.station, out.station_type = chunk[:5].hex().upper(), chunk[5]
            at += 8
            continue
        if ident == ID_OBS_TIME and body[at + 1] == ID_OBS_TIME:
            out.observed = _take(body, at + 2, 5, "observation time")
            at += 7
            continue
        size = body[at + 1] >> 3
        if size == 0:
            raise BadFrame(f"element {ident:02X} with an empty definition byte")
        chunk = _take(body, at + 2, size, f"element {ident:02X}")
        at += 2 + size
        if ident == ID_STEP:
            out.step = chunk
        elif ident in BINARY_IDS:
            out.binary[ident] = chunk
        else:
            out.values.setdefault(ident, []).append(_number(chunk, body[at - size - 1] & 7))
    return out


def _take(body: bytes, at: int, size: int, what: str) -> bytes:
    if at + size > len(body):
        raise BadFrame(f"{what} runs past the end of the body")
    return body[at : at + size]


def _number(chunk: bytes, decimals: int) -> float | None:
    if all(b == 0xFF for b in chunk):  # noqa: PLR2004
        return None
    if chunk[0] == 0xFF:  # noqa: PLR2004
        return -bcd(chunk[1:]) / 10**decimals
    return bcd(chunk) / 10**decimals


def element(ident: int, value: float | None, size: int, decimals: int) -> bytes:
    """One element: identifier, definition byte, value."""
    d = definition(size, decimals)
    return bytes((ident, d)) + value_bytes(value, d)


def report_body(serial: int, sent: dt.datetime, station: str, station_type: int,
                observed: dt.datetime, elements: bytes) -> bytes:
    """A report body: serial, send time, F1F1 station, F0F0 observation time, elements."""
    return (serial.to_bytes(2, "big") + time_bytes(sent) + b"\xf1\xf1" + bytes.fromhex(station)
            + bytes((station_type,)) + b"\xf0\xf0" + time_bytes(observed, 5) + elements)


def history_series(body: bytes) -> tuple[bytes, bytes, int, int, list[float | None]]:
    """A history answer (0x38): observation time, step, element id, definition, the values.

    Its body is serial, send time, F1F1 station, F0F0 first observation time, 04 18 step,
    then one element identifier and definition followed by one value per step.
    """
    report = _prefix(body)
    at = report
    if body[at : at + 2] != b"\x04\x18":
        raise BadFrame("history answer without its time step (04 18)")
    step = _take(body, at + 2, 3, "time step")
    at += 5
    if at + 2 > len(body):
        raise BadFrame("history answer without its element")
    ident, d = body[at], body[at + 1]
    size = d >> 3
    if size == 0:
        raise BadFrame("history element with an empty definition byte")
    rest = body[at + 2 :]
    if len(rest) % size:
        raise BadFrame(f"{len(rest)} value bytes are not a whole number of {size}-byte values")
    values = [_number(rest[i : i + size], d & 7) for i in range(0, len(rest), size)]
    return body[_OBS : _OBS + 5], step, ident, d, values


_OBS = 2 + 6 + 2 + 6 + 2  # where the observation time sits in a standard report prefix


def _prefix(body: bytes) -> int:
    """Check serial, send time, F1F1 station + type, F0F0 time; where the rest starts."""
    if len(body) < _OBS + 5 or body[8:10] != b"\xf1\xf1" or body[16:18] != b"\xf0\xf0":
        raise BadFrame("body lacks the station (F1F1) or observation time (F0F0) guide")
    return _OBS + 5


def step_seconds(step: bytes) -> int:
    """Seconds of a 3-byte BCD DDhhmm time step."""
    bcd(step)
    days, hours, minutes = int(step[:1].hex()), int(step[1:2].hex()), int(step[2:3].hex())
    return ((days * 24 + hours) * 60 + minutes) * 60


def step_bytes(seconds: int) -> bytes:
    """A time step in 3 BCD bytes DDhhmm."""
    minutes = seconds // 60
    return to_bcd(minutes // 1440, 1) + to_bcd(minutes // 60 % 24, 1) + to_bcd(minutes % 60, 1)
