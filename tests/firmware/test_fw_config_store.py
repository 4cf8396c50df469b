"""Configuration on flash: a power cut anywhere in a save leaves a node that boots and serves."""

from __future__ import annotations

import pytest
from conftest import float_words, frame, wait_for

H = bytes.fromhex
CONFIG_BYTES = 6 + 2 * 18 + 2  # magic, count, 18 words (2 channels), CRC


def scale_frame(scale: float) -> bytes:
    """Function 16: channel 0's scale."""
    body = H("10 00 d2 00 02 04") + bytes.fromhex("".join(f"{w:04x}" for w in float_words(scale)))
    return frame(1, body)


@pytest.mark.parametrize("after", [0, 1, 21, CONFIG_BYTES - 1])
def test_power_cut_while_writing_keeps_the_old_configuration(sim, rtu, after: int) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.write(210, float_words(2.0)) == H("10 00 d2 00 02")
    node.arm_power_cut("config.new", after=after)
    assert bus.silent(scale_frame(3.0), wait=0.5)  # the node died mid-save
    node.wait_boot(2)
    node.wait_ready()
    assert node.boots == ["power", "power"]
    assert bus.read(3, 210, 2) == float_words(2.0)
    assert bus.read(4, 4, 1) == [0]  # the stored configuration is valid
    assert not (node.flash / "config.new").exists()


def test_power_cut_at_the_rename_keeps_the_old_configuration(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.write(210, float_words(2.0)) == H("10 00 d2 00 02")
    node.arm_power_cut("config.new", op="rename")
    assert bus.silent(scale_frame(3.0), wait=0.5)
    node.wait_boot(2)
    node.wait_ready()
    assert bus.read(3, 210, 2) == float_words(2.0)  # never acknowledged, so never applied


def test_a_save_cut_between_remove_and_rename_is_finished_at_boot(sim, rtu) -> None:  # noqa: ANN001
    # FAT cannot rename over a file: the save removes config.bin first. Cut right there.
    node = sim()
    bus = rtu(node)
    assert bus.write(210, float_words(4.0)) == H("10 00 d2 00 02")
    node.power_off()
    (node.flash / "config.bin").rename(node.flash / "config.new")
    node.power_on()
    assert bus.read(3, 210, 2) == float_words(4.0)
    assert bus.read(4, 4, 1) == [0]
    assert (node.flash / "config.bin").exists()
    assert not (node.flash / "config.new").exists()


def test_a_corrupt_configuration_boots_on_defaults_with_status_bit_2(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.write(202, [250]) == H("10 00 ca 00 01")
    node.power_off()
    raw = bytearray((node.flash / "config.bin").read_bytes())
    raw[9] ^= 0x01  # one bit of the sample period
    (node.flash / "config.bin").write_bytes(raw)
    node.power_on()
    assert bus.read(3, 200, 3) == [1, 3, 1000]  # factory defaults
    assert bus.read(4, 4, 1) == [4]  # status bit 2: config invalid
    assert bus.write(202, [250]) == H("10 00 ca 00 01")  # a valid write clears it
    assert bus.read(4, 4, 1) == [0]


def test_a_configuration_for_other_hardware_is_not_used(sim, rtu, board) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.write(202, [250]) == H("10 00 ca 00 01")
    node.power_off()
    import json

    three = dict(board, channels=[{"kind": "sim"}] * 3)
    (node.flash / "board.json").write_text(json.dumps(three))
    node.power_on()
    assert bus.read(4, 4, 2) == [4, 3]  # defaults, flagged; three channels now
    wait_for(lambda: len(bus.floats(100, 3)) == 3)
