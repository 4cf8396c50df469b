"""An SL 651-2014 rain and water-level telemetry station that reports to a central station.

``Station.connect(host, port)`` keeps a connection to the centre (the gateway) and sends a
timed report (0x32) every ``interval_s`` (``report()`` sends one now); it answers the
centre's real-time query (0x37), history query (0x38: one value per step from its own
record), clock setting (0x4A) and clock query (0x51), and counts the confirmations it gets.

Faults (``station.fault``): ``bad_crc``, ``split`` (messages written in small pieces),
``silent`` (sends and answers nothing), ``wrong_password``, ``clock_off`` (its clock a day
ahead until the centre sets it), ``garbage`` (noise before every message). ``packet_limit``
sends reports as multi-packet messages (SYN ... ETB ... ETX).

As a process: ``python -m cimedge.tools.sim.sl651_station --connect 127.0.0.1:5651
--station 0012345678 --password-file FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import signal
import zoneinfo
from dataclasses import dataclass, field
from typing import Literal

from cimedge.drivers.sl651 import frame

Fault = Literal["none", "bad_crc", "split", "silent", "wrong_password", "clock_off", "garbage"]
TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
# (identifier, bytes, decimals) of each element the station reports.
LAYOUT = {0x20: (3, 1), 0x26: (3, 1), 0x39: (4, 3), 0x38: (2, 2)}


@dataclass
class Station:
    """One station: address, password, values by element identifier, fault and counters."""

    address: str
    password: str
    centre: int = 1
    values: dict[int, float | None] = field(
        default_factory=lambda: {0x20: 0.5, 0x26: 120.5, 0x39: 1.25, 0x38: 12.6})
    status: int = 0  # the 45 20 status and alarm bits
    station_type: int = 0x48  # 'H': river
    fault: Fault = "none"
    interval_s: float = 1.0
    packet_limit: int = 0  # body bytes per packet; 0: single-packet messages
    clock_offset_s: float = 0.0
    sent: int = 0
    confirmations: int = 0
    queries: int = 0
    clock_sets: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: asyncio.StreamWriter | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _serial: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(5))  # faults, no secret

    def now(self) -> dt.datetime:
        """The station's clock."""
        off = self.clock_offset_s + (86400.0 if self.fault == "clock_off" else 0.0)
        return dt.datetime.now(TZ) + dt.timedelta(seconds=off)

    def body(self, serial: int | None = None) -> bytes:
        """A report body with every element's current value and the status bits."""
        elements = b"".join(frame.element(i, v, *LAYOUT.get(i, (4, 2)))
                            for i, v in self.values.items())
        elements += b"\x45\x20" + self.status.to_bytes(4, "big")
        self._serial = self._serial % 0xFFFF + 1
        now = self.now()
        return frame.report_body(self._serial if serial is None else serial, now, self.address,
                                 self.station_type, now.replace(second=0), elements)

    def messages(self, fc: int, body: bytes) -> list[bytes]:
        """The message(s) carrying ``body``: one, or several packets over ``packet_limit``."""
        pw = "FFFF" if self.fault == "wrong_password" else self.password
        base = frame.Frame(centre=self.centre, station=self.address, password=pw, fc=fc,
                           body=body)
        if not self.packet_limit or len(body) <= self.packet_limit:
            return [self._mangle(frame.encode(base))]
        chunks = [body[i : i + self.packet_limit] for i in range(0, len(body), self.packet_limit)]
        return [self._mangle(frame.encode(frame.Frame(
            centre=self.centre, station=self.address, password=pw, fc=fc, body=c,
            end=frame.ETX if n == len(chunks) else frame.ETB, packets=len(chunks), packet=n)))
            for n, c in enumerate(chunks, 1)]

    def _mangle(self, message: bytes) -> bytes:
        if self.fault == "bad_crc":
            return message[:-1] + bytes(((message[-1] + 1) & 0xFF,))
        if self.fault == "garbage":
            return self._rng.randbytes(6) + message
        return message

    async def _send(self, messages: list[bytes]) -> None:
        writer = self._writer
        if writer is None or self.fault == "silent":
            return
        for m in messages:
            if self.fault == "split":
                for i in range(0, len(m), 5):
                    writer.write(m[i : i + 5])
                    await writer.drain()
            else:
                writer.write(m)
        await writer.drain()

    async def report(self, fc: int = frame.FC_TIMED) -> None:
        """Send one report now."""
        if self._writer is None:
            msg = "not connected"
            raise ConnectionError(msg)
        await self._send(self.messages(fc, self.body()))
        self.sent += 1
        self.changed.set()

    async def until(self, condition: object, timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds; re-checked whenever the station sends or hears."""
        async with asyncio.timeout(timeout):
            while not condition():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()

    def connect(self, host: str, port: int) -> None:
        """Keep a connection to the centre at host:port, reporting every ``interval_s``."""
        self._tasks.append(asyncio.create_task(self._client(host, port)))

    async def _client(self, host: str, port: int) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            self._writer = writer
            listen = asyncio.create_task(self._listen(reader))
            try:
                while not listen.done():
                    await self.report()
                    await asyncio.wait({listen}, timeout=self.interval_s)
            except (OSError, ConnectionError):
                pass
            finally:
                self._writer = None
                listen.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listen
                writer.close()
            await asyncio.sleep(0.2)

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        split, buf = frame.Split(), bytearray()
        while data := await reader.read(4096):
            buf += data
            for raw in split.split(buf)[0]:
                await self._take(frame.parse(raw))
            self.changed.set()

    async def _take(self, msg: frame.Frame) -> None:
        if msg.up or msg.station != self.address:
            return
        if msg.end in (frame.ESC, frame.EOT, frame.ACK):
            self.confirmations += 1
            return
        self.queries += 1
        if self.fault == "silent" or msg.password != self.password:
            return
        serial = int.from_bytes(msg.body[:2], "big")
        if msg.fc == frame.FC_QUERY_NOW:
            await self._send(self.messages(msg.fc, self.body(serial)))
        elif msg.fc in (frame.FC_SET_CLOCK, frame.FC_QUERY_CLOCK):
            if msg.fc == frame.FC_SET_CLOCK:
                told = frame.parse_time(msg.body[2:8], TZ)
                self.clock_offset_s = (told - dt.datetime.now(TZ)).total_seconds()
                self.fault = "none" if self.fault == "clock_off" else self.fault
                self.clock_sets += 1
            body = (msg.body[:2] + frame.time_bytes(self.now()) + b"\xf1\xf1"
                    + bytes.fromhex(self.address) + bytes((self.station_type,)))
            await self._send(self.messages(msg.fc, body))
        elif msg.fc == frame.FC_QUERY_HISTORY:
            await self._send(self.messages(msg.fc, self.history(msg.body)))

    def history(self, request: bytes) -> bytes:
        """The answer body to a 0x38 request: the element's value at each step, from start."""
        start = frame.parse_time(request[8:12], TZ)
        end = frame.parse_time(request[12:16], TZ)
        step = frame.step_seconds(request[18:21])
        ident, d = request[21], request[22]
        base = self.values.get(ident) or 0.0
        count = int((end - start).total_seconds() // step) + 1
        values = b"".join(frame.value_bytes(base + i * 0.01, d) for i in range(count))
        return (request[:2] + frame.time_bytes(self.now()) + b"\xf1\xf1"
                + bytes.fromhex(self.address) + bytes((self.station_type,)) + b"\xf0\xf0"
                + frame.time_bytes(start, 5) + b"\x04\x18" + request[18:21]
                + bytes((ident, d)) + values)

    async def close(self) -> None:
        """Stop connecting and reporting."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def main(argv: list[str] | None = None) -> None:
    """Run one station until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m cimedge.tools.sim.sl651_station",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--station", default="0012345678")
    parser.add_argument("--centre", type=int, default=1)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--connect", metavar="HOST:PORT", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    with open(args.password_file, encoding="ascii") as f:  # noqa: PTH123
        password = f.read().strip().upper()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        station = Station(args.station, password, args.centre, interval_s=args.interval)
        host, _, port = args.connect.rpartition(":")
        station.connect(host, int(port))
        await stop.wait()
        await station.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
