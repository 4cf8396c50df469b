"""DL/T 645-2007 energy meters on a pseudo-terminal: one or more meters on a simulated RS-485 line.

The line (PTY pair, faults, line timing, ``until()``) is ``tools.sim.pty_line``. Each
``Meter`` answers read-data requests (0x11) for the identifiers in its ``values`` (others get
an abnormal answer, error status bit 1 "no such data") and read-address requests (0x13).
Answers start with two 0xFE bytes, as many meters send. A request to a wildcard or broadcast
address is answered by every meter it matches; when that is more than one, their answers
collide on the line and the master receives garble, as on a real bus.

In-process: ``async with MeterLine([demo_meter("000012345678")]) as line: ... line.path``.
As a process: ``python -m cimedge.tools.sim.dlt645_meter --addresses 000012345678
[--baudrate 2400 --line-timing]`` prints one line ``pty /dev/pts/N`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from cimedge.drivers.dlt645 import frame
from cimedge.drivers.dlt645.frame import Format
from cimedge.drivers.dlt645.identifiers import CATALOGUE
from cimedge.edge.errors import BadFrame
from cimedge.tools.sim.pty_line import Fault, PtyLine

NO_SUCH_DATA = 0x02


@dataclass
class Meter:
    """One meter: its address, its values by data identifier, its fault, what it has seen."""

    address: str
    values: dict[int, float] = field(default_factory=dict)
    formats: dict[int, Format] = field(default_factory=dict)  # beyond the catalogue
    fault: Fault = "none"
    slow_s: float = 0.5
    requests: int = 0
    answers: int = 0

    def matches(self, address: str) -> bool:
        """True when a request to ``address`` (AA pairs as wildcards) is for this meter."""
        pairs = zip(_pairs(address), _pairs(self.address), strict=True)
        return all(w in ("AA", mine) for w, mine in pairs)

    def respond(self, request: frame.Frame) -> bytes:
        """The answer frame (with a short preamble) to a decoded request."""
        if request.control == frame.READ_ADDRESS:
            data = frame.address_bytes(self.address)
            return frame.build(self.address, frame.ANSWER | frame.READ_ADDRESS, data, 2)
        if request.control != frame.READ_DATA or len(request.data) != 4:  # noqa: PLR2004
            return self._abnormal(request.control, 0x01)
        di = int.from_bytes(request.data, "little")
        if di not in self.values:
            return self._abnormal(request.control, NO_SUCH_DATA)
        fmt = self.formats.get(di) or _catalogue_format(di)
        payload = request.data + frame.bcd_encode(self.values[di], fmt)
        return frame.build(self.address, frame.ANSWER | frame.READ_DATA, payload, 2)

    def _abnormal(self, control: int, status: int) -> bytes:
        answer = frame.ANSWER | frame.ABNORMAL | (control & 0x1F)
        return frame.build(self.address, answer, bytes((status,)), 2)


def _pairs(address: str) -> list[str]:
    return [address[i : i + 2] for i in range(0, 12, 2)]


def _catalogue_format(di: int) -> Format:
    for q in CATALOGUE.values():
        if q.di == di:
            return q.format
    msg = f"no format for {di:08X}: give it in Meter.formats"
    raise KeyError(msg)


def demo_meter(address: str) -> Meter:
    """A single-phase lamp circuit meter with plausible readings (one of them negative)."""
    values = {
        "energy_total": 12345.67, "energy_import": 12345.67, "energy_export": 0.0,
        "voltage_a": 229.8, "current_a": 0.412, "power": 0.0947, "power_a": 0.0947,
        "power_factor": 0.998, "frequency": 50.01, "meter_temperature": -5.2,
        "reactive_power": -0.0061,
    }  # fmt: skip
    return Meter(address, {CATALOGUE[name].di: v for name, v in values.items()})


class MeterLine(PtyLine):
    """A PTY pair with ``meters`` answering on its master side; the gateway opens ``path``."""

    def __init__(
        self, meters: Iterable[Meter], *, baudrate: int = 2400, parity: str = "E",
        line_timing: bool = False, seed: int | None = None,
    ) -> None:  # fmt: skip
        """Prepare; the PTY opens in ``start()``."""
        super().__init__(baudrate=baudrate, parity=parity, line_timing=line_timing, seed=seed)
        self.meters = {m.address: m for m in meters}

    def _take(self, rx: bytes) -> int:
        """Handle one request frame at the start of ``rx`` (preamble and noise skipped)."""
        at = rx.find(bytes((frame.START,)))
        if at < 0:
            return len(rx)
        if len(rx) < at + 10:
            return at  # keep the candidate, drop what came before
        if rx[at + 7] != frame.START:
            return at + 1
        end = at + 12 + rx[at + 9]
        if len(rx) < end:
            return at
        try:
            request = frame.parse(rx[at:end])
        except BadFrame:
            return at + 1
        self._request(request, end)
        return end

    def _corrupt(self, answer: bytes) -> bytes:
        return answer[:-2] + bytes(((answer[-2] + 1) & 0xFF, answer[-1]))

    def _request(self, request: frame.Frame, size: int) -> None:
        self._request_seen()
        if request.control & frame.ANSWER:  # another master's answer echoing: not for us
            return
        matched = [m for m in self.meters.values() if m.matches(request.address)]
        for meter in matched:
            meter.requests += 1
        if len(matched) > 1:  # several meters talk at once: the master hears garble
            longest = max(len(m.respond(request)) for m in matched)
            self._answer(size, bytes(longest), "garbage", 0.0)
        elif matched:
            meter = matched[0]
            if meter.fault != "silent":
                meter.answers += 1
            self._answer(size, meter.respond(request), meter.fault, meter.slow_s)


def main(argv: list[str] | None = None) -> None:
    """Serve demo meters on a PTY until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m cimedge.tools.sim.dlt645_meter", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--addresses", default="000012345678", help="comma-separated addresses")
    parser.add_argument("--baudrate", type=int, default=2400)
    parser.add_argument("--parity", choices=("N", "E", "O"), default="E")
    parser.add_argument("--line-timing", action="store_true", help="answer at line speed")
    args = parser.parse_args(argv)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        meters = [demo_meter(a) for a in args.addresses.split(",")]
        async with MeterLine(
            meters, baudrate=args.baudrate, parity=args.parity, line_timing=args.line_timing
        ) as line:
            sys.stdout.write(f"pty {line.path}\n")
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
