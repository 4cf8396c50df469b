"""HJ 212 frames: packets from the standard and from other implementations, round trips, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.drivers.hj212 import frame
from cimedge.edge.errors import BadFrame
from cimedge.edge.model import Quality

# Packets that did not come from our encoder, with where they were printed.
REFERENCE = {
    # HJ 212-2017 appendix A (CRC worked example): CRC 1C80 over the data segment.
    "standard_appendix_a": (
        b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
        b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n"),
    # Hour data (2061) of an air station, in the main() of the Java HJ 212 mapper
    # com.hj212.format.hbt212.core.T212Mapper (public "hbt212" parser).
    "hbt212_hour_data": (
        b"##0285QN=20190925181031464;ST=22;CN=2061;PW=BF470F88957588DE902D1A52;"
        b"MN=Z13401000010301;Flag=5;CP=&&DataTime=20190924220000;a34006-Avg=2.69700,"
        b"a34006-Flag=N;a34007-Avg=7.96600,a34007-Flag=N;a34048-Avg=3.30600,a34048-Flag=N;"
        b"a34047-Avg=7.35700,a34047-Flag=N;a34049-Avg=10.66300,a34049-Flag=N&&C181\r\n"),
    # Real-time data (2011) of an air station, same source; lower-case CRC, trailing ';'.
    "hbt212_realtime": (
        b"##0453QN=20160801085000001;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;"
        b"Flag=7;CP=&&DataTime=20160801084000;a21005-Rtd=1.1,a21005-Flag=N;a21004-Rtd=112,"
        b"a21004-Flag=N;a21026-Rtd=58,a21026-Flag=N;LA-td=50.1,LA-Flag=N;a34004-Rtd=207,"
        b"a34004-Flag=N;a34002-Rtd=295,a34002-Flag=N;a01001-Rtd=12.6,a01001-Flag=N;"
        b"a01002-Rtd=32,a01002-Flag=N;a01006-Rtd=101.02,a01006-Flag=N;a01007-Rtd=2.1,"
        b"a01007-Flag=N;a01008-Rtd=120,a01008-Flag=N;a34001-Rtd=217,a34001-Flag=N;&&c0c1\r\n"),
}
# A sample in a comment of a public Qt HJ 212 uploader (SubWorker2021::buildCloudCmd) whose
# CRC is wrong for its segment (5DE8 printed, B041 computed): refused like any bad packet.
WRONG_CRC = (b"##0091QN=20211022183050223;ST=32;CN=2011;PW=123456;MN=88880082086206;Flag=5;"
             b"CP=&&RtdInterval=30&&5de8\r\n")


def test_crc_of_the_standards_example() -> None:
    data = REFERENCE["standard_appendix_a"][6:-6]
    assert frame.crc16(data) == 0x1C80
    modbus = 0xFFFF  # the Modbus CRC gives another value: the two must not be confused
    for b in data:
        modbus ^= b
        for _ in range(8):
            modbus = (modbus >> 1) ^ 0xA001 if modbus & 1 else modbus >> 1
    assert modbus != 0x1C80


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_packets_parse_and_reencode(name: str) -> None:
    raw = REFERENCE[name]
    msg = frame.parse(raw)
    assert frame.encode(msg).upper() == raw.upper()  # only the CRC's case may differ


def test_reference_values_and_flags() -> None:
    hour = frame.parse(REFERENCE["hbt212_hour_data"])
    assert (hour.cn, hour.st, hour.mn, hour.flag, hour.wants_answer) == (
        2061, "22", "Z13401000010301", 5, True)
    cp = frame.parse_cp(hour.cp)
    assert cp.data_time == "20190924220000"
    assert cp.value("a34049", "Avg") == frame.Value("10.66300", "N")
    rtd = frame.parse_cp(frame.parse(REFERENCE["hbt212_realtime"]).cp)
    assert rtd.value("a34004", "Rtd") == frame.Value("207", "N")
    assert rtd.value("LA", "Rtd") is None  # the sample misspells it "LA-td"
    assert frame.parse(REFERENCE["standard_appendix_a"]).cp == "RtdInterval=30"


def test_wrong_crc_from_the_wild_is_refused_and_counted() -> None:
    with pytest.raises(BadFrame, match="CRC"):
        frame.parse(WRONG_CRC)
    buf = bytearray(WRONG_CRC + REFERENCE["standard_appendix_a"])
    frames, bad = frame.Split().split(buf)
    assert frames == [REFERENCE["standard_appendix_a"]] and bad == 1 and not buf


def test_split_keeps_a_partial_packet_and_skips_noise() -> None:
    raw = REFERENCE["hbt212_hour_data"]
    split = frame.Split()
    buf = bytearray(b"\x00garbage#" + raw[:50])
    assert split.split(buf) == ([], 1)
    buf += raw[50:] + raw[:3]
    frames, bad = split.split(buf)
    assert frames == [raw] and bad == 0 and bytes(buf) == raw[:3]
    assert split.key(raw) == "Z13401000010301"


def test_flags_map_to_quality() -> None:
    assert frame.FLAGS["N"] is Quality.GOOD and frame.FLAGS["T"] is Quality.RANGE
    assert {frame.FLAGS[f] for f in "DB"} == {Quality.COMM}
    assert {frame.FLAGS[f] for f in "FMCS"} == {Quality.STALE}


def test_packets_split_and_join_back() -> None:
    items = [[("DataTime", "20260101000000")]] + [
        [(f"a{i:05d}-Rtd", f"{i}.5"), (f"a{i:05d}-Flag", "N")] for i in range(120)]
    msg = frame.Message(qn="20260101000000001", st="22", cn=2011, pw="123456", mn="MN1",
                        flag=5, cp=frame.build_cp(items))
    packets = frame.split_packets(msg)
    assert len(packets) > 1
    assert all(len(frame.encode(p)) - 12 <= frame.MAX_DATA for p in packets)
    assert [(p.pnum, p.pno) for p in packets] == [(len(packets), i + 1) for i in range(len(packets))]
    joiner = frame.Assembler()
    wire = [frame.parse(frame.encode(p)) for p in packets]
    results = [joiner.add(p) for p in reversed(wire)]  # out of order too
    assert results[:-1] == [None] * (len(packets) - 1)
    whole = results[-1]
    assert whole is not None and frame.parse_cp(whole.cp) == frame.parse_cp(msg.cp)


def test_assembler_bounds_incomplete_messages() -> None:
    joiner = frame.Assembler(max_messages=2)
    for qn in range(5):
        part = frame.Message(qn=str(qn), st="22", cn=2011, mn="M", pnum=3, pno=1, cp="x=1")
        assert joiner.add(part) is None
    assert joiner.dropped == 3
    with pytest.raises(BadFrame):
        joiner.add(frame.Message(qn="9", st="22", cn=2011, mn="M", pnum=2, pno=3, cp=""))


text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-",
               min_size=1, max_size=12)
codes = st.from_regex(r"[a-z][0-9]{5}", fullmatch=True)


@given(qn=st.from_regex(r"[0-9]{17}", fullmatch=True), stc=st.from_regex(r"[0-9]{2}", fullmatch=True),
       cn=st.integers(1000, 9999), pw=st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True),
       mn=st.from_regex(r"[A-Za-z0-9]{1,24}", fullmatch=True), flag=st.integers(0, 255),
       values=st.dictionaries(codes, st.floats(-1e6, 1e6, allow_nan=False), max_size=40),
       limit=st.integers(300, 1024))
@settings(max_examples=150, deadline=None)
def test_round_trip(qn: str, stc: str, cn: int, pw: str, mn: str, flag: int,
                    values: dict[str, float], limit: int) -> None:
    items = [[("DataTime", "20260102030405")]] + [
        [(f"{c}-Rtd", repr(v)), (f"{c}-Flag", "N")] for c, v in values.items()]
    msg = frame.Message(qn=qn, st=stc, cn=cn, pw=pw, mn=mn, flag=flag & ~frame.FLAG_PACKETS,
                        cp=frame.build_cp(items))
    packets = frame.split_packets(msg, limit)
    joiner = frame.Assembler()
    wire = b"".join(frame.encode(p) for p in packets)
    buf = bytearray(wire)
    raws, bad = frame.Split().split(buf)
    assert bad == 0 and not buf
    whole = [joiner.add(frame.parse(r)) for r in raws][-1]
    assert whole is not None
    assert (whole.qn, whole.st, whole.cn, whole.pw, whole.mn) == (qn, stc, cn, pw, mn)
    cp = frame.parse_cp(whole.cp)
    assert {c: float(cp.value(c, "Rtd").text) for c in values} == values  # type: ignore[union-attr]


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=5))
@settings(max_examples=400, deadline=None)
def test_fuzz_bytes_give_frames_or_counted_rejects(noise: bytes, cuts: list[int]) -> None:
    """Random bytes, alone or spliced into a good packet: never an exception, never a hang."""
    good = REFERENCE["hbt212_hour_data"]
    stream = bytearray(good)
    for cut in cuts:
        stream[cut % len(stream) : cut % len(stream)] = noise[:8]
    split = frame.Split()
    for chunk in (bytearray(noise), stream):
        frames, bad = split.split(chunk)
        for raw in frames:
            msg = frame.parse(raw)
            try:
                frame.parse_cp(msg.cp)
            except BadFrame:
                pass
        assert bad >= 0 and len(chunk) < len(noise) + len(stream) + 1
    with pytest.raises(BadFrame):
        frame.parse(noise + b"x")  # not a packet: BadFrame, nothing else


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_fuzz_cp_text(cp: str) -> None:
    try:
        frame.parse_cp(cp)
    except BadFrame:
        pass
