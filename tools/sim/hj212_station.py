"""An HJ 212-2017 air-quality station: uploads to a platform, or answers a platform's polls.

``Station.connect(host, port)`` makes it connect to a platform (the gateway in listen mode)
and upload real-time data (2011) every ``interval_s`` (``push()`` sends one at once, and
``push(cn)`` minute, hour or day data); it keeps reconnecting while running, as a station
does. ``Station.serve()`` makes it listen for a platform that polls (the gateway in poll
mode): it answers 2011/2051/2061/2031 requests with 9011, the data, and 9012, and obeys
1012 (set the clock) and 1011 (report it).

Faults (``station.fault``): ``bad_crc`` (a wrong CRC on data packets), ``split`` (each packet
written in small pieces), ``silent`` (sends and answers nothing), ``wrong_password``,
``clock_off`` (its DataTime a day ahead until the platform sets its clock), ``garbage``
(line noise before every packet). ``packet_limit`` splits reports into PNUM/PNO packets.

As a process: ``python -m cimedge.tools.sim.hj212_station --connect 127.0.0.1:6212
--mn LP0001AQ01 --password-file FILE`` or ``--serve 127.0.0.1:0`` (prints ``listening PORT``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import signal
import sys
import zoneinfo
from dataclasses import dataclass, field
from typing import Literal

from cimedge.drivers.hj212 import frame

Fault = Literal["none", "bad_crc", "split", "silent", "wrong_password", "clock_off", "garbage"]
TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
FMT = "%Y%m%d%H%M%S"

AIR = {"a34004": 35.0, "a34002": 58.0, "a01001": 21.5, "a01002": 63.0, "a21026": 8.0,
       "a21004": 21.0, "LA": 56.2}  # PM2.5, PM10, temperature, humidity, SO2, NO2, noise


@dataclass
class Station:
    """One station: its MN, password, values by pollutant code, fault, and counters."""

    mn: str
    password: str
    st: str = "22"
    values: dict[str, float] = field(default_factory=lambda: dict(AIR))
    flags: dict[str, str] = field(default_factory=dict)  # code -> data flag (default N)
    fault: Fault = "none"
    interval_s: float = 1.0
    packet_limit: int = frame.MAX_DATA
    want_answer: bool = True
    clock_offset_s: float = 0.0
    hour_every: int = 30  # client mode: hour data (2061) after the first upload and every n
    sent: int = 0  # data messages sent
    answers: int = 0  # 9014 answers received
    requests: int = 0  # platform requests received
    clock_sets: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: asyncio.StreamWriter | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _qn: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(7))  # faults, no secret

    # -- what it sends ------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The station's own clock (a day ahead under the clock_off fault)."""
        off = self.clock_offset_s + (86400.0 if self.fault == "clock_off" else 0.0)
        return dt.datetime.now(TZ) + dt.timedelta(seconds=off)

    def report(self, cn: int = frame.CN_RTD, qn: str = "", when: dt.datetime | None = None,
               ) -> list[bytes]:
        """The packets of one data message (several when over ``packet_limit``)."""
        field_name = "Rtd" if cn == frame.CN_RTD else "Avg"
        items = [[("DataTime", (when or self.now()).strftime(FMT))]]
        for code, value in self.values.items():
            pair = [(f"{code}-{field_name}", f"{value:g}"),
                    (f"{code}-Flag", self.flags.get(code, "N"))]
            if cn != frame.CN_RTD:
                pair[1:1] = [(f"{code}-Min", f"{value * 0.9:g}"), (f"{code}-Max", f"{value * 1.1:g}")]
            items.append(pair)
        self._qn += 1
        msg = frame.Message(
            qn=qn or self.now().strftime("%Y%m%d%H%M%S") + f"{self._qn % 1000:03d}", st=self.st,
            cn=cn, pw=self.password + ("x" if self.fault == "wrong_password" else ""),
            mn=self.mn, flag=frame.VERSION_2017 | (frame.FLAG_ANSWER if self.want_answer else 0),
            cp=frame.build_cp(items))  # fmt: skip
        return [self._mangle(frame.encode(p)) for p in frame.split_packets(msg, self.packet_limit)]

    def _mangle(self, packet: bytes) -> bytes:
        if self.fault == "bad_crc":
            crc = packet[-6:-2]
            return packet[:-6] + (b"0000" if crc != b"0000" else b"FFFF") + packet[-2:]
        if self.fault == "garbage":
            return bytes(self._rng.randrange(256) for _ in range(5)) + packet
        return packet

    async def _send(self, writer: asyncio.StreamWriter, packets: list[bytes]) -> None:
        if self.fault == "silent":
            return
        for packet in packets:
            if self.fault == "split":
                for i in range(0, len(packet), 7):
                    writer.write(packet[i : i + 7])
                    await writer.drain()
            else:
                writer.write(packet)
        await writer.drain()

    async def push(self, cn: int = frame.CN_RTD) -> None:
        """Upload one data message now (client mode)."""
        if self._writer is None:
            msg = "not connected"
            raise ConnectionError(msg)
        await self._send(self._writer, self.report(cn))
        self.sent += 1
        self._changed()

    def _changed(self) -> None:
        self.changed.set()

    async def until(self, condition: object, timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds; re-checked whenever the station sends or hears."""
        async with asyncio.timeout(timeout):
            while not condition():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()

    # -- client: connect to a platform --------------------------------------------------

    def connect(self, host: str, port: int) -> None:
        """Keep a connection to the platform at host:port and upload every ``interval_s``."""
        self._tasks.append(asyncio.create_task(self._client(host, port), name=f"sim[{self.mn}]"))

    async def _client(self, host: str, port: int) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            self._writer = writer
            listen = asyncio.create_task(self._listen(reader, writer))
            try:
                n = 0
                while not listen.done():
                    await self.push()
                    if self.hour_every and n % self.hour_every == 0:
                        await self.push(frame.CN_HOUR)
                    n += 1
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

    # -- server: answer a platform's polls ----------------------------------------------

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for a polling platform; the port bound."""
        self._server = await asyncio.start_server(self._listen, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _listen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        split, buf = frame.Split(), bytearray()
        while data := await reader.read(4096):
            buf += data
            packets, _ = split.split(buf)
            for raw in packets:
                await self._take(frame.parse(raw), writer)

    async def _take(self, msg: frame.Message, writer: asyncio.StreamWriter) -> None:
        if msg.cn == frame.CN_DATA_ANSWER:
            self.answers += 1
            self._changed()
            return
        self.requests += 1
        self._changed()
        if self.fault == "silent":
            return
        if msg.pw != self.password or msg.mn != self.mn:
            await self._send(writer, [frame.encode(frame.answer(
                msg, frame.CN_REQUEST_ANSWER, f"QnRtn={frame.QN_BAD_PASSWORD}"))])
            return
        ready = frame.encode(frame.answer(msg, frame.CN_REQUEST_ANSWER, f"QnRtn={frame.QN_READY}"))
        done = frame.encode(frame.answer(msg, frame.CN_EXECUTE_RESULT, f"ExeRtn={frame.EXE_OK}"))
        if msg.cn == frame.CN_SET_TIME:
            cp = frame.parse_cp(msg.cp)
            new = dt.datetime.strptime(cp.other["SystemTime"], FMT).replace(tzinfo=TZ)
            self.clock_offset_s = (new - dt.datetime.now(TZ)).total_seconds()
            if self.fault == "clock_off":
                self.fault = "none"
            self.clock_sets += 1
            await self._send(writer, [ready, done])
        elif msg.cn == frame.CN_GET_TIME:
            now = frame.encode(frame.answer(msg, frame.CN_GET_TIME,
                                            f"SystemTime={self.now().strftime(FMT)}"))
            await self._send(writer, [ready, now, done])
        elif msg.cn in frame.DATA_CNS:
            self.sent += 1
            await self._send(writer, [ready, *self.report(msg.cn, msg.qn), done])
        else:
            await self._send(writer, [frame.encode(frame.answer(
                msg, frame.CN_REQUEST_ANSWER, f"QnRtn={frame.QN_REFUSED}"))])
        self._changed()

    async def close(self) -> None:
        """Stop connecting, serving and uploading."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    """Run one station until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m cimedge.tools.sim.hj212_station",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--mn", default="LP0001AQ01")
    parser.add_argument("--password-file", required=True)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--connect", metavar="HOST:PORT", help="upload to a platform")
    how.add_argument("--serve", metavar="HOST:PORT", help="answer a polling platform")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    with open(args.password_file, encoding="ascii") as f:  # noqa: PTH123
        password = f.read().strip()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        station = Station(args.mn, password, interval_s=args.interval)
        if args.connect:
            host, _, port = args.connect.rpartition(":")
            station.connect(host, int(port))
        else:
            host, _, port = args.serve.rpartition(":")
            sys.stdout.write(f"listening {await station.serve(host, int(port))}\n")
            sys.stdout.flush()
        await stop.wait()
        await station.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
