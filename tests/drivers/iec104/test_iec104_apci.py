"""IEC 104 APDUs: the standard's U-frames, our I-frames decoded by c104 (lib60870), fuzz."""

from __future__ import annotations

import datetime as dt
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimedge.drivers.iec104 import apci
from cimedge.edge.errors import BadFrame
from cimedge.edge.model import Quality

UTC = dt.UTC
# IEC 60870-5-104 clause 5.3 (U format control field): STARTDT act 07, con 0B; STOPDT act
# 13, con 23; TESTFR act 43, con 83, each in a 6-octet APDU of start 68 and length 04.
STANDARD_U = {"STARTDT act": "680407000000", "STARTDT con": "68040B000000",
              "STOPDT act": "680413000000", "STOPDT con": "680423000000",
              "TESTFR act": "680443000000", "TESTFR con": "680483000000"}


@pytest.mark.parametrize("name", sorted(STANDARD_U))
def test_u_frames_of_the_standard(name: str) -> None:
    raw = bytes.fromhex(STANDARD_U[name])
    got = apci.parse(raw)
    assert got.format == "U" and apci.u_frame(got.function) == raw


def test_s_and_i_sequence_numbers() -> None:
    assert apci.s_frame(5) == bytes.fromhex("680401000A00")
    apdu = apci.parse(apci.i_frame(32767, 3, apci.asdu(apci.C_IC_NA_1, 6, 1, 0, b"\x14")))
    assert (apdu.format, apdu.ssn, apdu.rsn) == ("I", 32767, 3)


def _explain(raw: bytes) -> dict:
    c104 = pytest.importorskip("c104")
    return c104.explain_bytes_dict(apdu=raw)


@pytest.mark.parametrize(("type_id", "ioa", "element", "name"), [
    (apci.C_IC_NA_1, 0, b"\x14", "C_IC_NA_1"),
    (apci.C_CI_NA_1, 0, b"\x05", "C_CI_NA_1"),
    (apci.C_SC_NA_1, 3001, apci.single_command(True, True), "C_SC_NA_1"),
    (apci.C_DC_NA_1, 3002, apci.double_command(False, False), "C_DC_NA_1"),
    (apci.C_CS_NA_1, 0, apci.cp56(dt.datetime(2026, 12, 3, 17, 5, 6, 789000, tzinfo=UTC)),
     "C_CS_NA_1"),
])
def test_our_activations_as_c104_reads_them(type_id: int, ioa: int, element: bytes,
                                            name: str) -> None:
    raw = apci.i_frame(7, 9, apci.asdu(type_id, apci.COT_ACT, 47, ioa, element, originator=3))
    got = _explain(raw)
    assert (got["format"], got["tx"], got["rx"]) == ("I", 7, 9)
    assert got["type"].name == name and got["cot"].name == "ACTIVATION"
    assert (got["commonAddress"], got["originatorAddress"], got["negative"]) == (47, 3, False)
    assert got["firstInformationObjectAddress"] == ioa and got["numberOfObjects"] == 1
    assert bytes.fromhex(got["elements"]) == ioa.to_bytes(3, "little") + element


def test_quality_bits() -> None:
    assert apci.quality(0) is Quality.GOOD
    assert apci.quality(apci.IV | apci.OV) is Quality.COMM
    assert apci.quality(apci.OV | apci.NT) is Quality.RANGE
    assert {apci.quality(b) for b in (apci.NT, apci.SB, apci.BL)} == {Quality.STALE}


def _object(type_id: int, value: float, q: int, when: bytes) -> bytes:
    if type_id in (apci.M_SP_NA_1, apci.M_SP_TB_1):
        e = bytes((int(bool(value)) | q,))
    elif type_id in (apci.M_DP_NA_1, apci.M_DP_TB_1):
        e = bytes(((2 if value else 1) | q,))
    elif type_id in (apci.M_ME_NA_1, apci.M_ME_TD_1):
        e = struct.pack("<hB", int(value * 32768), q)
    elif type_id in (apci.M_ME_NB_1, apci.M_ME_TE_1):
        e = struct.pack("<hB", int(value), q)
    elif type_id in (apci.M_IT_NA_1, apci.M_IT_TB_1):
        e = struct.pack("<iB", int(value), 0)
    else:
        e = struct.pack("<fB", value, q)
    return e + (when if apci.MONITOR[type_id][1] else b"")


@given(type_id=st.sampled_from(sorted(apci.MONITOR.keys() - {apci.M_BO_NA_1})),
       values=st.lists(st.integers(-32768, 32767), min_size=1, max_size=10),
       q=st.sampled_from([0, apci.IV, apci.NT, apci.SB, apci.BL]),
       sq=st.booleans(), base=st.integers(1, 2**24 - 20),
       when=st.datetimes(dt.datetime(2001, 1, 1), dt.datetime(2099, 12, 31)))
@settings(max_examples=200, deadline=None)
def test_monitored_round_trip(type_id: int, values: list[int], q: int, sq: bool, base: int,
                              when: dt.datetime) -> None:
    when = when.replace(microsecond=when.microsecond // 1000 * 1000, tzinfo=UTC)
    tag = apci.cp56(when)
    if type_id in (apci.M_ME_NA_1, apci.M_ME_TD_1):
        vals = [v / 32768 for v in values]
    elif type_id in (apci.M_SP_NA_1, apci.M_SP_TB_1, apci.M_DP_NA_1, apci.M_DP_TB_1):
        vals = [v % 2 for v in values]
    else:
        vals = [float(v) for v in values]
    if sq:
        body = base.to_bytes(3, "little") + b"".join(_object(type_id, v, q, tag) for v in vals)
    else:
        body = b"".join((base + i).to_bytes(3, "little") + _object(type_id, v, q, tag)
                        for i, v in enumerate(vals))
    raw = bytes((type_id, len(vals) | (0x80 if sq else 0), 3, 0, 1, 0)) + body
    points = apci.monitored(apci.parse_asdu(raw), UTC)
    assert [p.ioa for p in points] == [base + i for i in range(len(vals))]
    assert [float(p.value) for p in points] == [float(v) for v in vals]  # type: ignore[arg-type]
    if apci.MONITOR[type_id][1]:
        assert {p.time_ns for p in points} == {int(when.timestamp() * 1e6) * 1000}
    if type_id not in (apci.M_IT_NA_1, apci.M_IT_TB_1):
        assert {p.qualifier for p in points} == {q}


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_fuzz_split_and_decode(noise: bytes) -> None:
    buf = bytearray(noise + apci.u_frame(apci.TESTFR_ACT))
    apdus, bad = apci.split(buf)
    assert bad >= 0 and len(buf) < 2 + apci.MAX_APDU
    for apdu in apdus:
        if apdu.format == "I":
            try:
                apci.monitored(apci.parse_asdu(apdu.asdu), UTC)
            except BadFrame:
                pass
    try:
        apci.monitored(apci.parse_asdu(noise), UTC)
    except BadFrame:
        pass
    assert apci.cp56_ns(noise[:7], UTC) is None or len(noise) >= 7
