"""Fixtures for the node firmware: real MicroPython (WebAssembly port) behind a pseudo-terminal.

``sim`` makes a powered-on SimNode (the real firmware) whose flash lives in ``tmp_path``;
``Rtu`` speaks raw Modbus RTU frames to it with pyserial, so tests can check exact bytes.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from cimedge.drivers.modbus.rtu import crc16
from cimedge.tools.sim.node import SimNode, fwimage, sim_board


def frame(unit: int, pdu: bytes) -> bytes:
    """``unit + pdu + CRC``, CRC low byte first."""
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


class Rtu:
    """A raw RTU master on a serial port: sends frames, reads whole answers."""

    def __init__(self, port: str, timeout: float = 1.0) -> None:
        self.port = serial.Serial(port, 9600, timeout=timeout)

    def close(self) -> None:
        """Close the port."""
        self.port.close()

    def send(self, raw: bytes) -> None:
        """Write ``raw`` as it is (bad CRCs included)."""
        self.port.reset_input_buffer()
        self.port.write(raw)

    def answer(self) -> bytes:
        """One whole answer frame; b"" if none comes within the timeout."""
        head = self.port.read(2)
        if len(head) < 2:
            return head
        fc = head[1]
        if fc & 0x80:
            rest = 3
        elif fc in (3, 4):
            count = self.port.read(1)
            return head + count + self.port.read(count[0] + 2) if count else head
        else:
            rest = 6
        return head + self.port.read(rest)

    def ask(self, unit: int, pdu: bytes) -> bytes:
        """Send ``pdu`` to ``unit``; the answer's PDU after checking its unit and CRC."""
        self.send(frame(unit, pdu))
        raw = self.answer()
        assert len(raw) >= 4, f"no answer to {pdu.hex()}"
        assert crc16(raw[:-2]).to_bytes(2, "little") == raw[-2:], f"bad CRC in {raw.hex()}"
        assert raw[0] == unit, raw.hex()
        return raw[1:-2]

    def silent(self, raw: bytes, wait: float = 0.2) -> bool:
        """True if nothing answers ``raw`` within ``wait`` seconds."""
        self.send(raw)
        self.port.timeout, old = wait, self.port.timeout
        try:
            return self.port.read(1) == b""
        finally:
            self.port.timeout = old

    def read(self, fc: int, start: int, count: int, unit: int = 1) -> list[int]:
        """Registers via function 3 or 4."""
        pdu = self.ask(unit, struct.pack(">BHH", fc, start, count))
        assert pdu[0] == fc, f"exception {pdu.hex()}"
        return list(struct.unpack(f">{count}H", pdu[2:]))

    def floats(self, start: int, n: int, fc: int = 4, unit: int = 1) -> list[float]:
        """``n`` float32 values (high word first) from ``start``."""
        words = self.read(fc, start, 2 * n, unit)
        return list(struct.unpack(f">{n}f", struct.pack(f">{2 * n}H", *words)))

    def write(self, start: int, words: list[int], unit: int = 1) -> bytes:
        """Function 16; the answer's PDU (an exception is returned, not raised)."""
        body = struct.pack(">BHHB", 16, start, len(words), 2 * len(words))
        return self.ask(unit, body + struct.pack(f">{len(words)}H", *words))


def float_words(v: float) -> list[int]:
    """``v`` as float32, high word first."""
    return list(struct.unpack(">HH", struct.pack(">f", v)))


def wait_for(check: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:  # noqa: ANN401
    """Poll ``check`` until it returns something truthy; that value."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > end:
            assert got, "timed out"
            return got
        time.sleep(step)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Callable[..., SimNode]]:
    """Start a SimNode: ``sim(channels=2, board=None, pub=None, mpy=False)``; closed afterwards."""
    nodes: list[SimNode] = []

    def start(**kw: Any) -> SimNode:  # noqa: ANN401
        node = SimNode(tmp_path / f"flash{len(nodes)}", **kw)
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.close()


@pytest.fixture
def rtu() -> Iterator[Callable[[SimNode], Rtu]]:
    """Open an ``Rtu`` master on a node's port; closed afterwards."""
    opened: list[Rtu] = []

    def open_(node: SimNode) -> Rtu:
        r = Rtu(node.port)
        opened.append(r)
        return r

    yield open_
    for r in opened:
        r.close()


@pytest.fixture(scope="session")
def fw() -> Any:  # noqa: ANN401
    """``firmware/host/fwimage.py``."""
    return fwimage()


@pytest.fixture(scope="session")
def board() -> dict[str, Any]:
    """The simulator's two-channel board."""
    return sim_board(2)
