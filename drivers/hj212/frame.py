"""HJ 212-2017 messages: framing, CRC, the data segment and its CP field; pure.

A message on the wire (HJ 212-2017 section 6.3)::

    ## | LLLL | QN=...;ST=..;CN=....;PW=......;MN=...;Flag=.;[PNUM=..;PNO=..;]CP=&&...&& | CRC | CR LF

``LLLL`` is the data segment's length in bytes, four decimal digits (0-1024 by the
standard; a longer report is split into packets carrying PNUM, the number of packets, and
PNO, this one's number, with Flag bit 1 set). ``CRC`` is four hex digits of the standard's
own CRC-16 over the data segment (appendix A: register 0xFFFF, each byte XORed into the
*low* byte after the register is shifted right by 8, then eight shifts with 0xA001; not the
Modbus CRC, which does not shift the register before the XOR). Flag bit 0 asks for an
answer; bits 2-7 hold the protocol version (1 = HJ 212-2017).

CP holds items separated by ``;``, each item fields separated by ``,``, each field
``key=value``; a pollutant's fields are ``CODE-Rtd`` (real-time value), ``-Avg``, ``-Min``,
``-Max``, ``-Cou`` (cumulative), ``-Flag`` (data flag) and others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from cimedge.edge.errors import BadFrame
from cimedge.edge.model import Quality

HEADER = b"##"
TAIL = b"\r\n"
MAX_DATA = 1024  # bytes of data segment in one packet, by the standard
MAX_ACCEPT = 9999  # the most the length field can say: accepted on receive from old stations
FLAG_ANSWER, FLAG_PACKETS = 0x01, 0x02
VERSION_2017 = 0x04  # version 1 in bits 2-7

# Command numbers (CN) this package uses; HJ 212-2017 table 8.
CN_GET_TIME, CN_SET_TIME, CN_TIME_CALIBRATION = 1011, 1012, 1013
CN_RTD, CN_MINUTE, CN_HOUR, CN_DAY = 2011, 2051, 2061, 2031
CN_REQUEST_ANSWER, CN_EXECUTE_RESULT, CN_NOTICE_ANSWER, CN_DATA_ANSWER = 9011, 9012, 9013, 9014
DATA_CNS = (CN_RTD, CN_MINUTE, CN_HOUR, CN_DAY)
QN_READY, QN_REFUSED, QN_BAD_PASSWORD = 1, 2, 3  # QnRtn of 9011
EXE_OK, EXE_FAILED, EXE_NO_DATA = 1, 2, 100  # ExeRtn of 9012

# Data flags (HJ 212-2017 table 6) and the reading quality each one gives.
FLAGS = {
    "N": Quality.GOOD,  # normal
    "T": Quality.RANGE,  # over the instrument's upper limit
    "D": Quality.COMM,  # instrument fault
    "B": Quality.COMM,  # instrument communication failure
    "F": Quality.STALE,  # station stopped
    "M": Quality.STALE,  # maintenance
    "C": Quality.STALE,  # calibration
    "S": Quality.STALE,  # set by hand, not measured
}
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,19}$")


def _step8(reg: int) -> int:
    for _ in range(8):
        carry = reg & 1
        reg >>= 1
        if carry:
            reg ^= 0xA001
    return reg


# After "reg = (reg >> 8) ^ byte" the register holds 8 bits, so its eight shifts are a
# lookup: the table is appendix A's inner loop applied to each of the 256 values.
_TABLE = tuple(_step8(i) for i in range(256))


def crc16(data: bytes) -> int:
    """HJ 212-2017 appendix A CRC-16 of ``data``."""
    reg = 0xFFFF
    table = _TABLE
    for byte in data:
        reg = table[(reg >> 8) ^ byte]
    return reg


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One packet's data segment, split into its fields; ``cp`` is the raw CP text."""

    qn: str = ""
    st: str = ""
    cn: int = 0
    pw: str = ""
    mn: str = ""
    flag: int = VERSION_2017
    pnum: int = 0
    pno: int = 0
    cp: str = ""

    @property
    def wants_answer(self) -> bool:
        """Flag bit 0: the sender asks for an answer."""
        return bool(self.flag & FLAG_ANSWER)


def segment(msg: Message) -> bytes:
    """The data segment text of ``msg``."""
    parts = []
    if msg.qn:
        parts.append(f"QN={msg.qn}")
    parts += [f"ST={msg.st}", f"CN={msg.cn}", f"PW={msg.pw}", f"MN={msg.mn}",
              f"Flag={msg.flag}"]
    if msg.pnum:
        parts += [f"PNUM={msg.pnum}", f"PNO={msg.pno}"]
    parts.append(f"CP=&&{msg.cp}&&")
    return ";".join(parts).encode("ascii")


def encode(msg: Message) -> bytes:
    """The whole packet for ``msg``; ValueError when its data segment is too long."""
    data = segment(msg)
    if len(data) > MAX_ACCEPT:
        msg_ = f"a data segment of {len(data)} bytes does not fit the 4-digit length"
        raise ValueError(msg_)
    return HEADER + b"%04d" % len(data) + data + b"%04X" % crc16(data) + TAIL


def parse(raw: bytes) -> Message:
    """The message ``raw`` holds exactly; BadFrame naming the problem when it is not one."""
    if len(raw) < 12 or raw[:2] != HEADER or raw[-2:] != TAIL:  # noqa: PLR2004
        raise BadFrame(f"not an HJ 212 packet: {raw[:24]!r}")
    head = raw[2:6]
    if not head.isdigit() or int(head) != len(raw) - 12:
        raise BadFrame(f"length field {head!r} does not match the packet")
    data, crc = raw[6:-6], raw[-6:-2]
    try:
        got = int(crc, 16)
    except ValueError:
        raise BadFrame(f"CRC field {crc!r} is not hex") from None
    if got != crc16(data):
        raise BadFrame(f"CRC {crc.decode('ascii', 'replace')} wrong (computed {crc16(data):04X})")
    return parse_segment(data)


def parse_segment(data: bytes) -> Message:
    """The fields of one data segment; BadFrame when it does not follow the standard."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BadFrame("data segment is not ASCII") from None
    head, sep, rest = text.partition("CP=&&")
    if not sep or not rest.endswith("&&"):
        raise BadFrame("data segment has no CP=&&...&&")
    fields: dict[str, str] = {}
    for item in head.split(";"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or key in fields:
            raise BadFrame(f"data segment field {item[:20]!r} malformed or repeated")
        fields[key] = value
    try:
        return Message(
            qn=fields.get("QN", ""), st=fields["ST"], cn=int(fields["CN"]),
            pw=fields.get("PW", ""), mn=fields["MN"], flag=int(fields.get("Flag", "4")),
            pnum=int(fields.get("PNUM", "0")), pno=int(fields.get("PNO", "0")), cp=rest[:-2],
        )  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise BadFrame(f"data segment lacks or garbles {exc}") from None


class Split:
    """Cuts HJ 212 packets out of a TCP byte stream (``drivers.tcp_listen.Framing``)."""

    def split(self, buf: bytearray) -> tuple[list[bytes], int]:
        """Remove every complete packet from ``buf``: (packets with a good CRC, bad ones)."""
        frames: list[bytes] = []
        bad = 0
        resync = False  # skipping the rest of a packet already counted as bad
        while True:
            at = buf.find(HEADER)
            if at < 0:
                if buf:  # keep a lone trailing '#', drop the rest as noise
                    keep = 1 if buf.endswith(b"#") else 0
                    bad += int(len(buf) > keep and not resync)
                    del buf[: len(buf) - keep]
                return frames, bad
            if at:
                del buf[:at]
                bad += int(not resync)
            resync = False
            if len(buf) < 6:  # noqa: PLR2004
                return frames, bad
            head = bytes(buf[2:6])
            if not head.isdigit():  # "##" inside noise ("###0101..." too): move on by one
                del buf[:1]
                continue
            end = 6 + int(head) + 6
            if len(buf) < end:
                return frames, bad
            raw = bytes(buf[:end])
            try:
                parse(raw)
            except BadFrame:
                del buf[:2]  # resynchronise on the next "##"
                bad += 1
                resync = True
                continue
            del buf[:end]
            frames.append(raw)

    def key(self, frame: bytes) -> str | None:
        """The MN a checked packet carries."""
        m = re.search(rb";MN=([^;]*);", frame)
        return m.group(1).decode("ascii") if m else None


class Value(msgspec.Struct, frozen=True):
    """One pollutant field: its text value and the item's data flag ('' when none)."""

    text: str
    flag: str = ""


class Cp(msgspec.Struct):
    """A parsed CP: DataTime, the pollutants' fields, and every other key."""

    data_time: str = ""
    pollutants: dict[str, dict[str, str]] = {}  # code -> field (Rtd, Avg, Flag, ...) -> text
    other: dict[str, str] = {}

    def value(self, code: str, field: str) -> Value | None:
        """The ``field`` of pollutant ``code`` with its flag, or None when absent."""
        fields = self.pollutants.get(code)
        if fields is None or field not in fields:
            return None
        return Value(fields[field], fields.get("Flag", ""))


def parse_cp(cp: str) -> Cp:
    """The fields of a CP text; BadFrame for a field without '=' or a repeated one."""
    out = Cp(pollutants={}, other={})
    for item in cp.split(";"):
        for field in item.split(","):
            if not field:
                continue
            key, eq, value = field.partition("=")
            if not eq or not key:
                raise BadFrame(f"CP field {field[:24]!r} has no key=value")
            code, dash, name = key.rpartition("-")
            if dash and code:
                group = out.pollutants.setdefault(code, {})
                if name in group:
                    raise BadFrame(f"CP field {key!r} repeated")
                group[name] = value
            elif key == "DataTime":
                out.data_time = value
            else:
                out.other[key] = value
    return out


def build_cp(items: Iterable[Iterable[tuple[str, str]]]) -> str:
    """CP text from items of (key, value) fields."""
    return ";".join(",".join(f"{k}={v}" for k, v in item) for item in items)


def split_packets(msg: Message, limit: int = MAX_DATA) -> list[Message]:
    """``msg`` as one packet, or as several (PNUM/PNO) each within ``limit`` data bytes.

    CP is cut between items (at ``;``), so each packet's CP stays parseable; DataTime, when
    first, is repeated in every packet.
    """
    if len(segment(msg)) <= limit:
        return [msg]
    items = msg.cp.split(";")
    lead = [items.pop(0)] if items and items[0].startswith("DataTime=") else []
    base = msgspec.structs.replace(msg, flag=msg.flag | FLAG_PACKETS, pnum=999, pno=999, cp="")
    room = limit - len(segment(base)) - 1
    chunks: list[list[str]] = []
    for item in items:
        if chunks and len(";".join(lead + chunks[-1] + [item])) <= room:
            chunks[-1].append(item)
        elif len(";".join([*lead, item])) <= room:
            chunks.append([item])
        else:
            msg_ = f"CP item {item[:30]!r} does not fit in one packet"
            raise ValueError(msg_)
    return [msgspec.structs.replace(base, pnum=len(chunks), pno=i + 1, cp=";".join(lead + c))
            for i, c in enumerate(chunks)]


class Assembler:
    """Joins the packets of a split message (same MN, QN and CN) back into one CP.

    Holds at most ``max_messages`` incomplete messages; the oldest is dropped (and counted)
    when another starts. A repeated packet number replaces the earlier packet.
    """

    def __init__(self, max_messages: int = 8) -> None:
        self.max_messages = max_messages
        self.dropped = 0
        self._parts: dict[tuple[str, str, int], dict[int, Message]] = {}

    def add(self, msg: Message) -> Message | None:
        """The whole message once its last packet is in, else None."""
        if not msg.pnum or msg.pnum == 1:
            return msgspec.structs.replace(msg, pnum=0, pno=0)
        if not 1 <= msg.pno <= msg.pnum:
            raise BadFrame(f"packet number {msg.pno} of {msg.pnum}")
        key = (msg.mn, msg.qn, msg.cn)
        parts = self._parts.pop(key, {})
        parts[msg.pno] = msg
        if len(parts) < msg.pnum:
            self._parts[key] = parts
            while len(self._parts) > self.max_messages:
                del self._parts[next(iter(self._parts))]
                self.dropped += 1
            return None
        cps = [parts[i].cp for i in range(1, msg.pnum + 1)]
        lead = cps[0].split(";", 1)[0] if cps[0].startswith("DataTime=") else ""
        body = [c.split(";", 1)[1] if lead and c.startswith(lead + ";") else c for c in cps]
        joined = ";".join(([lead] if lead else []) + [b for b in body if b and b != lead])
        return msgspec.structs.replace(msg, pnum=0, pno=0, cp=joined)


def answer(request: Message, cn: int, cp: str) -> Message:
    """A reply to ``request`` (9011, 9012, 9014, or a data upload for a query)."""
    return Message(qn=request.qn, st="91" if cn >= CN_REQUEST_ANSWER else request.st, cn=cn,
                   pw=request.pw, mn=request.mn, flag=VERSION_2017, cp=cp)


def valid_field(name: str) -> bool:
    """True for a pollutant field name (Rtd, Avg, Min, Max, Cou, ZsRtd, ...)."""
    return bool(_FIELD.match(name))
