"""N Modbus TCP devices of M counting points: each point answers how many times it has been read.

Built for the side-by-side benchmark (bench/compare): every value a gateway publishes is then a
unique number, so loss, duplicates and order can be counted exactly against what was served.

Device ``d`` listens on its own loopback port (as separate field devices would). Point ``i`` is
a uint32 in input (and holding) registers ``2i`` (high word) and ``2i+1`` (low word). A read
(function 3 or 4) that covers both registers of point ``i`` adds 1 to its counter and returns
the new count, so point ``i`` serves 1, 2, 3, ... A read that covers only one of its two
registers returns that half of the current count without counting. Addresses beyond ``2M`` get
exception 2, a count outside 1-125 exception 3, other functions exception 1.

This is a hand-written Modbus TCP server (MBAP framing, functions 3 and 4 only), not pymodbus:
a benchmark's simulator must cost far less per request than the gateways it measures.

    python -m cimedge.tools.sim.counting_server --devices 10 --points 20

prints ``listening 127.0.0.1:P0,P1,...`` and then reads commands on stdin, one per line,
answering each with one JSON line on stdout:

    snap     {"t": wall time, "counts": [[count of point 0, ...] per device], "requests": n}
    pause    stop answering: requests are read and dropped, nothing is counted ("paused": true)
    resume   answer again ("paused": false)

It stops on end of input, SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import time

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit
_REQ = struct.Struct(">BHH")  # function, address, count
_MAX_COUNT = 125


class Bank:
    """The counters of all devices, and whether the server answers at all."""

    def __init__(self, devices: int, points: int) -> None:
        self.counts = [[0] * points for _ in range(devices)]
        self.points = points
        self.requests = 0
        self.paused = False

    def read(self, device: int, address: int, count: int) -> bytes | int:
        """Register bytes for a read, counting covered points, or an exception code."""
        if not 1 <= count <= _MAX_COUNT:
            return 3
        if address + count > 2 * self.points:
            return 2
        counts = self.counts[device]
        regs = bytearray(2 * count)
        for reg in range(address, address + count):
            point, low = divmod(reg, 2)
            if not low and reg + 1 < address + count:
                counts[point] += 1  # both halves covered: one more read of this point
            value = counts[point] & 0xFFFFFFFF
            struct.pack_into(">H", regs, 2 * (reg - address), value & 0xFFFF if low else value >> 16)
        return bytes(regs)

    def snap(self) -> dict[str, object]:
        return {"t": time.time(), "counts": self.counts, "requests": self.requests,
                "paused": self.paused}


class Device(asyncio.Protocol):
    """One TCP connection to device ``index``: frames in, answers out."""

    def __init__(self, bank: Bank, index: int) -> None:
        self.bank, self.index = bank, index
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - TCP gives one
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= _MBAP.size:
            tid, pid, length, unit = _MBAP.unpack_from(self.buf)
            if length < 2:  # noqa: PLR2004 - not even unit and function: not Modbus, drop it
                self.buf.clear()
                return
            end = 6 + length
            if len(self.buf) < end:
                return
            pdu = bytes(self.buf[_MBAP.size:end])
            del self.buf[:end]
            self.bank.requests += 1
            if not self.bank.paused:
                self._answer(tid, pid, unit, pdu)

    def _answer(self, tid: int, pid: int, unit: int, pdu: bytes) -> None:
        fc = pdu[0]
        if fc in (3, 4) and len(pdu) == _REQ.size:
            _, address, count = _REQ.unpack(pdu)
            got = self.bank.read(self.index, address, count)
        else:
            got = 1
        body = (bytes([fc, len(got)]) + got) if isinstance(got, bytes) else bytes([fc | 0x80, got])
        assert self.transport is not None  # noqa: S101 - set in connection_made
        self.transport.write(_MBAP.pack(tid, pid, len(body) + 1, unit) + body)


async def serve(devices: int, points: int, host: str = "127.0.0.1") -> tuple[Bank, list[asyncio.Server]]:
    """Listen for ``devices`` devices on free ports; returns the bank and the servers."""
    bank = Bank(devices, points)
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda i=i: Device(bank, i), host, 0)
               for i in range(devices)]
    return bank, servers


async def _commands(bank: Bank) -> None:
    """Answer snap / pause / resume lines on stdin until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line in ("pause", "resume"):
            bank.paused = line == "pause"
        sys.stdout.write(json.dumps(bank.snap()) + "\n")
        sys.stdout.flush()


async def _main(devices: int, points: int, host: str) -> None:
    bank, servers = await serve(devices, points, host)
    ports = ",".join(str(s.sockets[0].getsockname()[1]) for s in servers)
    sys.stdout.write(f"listening {host}:{ports}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    commands = asyncio.create_task(_commands(bank))
    commands.add_done_callback(lambda _: stop.set())
    await stop.wait()
    commands.cancel()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> None:
    """Run until stdin closes or a signal; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m cimedge.tools.sim.counting_server",
                                description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--points", type=int, default=20, help="uint32 points per device")
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    asyncio.run(_main(args.devices, args.points, args.host))


if __name__ == "__main__":
    main()
