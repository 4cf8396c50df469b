"""A simulated RS-485 line: one pseudo-terminal for the gateway, joined to many devices' ones.

Each device simulator (an RTU slave on its own PTY, a MicroPython node on its own) is a
*drop*: what the gateway sends goes to every connected drop, and what a connected drop
sends comes back to the gateway, as on a real two-wire bus where only the addressed unit
answers. Each drop has a switch, so a test can pull a device off the bus and put it back.

Bytes take their wire time at ``baudrate`` (10 bits a character, 11 with parity), one
transmission after another, because a slave finds the end of a frame by 3.5 characters of
silence: without wire time, a request to one unit and the next to another would reach a
node closer together than that and run into one garbled frame. Unlike a real bus, a
device does not hear the other devices' answers (the RTU simulator has no silence timing
to resynchronise on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable


class Line:
    """The bus; ``path`` is the serial port the gateway opens. Runs on one asyncio loop."""

    def __init__(self, name: str, baudrate: int = 9600, parity: str = "N") -> None:
        self.name = name
        self.char_s = (11 if parity != "N" else 10) / baudrate
        self._busy_until = 0.0
        self.path = ""
        self._master = self._slave = -1
        self._drops: dict[str, int] = {}
        self.connected: dict[str, bool] = {}
        self.frames_dropped = 0  # bytes-chunks a disconnected drop sent into the void

    async def start(self) -> Line:
        self._master, self._slave = os.openpty()
        for fd in (self._master, self._slave):
            tty.setraw(fd, termios.TCSANOW)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self._master, self._from_gateway)
        return self

    def attach(self, name: str, path: str) -> None:
        """Join the device whose serial port is ``path`` (the device end of its PTY)."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, termios.TCSANOW)
        self._drops[name], self.connected[name] = fd, True
        asyncio.get_running_loop().add_reader(fd, self._from_drop, name)

    def connect(self, name: str, on: bool) -> None:  # noqa: FBT001 - a switch
        if name not in self._drops:
            raise KeyError(f"{name} is not on bus {self.name}")
        self.connected[name] = on

    def _from_gateway(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):  # EIO: the gateway has not opened its end yet
            return

        def deliver() -> None:
            for name, fd in self._drops.items():
                if self.connected[name]:
                    _write(fd, data)
        self._on_wire(data, deliver)

    def _from_drop(self, name: str) -> None:
        try:
            data = os.read(self._drops[name], 4096)
        except (BlockingIOError, OSError):
            return
        if self.connected[name]:
            self._on_wire(data, lambda: _write(self._master, data))  # noqa: FURB118
        else:
            self.frames_dropped += 1

    def _on_wire(self, data: bytes, deliver: Callable[[], object]) -> None:
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._busy_until)
        self._busy_until = start + len(data) * self.char_s
        loop.call_at(self._busy_until, deliver)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in [*self._drops.values(), self._master]:
            if fd >= 0:
                loop.remove_reader(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
        with contextlib.suppress(OSError):
            os.close(self._slave)
        self._drops.clear()
        self._master = self._slave = -1


def _write(fd: int, data: bytes) -> None:
    # A device that is powered off reads nothing: its PTY fills and refuses; the bytes are
    # lost on a real bus too.
    with contextlib.suppress(BlockingIOError, OSError):
        os.write(fd, data)
