"""Modbus RTU slaves on a pseudo-terminal: several units on one simulated RS-485 line, with faults.

The line itself (PTY pair, faults, line timing, ``until()``) is ``tools.sim.pty_line``.
Frames are decoded and built with pymodbus's RTU framer and PDU classes, an implementation
independent of the driver's. Each ``Unit`` has four sparse tables (an address not given
answers exception 2, illegal data address) and one fault at a time (``pty_line.FAULTS``),
changeable while running; ``unit.fail_after(n, fault)`` switches to ``fault`` after n more
answers (a device unplugged in the middle of a poll).

In-process: ``async with RtuBus({1: Unit(), 2: Unit()}) as bus: ... bus.path``. As a process:
``python -m cimedge.tools.sim.rtu_bus --units 1,2,3 [--baudrate 9600 --line-timing]`` prints one line
``pty /dev/pts/N`` and serves a demo register map (``demo_unit``) until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsResponse,
    ReadDiscreteInputsResponse,
    WriteMultipleCoilsResponse,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)

from cimedge.tools.sim.pty_line import Fault, PtyLine

__all__ = ["Fault", "RtuBus", "Unit", "demo_unit"]

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


@dataclass
class Unit:
    """One slave: its tables, its fault, and what it has seen."""

    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    coil: dict[int, bool] = field(default_factory=dict)
    discrete: dict[int, bool] = field(default_factory=dict)
    fault: Fault = "none"
    slow_s: float = 0.5
    counter_at: int | None = None  # input register pair: +1 on every read that covers it
    requests: int = 0  # frames addressed to this unit
    answers: int = 0  # answers sent (faulty ones included)
    _fail_after: tuple[int, Fault] | None = None

    def fail_after(self, answers: int, fault: Fault) -> None:
        """Answer ``answers`` more requests normally, then switch to ``fault``."""
        self._fail_after = (answers, fault)

    def respond(self, pdu: ModbusPDU) -> ModbusPDU:
        """The answer PDU to a decoded request PDU."""
        fc = pdu.function_code
        try:
            if fc in (1, 2):
                table = self.coil if fc == 1 else self.discrete
                bits = [table[a] for a in range(pdu.address, pdu.address + pdu.count)]
                cls = ReadCoilsResponse if fc == 1 else ReadDiscreteInputsResponse
                return cls(bits=bits, dev_id=pdu.dev_id)
            if fc in (3, 4):
                regs = self._read_registers(fc, pdu.address, pdu.count)
                answer = ReadHoldingRegistersResponse if fc == 3 else ReadInputRegistersResponse
                return answer(registers=regs, dev_id=pdu.dev_id)
            if fc in (5, 15):
                return self._write_coils(pdu)
            if fc in (6, 16):
                return self._write_registers(pdu)
        except KeyError:
            return ExceptionResponse(fc, ILLEGAL_ADDRESS, device_id=pdu.dev_id)
        return ExceptionResponse(fc, ILLEGAL_FUNCTION, device_id=pdu.dev_id)

    def _read_registers(self, fc: int, address: int, count: int) -> list[int]:
        table = self.holding if fc == 3 else self.input
        at = self.counter_at
        if fc == 4 and at is not None and address <= at + 1 and address + count > at:
            value = (self.input[at] << 16 | self.input[at + 1]) + 1 & 0xFFFFFFFF
            self.input[at], self.input[at + 1] = divmod(value, 0x10000)
        return [table[a] for a in range(address, address + count)]

    def _write_coils(self, pdu: ModbusPDU) -> ModbusPDU:
        bits = list(pdu.bits)[: max(1, pdu.count)]
        for i in range(len(bits)):
            if pdu.address + i not in self.coil:
                raise KeyError(pdu.address + i)
        for i, bit in enumerate(bits):
            self.coil[pdu.address + i] = bool(bit)
        if pdu.function_code == 5:
            return WriteSingleCoilResponse(address=pdu.address, bits=bits, dev_id=pdu.dev_id)
        return WriteMultipleCoilsResponse(address=pdu.address, count=len(bits), dev_id=pdu.dev_id)

    def _write_registers(self, pdu: ModbusPDU) -> ModbusPDU:
        regs = list(pdu.registers)
        for i in range(len(regs)):
            if pdu.address + i not in self.holding:
                raise KeyError(pdu.address + i)
        for i, value in enumerate(regs):
            self.holding[pdu.address + i] = value
        if pdu.function_code == 6:
            return WriteSingleRegisterResponse(
                address=pdu.address, registers=regs, dev_id=pdu.dev_id
            )
        return WriteMultipleRegistersResponse(
            address=pdu.address, count=len(regs), dev_id=pdu.dev_id
        )

    def next_fault(self) -> Fault:
        """The fault for this answer, counting down ``fail_after``."""
        if self._fail_after is not None:
            left, fault = self._fail_after
            if left <= 0:
                self.fault, self._fail_after = fault, None
            else:
                self._fail_after = (left - 1, fault)
        return self.fault


def demo_unit(unit: int, registers: int = 100, bits: int = 16) -> Unit:
    """A unit with ``registers`` input and holding registers and ``bits`` coils and inputs.

    Input register a holds ``(unit * 1000 + a) % 65536``; holding registers start at 0; a
    32-bit counter sits in the two input registers after the others.
    """
    inputs = {a: (unit * 1000 + a) % 65536 for a in range(registers)}
    inputs |= {registers: 0, registers + 1: 0}
    return Unit(
        holding=dict.fromkeys(range(registers), 0), input=inputs,
        coil=dict.fromkeys(range(bits), False), discrete={a: a % 2 == 1 for a in range(bits)},
        counter_at=registers,
    )  # fmt: skip


class RtuBus(PtyLine):
    """A PTY pair with ``units`` answering on its master side; the gateway opens ``path``."""

    def __init__(
        self,
        units: Mapping[int, Unit],
        *,
        baudrate: int = 9600,
        parity: str = "N",
        line_timing: bool = False,
        seed: int | None = None,
    ) -> None:
        """Prepare; the PTY opens in ``start()``."""
        super().__init__(baudrate=baudrate, parity=parity, line_timing=line_timing, seed=seed)
        self.units = dict(units)
        self._framer = FramerRTU(DecodePDU(is_server=True))

    def _take(self, rx: bytes) -> int:
        used, pdu = self._framer.handleFrame(rx, 0, 0)
        if pdu is not None:
            self._request(pdu, used)
        return used

    def _corrupt(self, answer: bytes) -> bytes:
        return answer[:-1] + bytes((answer[-1] ^ 0xFF,))

    def _request(self, pdu: ModbusPDU, size: int) -> None:
        self._request_seen()
        unit = self.units.get(pdu.dev_id)
        if unit is None or pdu.dev_id == 0:
            return
        unit.requests += 1
        fault = unit.next_fault()
        if fault != "silent":
            unit.answers += 1
        self._answer(size, self._framer.buildFrame(unit.respond(pdu)), fault, unit.slow_s)


def main(argv: list[str] | None = None) -> None:
    """Serve demo units on a PTY until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m cimedge.tools.sim.rtu_bus", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--units", default="1", help="comma-separated unit ids (default 1)")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--parity", choices=("N", "E", "O"), default="N")
    parser.add_argument("--line-timing", action="store_true", help="answer at line speed")
    args = parser.parse_args(argv)
    ids = [int(u) for u in args.units.split(",")]

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        units = {u: demo_unit(u) for u in ids}
        async with RtuBus(
            units, baudrate=args.baudrate, parity=args.parity, line_timing=args.line_timing
        ) as bus:
            sys.stdout.write(f"pty {bus.path}\n")
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
