"""The firmware's Modbus RTU slave under real MicroPython, byte for byte, over a pseudo-terminal."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Rtu, float_words, frame, wait_for

from cimedge.tools.sim.node import SimNode

H = bytes.fromhex


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimNode]:
    """One node for the tests that leave its configuration alone."""
    n = SimNode(tmp_path_factory.mktemp("rtu") / "flash", channels=2)
    n.start()
    yield n
    n.close()


@pytest.fixture
def bus(node: SimNode) -> Iterator[Rtu]:
    r = Rtu(node.port)
    yield r
    r.close()


def test_read_input_registers_exact_bytes(bus: Rtu) -> None:
    bus.send(H("01 04 00 00 00 02 71 cb"))
    assert bus.answer() == H("01 04 04 00 01 00 00 aa 44")  # version 1.0.0


def test_input_map_of_design_section_6(node: SimNode, bus: Rtu) -> None:
    major, minor_patch, up_hi, up_lo, status, n = bus.read(4, 0, 6)
    assert (major, minor_patch, status, n) == (1, 0, 0, 2)
    time.sleep(1.1)
    _, _, hi2, lo2, _, _ = bus.read(4, 0, 6)
    assert (hi2 << 16 | lo2) >= (up_hi << 16 | up_lo) + 1  # uptime in seconds, u32 hi first


def test_channel_values_are_float32_high_word_first(node: SimNode, bus: Rtu) -> None:
    node.set_value(0, 1234.5)
    node.set_value(1, -2.25)
    assert wait_for(lambda: bus.floats(100, 2) == [1234.5, -2.25], timeout=3)
    words = bus.read(4, 100, 2)
    assert words == float_words(1234.5)


def test_holding_defaults(bus: Rtu) -> None:
    words = bus.read(3, 200, 18)
    assert words[:10] == [1, 3, 1000, 0, 0, 0, 0, 0, 0, 0]
    assert words[10:] == float_words(1.0) + float_words(0.0) + float_words(1.0) + float_words(0.0)


def test_exception_answer_exact_bytes(bus: Rtu) -> None:
    bus.send(H("01 03 00 00 00 0a c5 cd"))  # holding registers at input addresses
    assert bus.answer() == H("01 83 02 c0 f1")


@pytest.mark.parametrize(("pdu", "answer"), [
    ("04 00 06 00 01", "84 02"),              # between the info and the channel blocks
    ("04 00 04 00 61", "84 02"),              # 4..100 spans the gap
    ("04 00 64 00 05", "84 02"),              # 100..104: N = 2 ends at 103
    ("03 00 c8 00 13", "83 02"),              # 200..218: the block ends at 217
    ("04 00 00 00 00", "84 03"),              # quantity 0
    ("04 00 00 00 7e", "84 03"),              # quantity 126
    ("04 00 00 00", "84 03"),                 # PDU too short for function 4
    ("2b 00 00 00 01", "ab 01"),              # unsupported function
    ("01 00 00 00 01", "81 01"),              # coils: not on this node
    ("06 00 00 00 01", "86 02"),              # write outside the holding block
    ("06 00 cb 00 01", "86 03"),              # a reserved register must stay 0
    ("10 00 c8 00 02 03 00 01 00 03", "90 03"),  # byte count does not match quantity
    ("10 00 e0 00 01 02 00 01", "90 02"),     # beyond the holding block
    ("08 00 03 00 00", "88 01"),              # unsupported diagnostics sub-function
    ("08 00 0b 00 01", "88 03"),              # counters take data 0
])
def test_exception_answers(bus: Rtu, pdu: str, answer: str) -> None:
    assert bus.ask(1, H(pdu)) == H(answer)


def test_bad_crc_and_other_units_get_no_answer_but_are_counted(bus: Rtu) -> None:
    assert bus.ask(1, H("08 00 0a 00 00")) == H("08 00 0a 00 00")  # clear counters
    bad = bytearray(frame(1, H("04 00 00 00 02")))
    bad[-1] ^= 0xFF
    assert bus.silent(bytes(bad))
    assert bus.silent(frame(2, H("04 00 00 00 02")))
    assert bus.silent(frame(1, H("04"))[:3])  # shorter than any frame
    assert bus.ask(1, H("08 00 0c 00 00")) == H("08 00 0c 00 02")  # CRC errors (and the runt)
    assert bus.ask(1, H("08 00 0b 00 00")) == H("08 00 0b 00 03")  # bus messages, this included
    assert bus.ask(1, H("08 00 0e 00 00")) == H("08 00 0e 00 03")  # for this unit, this included


def test_frames_end_on_silence_not_on_length(bus: Rtu) -> None:
    one = frame(1, H("04 00 00 00 02"))
    assert bus.silent(one + one)  # back to back, no 3.5-character gap: one bad frame
    bus.send(one[:4])
    time.sleep(0.05)  # far beyond 3.5 characters at 9600 baud: the first half is a frame
    assert bus.silent(one[4:])
    assert bus.ask(1, H("04 00 00 00 02")) == H("04 04 00 01 00 00")  # and it still serves


def test_diagnostics(bus: Rtu) -> None:
    bus.send(H("01 08 00 00 a5 37 da 8d"))
    assert bus.answer() == H("01 08 00 00 a5 37 da 8d")  # return query data: an exact echo
    bus.send(frame(1, H("08 00 00 01 02 03 04")))  # any length of data comes back
    assert bus.port.read(11) == frame(1, H("08 00 00 01 02 03 04"))
    assert bus.ask(1, H("08 00 02 00 00")) == H("08 00 02 00 00")  # diagnostic register
    assert bus.ask(1, H("08 00 0a 00 00")) == H("08 00 0a 00 00")
    assert bus.silent(frame(1, H("08 00 04 00 00")))  # listen only: no answer from now on
    assert bus.silent(frame(1, H("04 00 00 00 02")))
    assert bus.silent(frame(1, H("08 00 01 00 00")))  # restart leaves listen-only, silently
    assert bus.ask(1, H("04 00 05 00 01")) == H("04 02 00 02")
    # The restart cleared the counters; it went unanswered itself, so "no answer" counts 1.
    assert bus.ask(1, H("08 00 0f 00 00")) == H("08 00 0f 00 01")
    assert bus.ask(1, H("08 00 01 ff 00")) == H("08 00 01 ff 00")  # restart, answered
    assert bus.ask(1, H("08 00 12 00 00")) == H("08 00 12 00 00")  # no overruns


def test_overlong_frame_is_dropped_and_counted(bus: Rtu) -> None:
    assert bus.silent(b"\x01" * 300)
    assert bus.ask(1, H("08 00 12 00 00")) == H("08 00 12 00 01")


# ---- writes: each test gets its own node ----------------------------------------------------


def test_write_single_register_echoes_and_applies(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    bus.send(H("01 06 00 ca 01 f4 a9 e3"))  # sample period 500 ms
    assert bus.answer() == H("01 06 00 ca 01 f4 a9 e3")
    assert bus.read(3, 202, 1) == [500]


def test_scale_and_offset_reach_the_values(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    node.set_value(0, 100)
    node.set_value(1, 100)
    assert bus.write(202, [100]) == H("10 00 ca 00 01")
    words = float_words(0.5) + float_words(10.0)
    assert bus.write(210, words) == H("10 00 d2 00 04")
    assert bus.read(3, 210, 4) == words
    assert wait_for(lambda: bus.floats(100, 2) == [60.0, 100.0], timeout=3)


def test_sensor_fault_reads_nan_and_sets_status_bit_0(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.write(202, [50]) == H("10 00 ca 00 01")
    node.set_value(1, None)
    wait_for(lambda: bus.read(4, 4, 1) == [1], timeout=3)
    assert math.isnan(bus.floats(102, 1)[0])
    node.set_value(1, 7)
    wait_for(lambda: bus.read(4, 4, 1) == [0], timeout=3)


@pytest.mark.parametrize(("start", "words", "why"), [
    (200, [0], "address not 1-247"),
    (200, [248], "address not 1-247"),
    (201, [8], "unknown baud code"),
    (202, [5], "sample period not 10-60000 ms"),
    (202, [60001], "sample period not 10-60000 ms"),
    (210, float_words(0.0), "scale not a finite, non-zero number"),
    (210, float_words(math.nan), "scale not a finite, non-zero number"),
    (212, float_words(math.inf), "offset not a finite number"),
    (202, [200, 1], "reserved register not 0"),
])
def test_bad_configuration_is_refused_and_the_old_one_kept(sim, rtu, start: int,  # noqa: ANN001
                                                         words: list[int], why: str) -> None:
    node = sim()
    bus = rtu(node)
    assert bus.write(202, [250]) == H("10 00 ca 00 01")
    before = bus.read(3, 200, 18)
    stored = (node.flash / "config.bin").read_bytes()
    assert bus.write(start, words) == H("90 03")
    assert bus.read(3, 200, 18) == before
    assert (node.flash / "config.bin").read_bytes() == stored
    assert node.exec("import hw_sim\n_r = hw_sim.node.regs.refused") == why


def test_configuration_survives_a_power_cycle(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.write(210, float_words(2.5) + float_words(-1.0)) == H("10 00 d2 00 04")
    node.power_cycle()
    assert bus.read(3, 210, 4) == float_words(2.5) + float_words(-1.0)
    assert bus.read(4, 4, 1) == [0]  # config valid, no watchdog reset


def test_address_change_answers_from_the_old_address_then_moves(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.ask(1, H("06 00 c8 00 07")) == H("06 00 c8 00 07")
    assert bus.silent(frame(1, H("04 00 00 00 01")))
    assert bus.read(4, 5, 1, unit=7) == [2]
    node.power_cycle()
    assert bus.read(4, 5, 1, unit=7) == [2]


def test_broadcast_write_is_applied_without_an_answer(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.silent(frame(0, H("06 00 ca 00 64")))
    assert bus.read(3, 202, 1) == [100]
    assert bus.silent(frame(0, H("06 00 c8 00 09")))  # an address by broadcast: refused
    assert bus.read(3, 200, 1) == [1]
    assert bus.silent(frame(0, H("04 00 00 00 01")))  # reads are never broadcast


def test_baud_change_applies_after_the_answer(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.ask(1, H("06 00 c9 00 07")) == H("06 00 c9 00 07")
    t35 = "import hw_sim\n_r = hw_sim.node.slave._t35"
    wait_for(lambda: node.exec(t35) == 1750)  # 115200 baud: the spec's fixed 1.75 ms
    node.power_cycle()
    assert node.exec("import hw_sim\n_r = hw_sim.node.slave._t35") == 1750


def test_config_file_layout(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.write(202, [300]) == H("10 00 ca 00 01")
    raw = (node.flash / "config.bin").read_bytes()
    assert raw[:6] == b"CNF1" + struct.pack(">H", 18)
    assert struct.unpack(">18H", raw[6:42])[:3] == (1, 3, 300)
    assert not Path(node.flash / "config.new").exists()
