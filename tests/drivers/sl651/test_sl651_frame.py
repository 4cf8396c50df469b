"""SL 651 frames: messages from another implementation, round trips, a byte fuzz."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.drivers.sl651 import frame
from cimedge.edge.errors import BadFrame

TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
SERVER = "yu-xiaoyao/sl651-2014-server"
# Messages that did not come from our encoder, with where they were printed.
REFERENCE = {
    # {SERVER} netty-server/src/test/java/me/yuxiaoyao/sl651/netty/server/util/CrcUtilTest.java
    # calcCrc16_1: a link-keeping message (2F), centre 01, station 0012345678, password 1234.
    "link_keep": "7E7E01001234567812342F0008020003591011155111036BCA",
    # ibid. calcCrc16_2: a link-keeping message, centre 00, station 9876543210.
    "link_keep_2": "7E7E00987654321012342F0008027E0822101110074703C3AE",
    # ibid. calcCrc16_3: a timed report (32): rainfall 4.0 mm, total 4.0, level 10.490 m, 10.99 V.
    "timed_report": ("7E7E05001122334403E832002B020034170718110016F1F1001122334448F0F017071811"
                     "00201900004026190000403923000104903812109903A421"),
    # The testMessage of a public Java Netty SL 651 client (NettyClientHandler, in the code
    # index without its repository name): a test report (30), rainfall 0.5 mm, 0.127 m, 11.15 V.
    "test_report": ("7E7E010012345678123430002B020003591011154947F1F1001234567848F0F05910111549"
                    "20190000052619000005392300000127381211150320FA"),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_messages_parse_and_reencode(name: str) -> None:
    raw = bytes.fromhex(REFERENCE[name])
    assert frame.encode(frame.parse(raw)) == raw


def test_reference_report_values() -> None:
    msg = frame.parse(bytes.fromhex(REFERENCE["timed_report"]))
    assert (msg.fc, msg.centre, msg.station, msg.password, msg.up) == (
        0x32, 5, "0011223344", "03E8", True)
    report = frame.parse_report(msg.body)
    assert report.serial == 0x34 and report.station == "0011223344"
    assert frame.parse_time(report.observed, TZ) == dt.datetime(2017, 7, 18, 11, 0, tzinfo=TZ)
    assert report.values == {0x20: [4.0], 0x26: [4.0], 0x39: [10.49], 0x38: [10.99]}
    test = frame.parse_report(frame.parse(bytes.fromhex(REFERENCE["test_report"])).body)
    assert test.values == {0x20: [0.5], 0x26: [0.5], 0x39: [0.127], 0x38: [11.15]}


def test_crc_is_sent_high_byte_first_and_checked() -> None:
    raw = bytearray.fromhex(REFERENCE["link_keep"])
    assert frame.crc16(bytes(raw[:-2])) == 0x6BCA
    raw[-1] ^= 1
    with pytest.raises(BadFrame, match="CRC"):
        frame.parse(bytes(raw))


def test_values_negative_missing_and_status() -> None:
    body = frame.report_body(7, dt.datetime(2026, 1, 2, 3, 4, 5), "0012345678", 0x48,
                             dt.datetime(2026, 1, 2, 3, 0), frame.element(0x39, -1.25, 4, 3)
                             + frame.element(0x20, None, 3, 1) + b"\x45\x20\x00\x00\x00\x82")
    report = frame.parse_report(body)
    assert report.values == {0x39: [-1.25], 0x20: [None]}
    assert report.binary == {0x45: b"\x00\x00\x00\x82"}


def test_split_multi_packet_and_noise() -> None:
    parts = [frame.encode(frame.Frame(centre=1, station="0012345678", password="1234", fc=0x32,
                                      body=bytes([i]) * 10, packets=3, packet=i,
                                      end=frame.ETX if i == 3 else frame.ETB))
             for i in (1, 2, 3)]
    buf = bytearray(b"\x00\x7e" + parts[0] + parts[1][:9])
    frames, bad = frame.Split().split(buf)
    assert frames == [parts[0]] and bad == 1
    buf += parts[1][9:] + parts[2]
    frames, bad = frame.Split().split(buf)
    assert frames == parts[1:] and bad == 0 and not buf
    assert [frame.parse(p).packet for p in parts] == [1, 2, 3]
    assert frame.Split().key(parts[0]) == "0012345678"


def test_history_series_and_steps() -> None:
    assert frame.step_seconds(frame.step_bytes(3600)) == 3600
    assert frame.step_bytes(5 * 60) == b"\x00\x00\x05"
    assert frame.step_bytes(86400 + 7200 + 60) == b"\x01\x02\x01"


stations = st.from_regex(r"[0-9]{10}", fullmatch=True)


@given(centre=st.integers(0, 255), station=stations,
       pw=st.from_regex(r"[0-9A-F]{4}", fullmatch=True), fc=st.integers(0x2F, 0x51),
       up=st.booleans(), body=st.binary(max_size=300), end=st.sampled_from(sorted(frame.ENDS)),
       packets=st.integers(0, 40))
@settings(max_examples=200, deadline=None)
def test_round_trip(centre: int, station: str, pw: str, fc: int, up: bool, body: bytes,
                    end: int, packets: int) -> None:
    msg = frame.Frame(centre=centre, station=station, password=pw, fc=fc, up=up, body=body,
                      end=end, packets=packets, packet=min(packets, 1 + len(body) % 40) or 0)
    raw = frame.encode(msg)
    buf = bytearray(raw)
    assert frame.Split().split(buf) == ([raw], 0)
    assert frame.parse(raw) == msg


@given(st.dictionaries(st.sampled_from([0x03, 0x20, 0x26, 0x38, 0x39, 0x46]),
                       st.tuples(st.integers(2, 6), st.integers(0, 3),
                                 st.integers(-99999, 999999) | st.none()), max_size=6))
@settings(max_examples=200, deadline=None)
def test_report_round_trip(elements: dict[int, tuple[int, int, int | None]]) -> None:
    data, want = b"", {}
    for ident, (size, decimals, n) in elements.items():
        if n is not None and abs(n) >= 10 ** (2 * (size - (n < 0)) ):
            n = n % 10 ** (2 * (size - 1))
        value = None if n is None else n / 10**decimals
        data += frame.element(ident, value, size, decimals)
        want[ident] = [value]
    body = frame.report_body(1, dt.datetime(2026, 5, 6, 7, 8, 9), "0012345678", 0x48,
                             dt.datetime(2026, 5, 6, 7, 5), data)
    assert frame.parse_report(body).values == want


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=4))
@settings(max_examples=400, deadline=None)
def test_fuzz_bytes_give_frames_or_counted_rejects(noise: bytes, cuts: list[int]) -> None:
    good = bytes.fromhex(REFERENCE["timed_report"])
    stream = bytearray(good)
    for cut in cuts:
        stream[cut % len(stream) : cut % len(stream)] = noise[:6]
    for chunk in (bytearray(noise), stream):
        frames, bad = frame.Split().split(chunk)
        assert bad >= 0
        for raw in frames:
            msg = frame.parse(raw)
            try:
                frame.parse_report(msg.body)
                frame.history_series(msg.body)
            except BadFrame:
                pass
    for parse in (frame.parse_report, frame.history_series):
        try:
            parse(noise)
        except BadFrame:
            pass
