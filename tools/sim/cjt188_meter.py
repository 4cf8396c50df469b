"""CJ/T 188-2004 meters on a pseudo-terminal: water, heat or gas meters on one simulated line.

The line (PTY pair, faults, line timing, ``until()``) is ``tools.sim.pty_line``. Each
``Meter`` answers read-data (90 1F: its volume or heat, the time and the status word) and
valve commands (A0 17: the valve moves, unless ``stuck``); a request for another identifier
gets an abnormal answer. Answers start with two FE bytes.

In-process: ``async with MeterLine([Meter("00201510270588")]) as line: ... line.path``.
As a process: ``python -m cimedge.tools.sim.cjt188_meter --addresses 00201510270588``
prints one line ``pty /dev/pts/N`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from cimedge.drivers.cjt188 import frame
from cimedge.edge.errors import BadFrame
from cimedge.tools.sim.pty_line import Fault, PtyLine


@dataclass
class Meter:
    """One meter: address, type, values, valve, fault, and what it has seen."""

    address: str
    meter_type: int = 0x10
    volume_m3: float = 1234.56
    settlement_m3: float = 1200.0
    heat_kwh: float = 4567.8
    power_kw: float = 12.5
    flow_m3h: float = 0.8123
    supply_c: float = 65.2
    return_c: float = 45.1
    hours: int = 8760
    valve_open: bool = True
    valve_fault: bool = False
    stuck: bool = False  # the valve does not move when told
    battery_low: bool = False
    fault: Fault = "none"
    slow_s: float = 0.5
    requests: int = 0
    valve_commands: int = 0

    def matches(self, address: str) -> bool:
        """True when a request to ``address`` (AA pairs as wildcards) is for this meter."""
        pairs = zip(_pairs(address), _pairs(self.address), strict=True)
        return all(w in ("AA", mine) for w, mine in pairs)

    def status(self) -> bytes:
        """The status word ST."""
        valve = 0x03 if self.valve_fault else 0x00 if self.valve_open else 0x01
        return bytes((valve | (0x04 if self.battery_low else 0), 0))

    def respond(self, request: frame.Frame) -> bytes:
        """The answer frame to a decoded request."""
        di, serial = request.data[:2], request.data[2:3] or b"\x00"
        if request.control == frame.READ_DATA and di == frame.DI_READ:
            return self._answer(frame.READ_DATA, di + serial + self._data())
        if request.control == frame.WRITE_DATA and di == frame.DI_VALVE and len(request.data) == 4:  # noqa: PLR2004
            self.valve_commands += 1
            if not self.stuck:
                self.valve_open = request.data[3] == frame.VALVE_OPEN
            return self._answer(frame.WRITE_DATA, di + serial + self.status())
        return self._answer(request.control | frame.ABNORMAL, serial + b"\x00\x01")

    def _answer(self, control: int, data: bytes) -> bytes:
        return frame.build(self.meter_type, self.address, frame.ANSWER | control, data, 2)

    def _data(self) -> bytes:
        now = dt.datetime.now()
        clock = bytes.fromhex(now.strftime("%Y%m%d%H%M%S"))[::-1]
        if frame.is_heat(self.meter_type):
            return (_q(self.heat_kwh * 0.9, 4, 2, 0x05) + _q(self.heat_kwh, 4, 2, 0x05)
                    + _q(self.power_kw, 4, 2, 0x17) + _q(self.flow_m3h, 4, 4, 0x35)
                    + _q(self.volume_m3, 4, 2, 0x2C) + frame.to_bcd(round(self.supply_c * 100), 3)
                    + frame.to_bcd(round(self.return_c * 100), 3) + frame.to_bcd(self.hours, 3)
                    + clock + self.status())
        return (_q(self.volume_m3, 4, 2, 0x2C) + _q(self.settlement_m3, 4, 2, 0x2C) + clock
                + self.status())


def _q(value: float, size: int, decimals: int, unit: int) -> bytes:
    return frame.to_bcd(round(value * 10**decimals), size) + bytes((unit,))


def _pairs(address: str) -> list[str]:
    return [address[i : i + 2] for i in range(0, 14, 2)]


class MeterLine(PtyLine):
    """A PTY pair with ``meters`` answering on its master side; the gateway opens ``path``."""

    def __init__(self, meters: Iterable[Meter], *, baudrate: int = 2400, parity: str = "E",
                 line_timing: bool = False, seed: int | None = None) -> None:
        """Prepare; the PTY opens in ``start()``."""
        super().__init__(baudrate=baudrate, parity=parity, line_timing=line_timing, seed=seed)
        self.meters = {m.address: m for m in meters}

    def _take(self, rx: bytes) -> int:
        at = rx.find(bytes((frame.START,)))
        if at < 0:
            return len(rx)
        if len(rx) < at + 11:
            return at
        end = at + 13 + rx[at + 10]
        if len(rx) < end:
            return at
        try:
            request = frame.parse(rx[at:end])
        except BadFrame:
            return at + 1
        self._request_seen()
        if not request.control & frame.ANSWER:
            matched = [m for m in self.meters.values() if m.matches(request.address)
                       and m.meter_type == request.meter_type]
            for meter in matched[:1]:
                meter.requests += 1
                self._answer(end, meter.respond(request), meter.fault, meter.slow_s)
        return end

    def _corrupt(self, answer: bytes) -> bytes:
        return answer[:-2] + bytes(((answer[-2] + 1) & 0xFF, answer[-1]))


def main(argv: list[str] | None = None) -> None:
    """Serve meters on a PTY until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m cimedge.tools.sim.cjt188_meter",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--addresses", default="00201510270588", help="comma-separated")
    parser.add_argument("--type", default="10", help="meter type byte in hex (10 water, 20 heat)")
    parser.add_argument("--line-timing", action="store_true")
    args = parser.parse_args(argv)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        meters = [Meter(a, int(args.type, 16)) for a in args.addresses.split(",")]
        async with MeterLine(meters, line_timing=args.line_timing) as line:
            sys.stdout.write(f"pty {line.path}\n")
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
