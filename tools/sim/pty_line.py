"""A simulated serial line on a pseudo-terminal: the plumbing the RTU and DL/T 645 simulators share.

The simulator holds the master side of a PTY pair; the gateway opens ``path`` (the slave
side, ``/dev/pts/N``) as if it were ``/dev/ttyUSB0``. A subclass turns received bytes into
requests (``_take``) and hands each answer to ``_answer`` with the fault of the device that
gives it:

========== ===============================================================================
fault      what the device does with a request addressed to it
========== ===============================================================================
none       answers
silent     nothing (a dead or unplugged device)
bad_crc    answers with a corrupted check byte (CRC or checksum)
garbage    answers with random bytes, as many as the answer would have had
noise      answers correctly, after a few random bytes of line noise
slow       answers ``slow_s`` seconds late
========== ===============================================================================

With ``line_timing=True`` every answer leaves as a real line would deliver it: the request's
wire time, the 3.5-character gap, then the answer's wire time, at ``baudrate`` (11 bits a
character with parity, 10 without). Tests synchronise on ``await line.until(condition)``,
woken by every request, never on a sleep.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import termios
import tty
from collections.abc import Callable
from typing import Literal, Self

Fault = Literal["none", "silent", "bad_crc", "garbage", "noise", "slow"]
FAULTS: tuple[Fault, ...] = ("none", "silent", "bad_crc", "garbage", "noise", "slow")


class PtyLine:
    """A PTY pair; subclasses implement ``_take`` and ``_corrupt``."""

    def __init__(
        self, *, baudrate: int = 9600, parity: str = "N", line_timing: bool = False,
        seed: int | None = None,
    ) -> None:  # fmt: skip
        """Prepare; the PTY opens in ``start()``."""
        self.baudrate, self.line_timing = baudrate, line_timing
        self.char_s = (11 if parity != "N" else 10) / baudrate
        self.path = ""
        self.frames = 0  # requests decoded, for any device
        self.bytes_in = 0
        # Quiet time on the line before each request that followed an answer: a master must
        # leave 3.5 characters (tests check it with line_timing on).
        self.gaps: collections.deque[float] = collections.deque(maxlen=1000)
        self._master = self._slave = -1
        self._rx = b""
        self._rng = random.Random(seed)  # faults, not a secret
        self._changed = asyncio.Event()
        self._pending: set[asyncio.TimerHandle] = set()
        self._busy_until = 0.0  # the simulated line carries an answer until then
        self._answered_at = 0.0

    async def start(self) -> Self:
        """Open the PTY pair and start answering."""
        self._master, self._slave = os.openpty()
        for fd in (self._master, self._slave):
            tty.setraw(fd, termios.TCSANOW)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        return self

    async def close(self) -> None:
        """Stop answering and close both ends (the gateway's reads then fail with EIO)."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1

    async def __aenter__(self) -> Self:
        """Start; ``async with Line(...) as line``."""
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        """Close."""
        await self.close()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds; checked after every request the line sees."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def wire_s(self, n: float) -> float:
        """Seconds ``n`` characters take on the simulated line."""
        return n * self.char_s

    def send_raw(self, data: bytes) -> None:
        """Put ``data`` on the line now, as a babbling device would."""
        os.write(self._master, data)

    def _take(self, rx: bytes) -> int:
        """Handle the requests at the start of ``rx``; return how many bytes were used."""
        raise NotImplementedError

    def _corrupt(self, answer: bytes) -> bytes:
        """``answer`` with its check byte wrong."""
        raise NotImplementedError

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:  # EAGAIN, or EIO while nobody has the slave side open
            return
        self.bytes_in += len(data)
        self._rx += data
        while self._rx and (used := self._take(self._rx)):
            self._rx = self._rx[used:]
        self._changed.set()

    def _request_seen(self) -> None:
        """Count a decoded request and the quiet time the master left before it."""
        self.frames += 1
        if self._answered_at:
            # A PTY delivers the request the moment the master writes it: now is its start.
            self.gaps.append(asyncio.get_running_loop().time() - self._answered_at)
            self._answered_at = 0.0

    def _answer(self, request_size: int, answer: bytes, fault: Fault, slow_s: float) -> None:
        """Send ``answer`` as a device with ``fault`` would, at line speed if simulated."""
        if fault == "silent":
            return
        if fault == "bad_crc":
            answer = self._corrupt(answer)
        elif fault == "garbage":
            answer = self._rng.randbytes(len(answer))
        elif fault == "noise":
            answer = self._rng.randbytes(self._rng.randint(1, 6)) + answer
        loop = asyncio.get_running_loop()
        delay = slow_s if fault == "slow" else 0.0
        if self.line_timing:  # the request's own wire time, the gap, the answer's wire time
            start = max(loop.time() + self.wire_s(min(request_size, 256)), self._busy_until)
            self._busy_until = start + self.wire_s(3.5 + len(answer))
            delay += self._busy_until - loop.time()

        def send() -> None:
            self._pending.discard(handle)
            if self._master >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._master, answer)
                    self._answered_at = loop.time()

        handle = loop.call_later(delay, send)
        self._pending.add(handle)
