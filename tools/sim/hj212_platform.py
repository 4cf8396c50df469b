"""An HJ 212-2017 environmental platform: what the gateway's north side reports to.

``Platform.serve()`` listens; every station packet is checked and kept (``packets``),
uploads asking for an answer get 9014, and ``ask(cn, cp)`` sends a request to the connected
station and returns what came back for it (9011, data, 9012) once the 9012 arrives.

As a process: ``python -m cimedge.tools.sim.hj212_platform --port 0 --password-file FILE``
prints ``listening PORT`` and logs each packet's CN and CP until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import sys
import zoneinfo
from collections.abc import Callable

from cimedge.drivers.hj212 import frame

TZ = zoneinfo.ZoneInfo("Asia/Shanghai")


class Platform:
    """One listening platform; the last station to connect is the one ``ask()`` talks to."""

    def __init__(self, mn: str, password: str, *, answer: bool = True) -> None:
        self.mn, self.password, self.answer = mn, password, answer
        self.packets: list[frame.Message] = []
        self.bad = 0
        self.port = 0
        self.changed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._waiting: dict[str, list[frame.Message]] = {}
        self._qn = 0

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; the port bound."""
        self._server = await asyncio.start_server(self._conn, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening and drop the station."""
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()

    def of(self, cn: int) -> list[frame.Message]:
        """The packets received with command number ``cn``."""
        return [p for p in self.packets if p.cn == cn]

    async def until(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds; re-checked at every packet."""
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def ask(self, cn: int, cp: str = "", password: str | None = None,
                  timeout: float = 10.0) -> list[frame.Message]:
        """Send request ``cn`` and return the station's packets for it, 9012 (or refusal) last."""
        assert self._writer is not None, "no station connected"  # noqa: S101
        self._qn += 1
        qn = dt.datetime.now(TZ).strftime("%Y%m%d%H%M%S") + f"{self._qn % 1000:03d}"
        got = self._waiting[qn] = []
        self._writer.write(frame.encode(frame.Message(
            qn=qn, st="22", cn=cn, pw=self.password if password is None else password,
            mn=self.mn, flag=frame.VERSION_2017 | frame.FLAG_ANSWER, cp=cp)))

        def done() -> bool:
            return any(p.cn == frame.CN_EXECUTE_RESULT or (
                p.cn == frame.CN_REQUEST_ANSWER and "QnRtn=1" not in p.cp) for p in got)

        try:
            await self.until(done, timeout)
        finally:
            del self._waiting[qn]
        return got

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        split, buf = frame.Split(), bytearray()
        with contextlib.suppress(OSError):
            while data := await reader.read(4096):
                buf += data
                raws, bad = split.split(buf)
                self.bad += bad
                for raw in raws:
                    msg = frame.parse(raw)
                    self.packets.append(msg)
                    if msg.qn in self._waiting:
                        self._waiting[msg.qn].append(msg)
                    elif msg.wants_answer and self.answer and msg.cn in frame.DATA_CNS:
                        writer.write(frame.encode(frame.answer(msg, frame.CN_DATA_ANSWER, "")))
                    self.changed.set()
        if self._writer is writer:
            self._writer = None
        writer.close()


def main(argv: list[str] | None = None) -> None:
    """Listen until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m cimedge.tools.sim.hj212_platform",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mn", default="LP0001GW01")
    parser.add_argument("--password-file", required=True)
    args = parser.parse_args(argv)
    with open(args.password_file, encoding="ascii") as f:  # noqa: PTH123
        password = f.read().strip()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        platform = Platform(args.mn, password)
        sys.stdout.write(f"listening {await platform.serve(port=args.port)}\n")
        sys.stdout.flush()
        seen = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await platform.until(lambda: len(platform.packets) > seen or stop.is_set(), 1.0)
            for p in platform.packets[seen:]:
                sys.stdout.write(f"CN={p.cn} CP={p.cp}\n")
            seen = len(platform.packets)
            sys.stdout.flush()
        await platform.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
