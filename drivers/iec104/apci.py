"""IEC 60870-5-104 APDUs: APCI frames (I, S, U) and the ASDUs a client reads and sends; pure.

An APDU is ``68 L`` then four control octets, then (I format only) an ASDU::

    I: ssn<<1 (2, LE) | rsn<<1 (2, LE) | ASDU    S: 01 00 | rsn<<1    U: func|03 00 00 00

An ASDU is type id (1), variable structure qualifier (1: bit 7 SQ, bits 0-6 the number of
objects), cause of transmission (2: bits 0-5 the cause, bit 6 P/N negative, bit 7 test;
then the originator address), common address (2, LE), then objects: information object
address (3, LE) and elements (with SQ set, one address and consecutive elements). Lengths
follow the companion standard's profile: COT 2 octets, common address 2, IOA 3.

Quality descriptors: SIQ/DIQ (single/double point) carry BL 0x10, SB 0x20, NT 0x40,
IV 0x80; QDS (measured values) adds OV 0x01. CP56Time2a (7 octets): milliseconds within the
minute (2, LE), minute (bit 7 IV), hour (bit 7 SU), day of month (bits 5-7 weekday), month,
year - 2000.
"""

from __future__ import annotations

import datetime as dt
import struct

import msgspec

from cimedge.edge.errors import BadFrame
from cimedge.edge.model import Quality

START = 0x68
MAX_APDU = 253
STARTDT_ACT, STARTDT_CON = 0x07, 0x0B
STOPDT_ACT, STOPDT_CON = 0x13, 0x23
TESTFR_ACT, TESTFR_CON = 0x43, 0x83
U_FUNCTIONS = {STARTDT_ACT, STARTDT_CON, STOPDT_ACT, STOPDT_CON, TESTFR_ACT, TESTFR_CON}

# Causes of transmission.
COT_PERIODIC, COT_BACKGROUND, COT_SPONTANEOUS, COT_INIT, COT_REQUEST = 1, 2, 3, 4, 5
COT_ACT, COT_ACTCON, COT_DEACT, COT_DEACTCON, COT_ACTTERM = 6, 7, 8, 9, 10
COT_INTERROGATED = 20

# Type identifiers.
M_SP_NA_1, M_DP_NA_1, M_BO_NA_1 = 1, 3, 7
M_ME_NA_1, M_ME_NB_1, M_ME_NC_1, M_IT_NA_1 = 9, 11, 13, 15
M_SP_TB_1, M_DP_TB_1, M_ME_TD_1, M_ME_TE_1, M_ME_TF_1, M_IT_TB_1 = 30, 31, 34, 35, 36, 37
M_EI_NA_1 = 70
C_SC_NA_1, C_DC_NA_1 = 45, 46
C_IC_NA_1, C_CI_NA_1, C_CS_NA_1 = 100, 101, 103

# Element size (quality included, time tag excluded) and whether a CP56Time2a follows.
MONITOR = {
    M_SP_NA_1: (1, False), M_DP_NA_1: (1, False), M_BO_NA_1: (5, False),
    M_ME_NA_1: (3, False), M_ME_NB_1: (3, False), M_ME_NC_1: (5, False), M_IT_NA_1: (5, False),
    M_SP_TB_1: (1, True), M_DP_TB_1: (1, True), M_ME_TD_1: (3, True), M_ME_TE_1: (3, True),
    M_ME_TF_1: (5, True), M_IT_TB_1: (5, True),
}  # fmt: skip
KIND = {M_SP_NA_1: "single", M_SP_TB_1: "single", M_DP_NA_1: "double", M_DP_TB_1: "double",
        M_IT_NA_1: "counter", M_IT_TB_1: "counter", M_BO_NA_1: "bits"}  # the rest: measured
IV, NT, SB, BL, OV = 0x80, 0x40, 0x20, 0x10, 0x01


def quality(q: int) -> Quality:
    """A quality descriptor as a reading quality: IV > OV > NT/SB/BL > good."""
    if q & IV:
        return Quality.COMM
    if q & OV:
        return Quality.RANGE
    if q & (NT | SB | BL):
        return Quality.STALE
    return Quality.GOOD


# -- APCI -----------------------------------------------------------------------------------


def i_frame(ssn: int, rsn: int, asdu: bytes) -> bytes:
    """An I-format APDU carrying ``asdu``."""
    if len(asdu) > MAX_APDU - 4:
        msg = f"an ASDU of {len(asdu)} octets does not fit one APDU"
        raise ValueError(msg)
    return bytes((START, 4 + len(asdu))) + struct.pack("<HH", (ssn << 1) & 0xFFFF,
                                                       (rsn << 1) & 0xFFFF) + asdu


def s_frame(rsn: int) -> bytes:
    """An S-format APDU acknowledging everything before ``rsn``."""
    return bytes((START, 4, 0x01, 0x00)) + struct.pack("<H", (rsn << 1) & 0xFFFF)


def u_frame(function: int) -> bytes:
    """A U-format APDU (STARTDT, STOPDT, TESTFR act or con)."""
    return bytes((START, 4, function, 0, 0, 0))


class Apdu(msgspec.Struct, frozen=True):
    """One checked APDU: its format, sequence numbers or U function, and the ASDU octets."""

    format: str  # "I", "S" or "U"
    ssn: int = 0
    rsn: int = 0
    function: int = 0
    asdu: bytes = b""


def split(buf: bytearray) -> tuple[list[Apdu], int]:
    """Remove every complete APDU from ``buf``: (APDUs, bad ones dropped).

    A malformed APDU (bad length, control field) is dropped with the octets up to the next
    start octet; the caller should treat it as a broken link (the standard closes it).
    """
    out: list[Apdu] = []
    bad = 0
    while buf:
        if buf[0] != START:
            at = buf.find(bytes((START,)))
            del buf[: at if at > 0 else len(buf)]
            bad += 1
            continue
        if len(buf) < 2:  # noqa: PLR2004
            break
        size = buf[1]
        if not 4 <= size <= MAX_APDU:  # noqa: PLR2004
            del buf[:1]
            bad += 1
            continue
        if len(buf) < 2 + size:
            break
        raw = bytes(buf[: 2 + size])
        del buf[: 2 + size]
        try:
            out.append(parse(raw))
        except BadFrame:
            bad += 1
    return out, bad


def parse(raw: bytes) -> Apdu:
    """The APDU ``raw`` holds exactly; BadFrame when it is not one."""
    if len(raw) < 6 or raw[0] != START or raw[1] != len(raw) - 2:  # noqa: PLR2004
        raise BadFrame(f"not an IEC 104 APDU: {raw[:12].hex(' ')}")
    c1, c3 = raw[2], raw[4]
    if not c1 & 1:
        if c3 & 1:
            raise BadFrame("I-format control field with the receive bit set")
        ssn, rsn = struct.unpack_from("<HH", raw, 2)
        if len(raw) < 6 + 6:  # noqa: PLR2004  # an ASDU has at least its 6-octet header
            raise BadFrame("I-format APDU without an ASDU")
        return Apdu("I", ssn >> 1, rsn >> 1, 0, raw[6:])
    if len(raw) != 6:  # noqa: PLR2004
        raise BadFrame("S- or U-format APDU with a body")
    if c1 & 3 == 1:
        return Apdu("S", 0, struct.unpack_from("<H", raw, 4)[0] >> 1)
    if c1 not in U_FUNCTIONS or raw[3:6] != b"\x00\x00\x00":
        raise BadFrame(f"unknown U-format function {c1:02X}")
    return Apdu("U", function=c1)


# -- ASDU -----------------------------------------------------------------------------------


class Asdu(msgspec.Struct, frozen=True):
    """An ASDU's header and its objects' raw octets."""

    type_id: int
    sq: bool
    count: int
    cot: int
    negative: bool
    test: bool
    originator: int
    ca: int
    body: bytes


def parse_asdu(data: bytes) -> Asdu:
    """The header of an ASDU; BadFrame when it is shorter than one."""
    if len(data) < 6:  # noqa: PLR2004
        raise BadFrame("ASDU shorter than its header")
    vsq, cot = data[1], data[2]
    return Asdu(data[0], bool(vsq & 0x80), vsq & 0x7F, cot & 0x3F, bool(cot & 0x40),
                bool(cot & 0x80), data[3], data[4] | data[5] << 8, bytes(data[6:]))


def asdu(type_id: int, cot: int, ca: int, ioa: int, element: bytes, originator: int = 0,
         negative: bool = False) -> bytes:
    """An ASDU with one object."""
    return (bytes((type_id, 1, cot | (0x40 if negative else 0), originator))
            + struct.pack("<H", ca) + ioa.to_bytes(3, "little") + element)


class Point(msgspec.Struct, frozen=True):
    """One monitored value: address, value, quality descriptor, time tag (UTC ns) if any."""

    ioa: int
    type_id: int
    value: float | int | bool | None
    qualifier: int
    time_ns: int | None = None


def monitored(a: Asdu, tz: dt.tzinfo) -> list[Point]:
    """The values of a monitoring ASDU; BadFrame when its objects do not fit its length."""
    shape = MONITOR.get(a.type_id)
    if shape is None:
        raise BadFrame(f"type {a.type_id} is not a monitored type this client reads")
    size, timed = shape
    step = size + (7 if timed else 0)
    need = (3 + step * a.count) if a.sq else (3 + step) * a.count
    if len(a.body) != need or a.count == 0:
        raise BadFrame(f"type {a.type_id}: {a.count} objects do not fill {len(a.body)} octets")
    out = []
    at = 0
    base = int.from_bytes(a.body[:3], "little")
    for i in range(a.count):
        if a.sq:
            ioa, at = base + i, 3 + i * step
        else:
            ioa, at = int.from_bytes(a.body[at : at + 3], "little"), at + 3
        element = a.body[at : at + size]
        value, q = _element(a.type_id, element)
        when = cp56_ns(a.body[at + size : at + step], tz) if timed else None
        out.append(Point(ioa, a.type_id, value, q, when))
        if not a.sq:
            at += step
    return out


def _element(type_id: int, e: bytes) -> tuple[float | int | bool | None, int]:
    if type_id in (M_SP_NA_1, M_SP_TB_1):
        return bool(e[0] & 1), e[0] & 0xF0
    if type_id in (M_DP_NA_1, M_DP_TB_1):
        dpi = e[0] & 3
        return (None if dpi in (0, 3) else dpi == 2), e[0] & 0xF0 | (IV if dpi in (0, 3) else 0)  # noqa: PLR2004
    if type_id in (M_ME_NA_1, M_ME_TD_1):
        return struct.unpack_from("<h", e)[0] / 32768.0, e[2] & 0xF1
    if type_id in (M_ME_NB_1, M_ME_TE_1):
        return struct.unpack_from("<h", e)[0], e[2] & 0xF1
    if type_id in (M_ME_NC_1, M_ME_TF_1):
        return struct.unpack_from("<f", e)[0], e[4] & 0xF1
    if type_id in (M_IT_NA_1, M_IT_TB_1):
        return struct.unpack_from("<i", e)[0], IV if e[4] & 0x80 else 0
    return int.from_bytes(e[:4], "little"), e[4] & 0xF1  # bitstring of 32 bits


def cp56(when: dt.datetime) -> bytes:
    """CP56Time2a of an aware datetime, in its own zone."""
    ms = when.second * 1000 + when.microsecond // 1000
    return struct.pack("<H", ms) + bytes((when.minute, when.hour,
                                          when.day | (when.isoweekday() << 5), when.month,
                                          when.year - 2000))


def cp56_ns(data: bytes, tz: dt.tzinfo) -> int | None:
    """A CP56Time2a as Unix ns; None when marked invalid or impossible."""
    if len(data) != 7 or data[2] & 0x80:  # noqa: PLR2004
        return None
    ms = data[0] | data[1] << 8
    try:
        when = dt.datetime(2000 + (data[6] & 0x7F), data[5] & 0x0F, data[4] & 0x1F,
                           data[3] & 0x1F, data[2] & 0x3F, ms // 1000, (ms % 1000) * 1000,
                           tzinfo=tz)
    except ValueError:
        return None
    return int(when.timestamp() * 1_000_000) * 1000


def single_command(on: bool, select: bool) -> bytes:
    """An SCO: state, qualifier 0, S/E."""
    return bytes((int(on) | (0x80 if select else 0),))


def double_command(on: bool, select: bool) -> bytes:
    """A DCO: 2 on, 1 off, qualifier 0, S/E."""
    return bytes(((2 if on else 1) | (0x80 if select else 0),))
