"""One RS-485 line: a serial port opened once, shared by every device on it, one exchange at a time.

Every serial device of a site (Modbus RTU, DL/T 645, CJ/T 188) that names the same ``port``
gets the same ``SerialBus``
(``acquire()``/``release()`` count the users; the last one closes the port). Exchanges take
turns in arrival order (``asyncio.Lock`` is FIFO), so a device that polls again goes behind
the others already waiting. Separate ports are separate buses and run concurrently.

The protocol supplies a finder that picks its answer out of the received bytes (Modbus RTU:
unit, function code, CRC; DL/T 645 and CJ/T 188: address, control code, checksum). Line discipline, as
the Modbus serial-line spec asks of a master (and harmless for DL/T 645):

- before sending, the line must have been quiet for 3.5 character times (1.75 ms above
  19200 baud); bytes that arrive meanwhile (a late answer, noise) are dropped and counted;
- the answer is due ``timeout_s`` after the request has left the wire; once it starts, it
  ends at a checked frame, or fails as a bad frame when the line goes quiet for
  ``FRAME_GAP_S`` without one (no need to wait out the timeout on a CRC error); a frame that
  is complete but fails its CRC, or bytes that start no frame, end after the 3.5-character
  gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
import serial  # type: ignore[import-untyped]  # pyserial ships no types

from cimedge.drivers.health import Silence
from cimedge.edge.errors import BadFrame, ConfigError, DriverError, Timeout

# USB-serial adapters hand bytes over in bursts (FTDI's latency timer defaults to 16 ms), so
# a gap inside one answer can be far longer than 3.5 characters: end a bad frame on this.
FRAME_GAP_S = 0.05
MIN_GAP_S = 0.005  # the shortest quiet that ends a bad frame (timer resolution on a busy host)
REOPEN_S = 1.0  # least wait between attempts to open a port that failed to open
MAX_FRAME = 300  # bytes: longer than any Modbus RTU (256) or DL/T 645 frame a read returns


class Found(Protocol):
    """What a finder reports about the bytes received so far."""

    @property
    def frame(self) -> bytes | None:
        """The checked answer frame, or None."""

    @property
    def skipped(self) -> int:
        """Bytes before the frame that belong to no answer."""

    @property
    def bad_crc(self) -> bool:
        """A complete candidate failed its check (CRC or checksum)."""

    @property
    def incomplete(self) -> bool:
        """A candidate needs more bytes."""


Finder = Callable[[bytearray], Found]


class Line(msgspec.Struct, frozen=True):
    """A serial port and its character format."""

    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    @property
    def char_s(self) -> float:
        """Seconds one character takes on the wire: start bit, data, parity, stop bits."""
        return (1 + self.bytesize + (self.parity != "N") + self.stopbits) / self.baudrate

    @property
    def gap_s(self) -> float:
        """The silent interval that separates frames (3.5 characters; fixed above 19200 baud)."""
        return 3.5 * self.char_s if self.baudrate <= 19200 else 0.00175

    @property
    def settings(self) -> tuple[int, int, str, int]:
        """Baud rate, byte size, parity and stop bits: what devices sharing a port must agree on."""
        return (self.baudrate, self.bytesize, self.parity, self.stopbits)

    def wire_s(self, n: int) -> float:
        """Seconds ``n`` bytes take on the wire."""
        return n * self.char_s

    def __str__(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


class BusStats(msgspec.Struct):
    """What one bus has done since it was opened; the benchmark reads it."""

    exchanges: int = 0
    answered: int = 0
    timeouts: int = 0
    bad_frames: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    stray_bytes: int = 0  # arrived outside any exchange, or before the answer
    busy_s: float = 0.0  # time spent holding the line, gaps included


class SerialBus:
    """An RS-485 master on one serial port (pyserial, non-blocking, on the event loop)."""

    def __init__(self, line: Line) -> None:
        """Prepare; the port opens on the first exchange (or ``open()``)."""
        self.line = line
        self.stats = BusStats()
        self.users = 0
        self.error = ""  # why the port is not open, "" when it is
        self._serial: serial.Serial | None = None
        self._turn = asyncio.Lock()
        self._rx = bytearray()
        self._arrived = asyncio.Event()
        self._last_rx = 0.0  # monotonic time the last byte arrived
        self._line_free_at = 0.0  # monotonic time our last request left the wire
        self._next_open = 0.0

    @property
    def is_open(self) -> bool:
        """True while the port is open."""
        return self._serial is not None

    def open(self) -> bool:
        """Open the port if it is closed and not in its reopen wait; True when open."""
        if self._serial is not None:
            return True
        now = time.monotonic()
        if now < self._next_open:
            return False
        self._next_open = now + REOPEN_S
        line = self.line
        try:
            port = serial.Serial(
                line.port, baudrate=line.baudrate, bytesize=line.bytesize, parity=line.parity,
                stopbits=line.stopbits, timeout=0, write_timeout=0, exclusive=True,
            )  # fmt: skip
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            # termios.error is no OSError: a port that refuses the settings (EINVAL) too
            self.error = f"cannot open {line.port}: {_why(exc)}"
            return False
        port.reset_input_buffer()
        self._serial, self.error = port, ""
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)
        return True

    def close(self, error: str = "") -> None:
        """Close the port (it reopens on the next exchange)."""
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
            port.close()
        self.error = error or "closed"
        self._arrived.set()  # wake an exchange waiting for an answer

    async def exchange(self, request: bytes, find: Finder | None, timeout_s: float) -> bytes:
        """Send ``request`` and return the answer frame that ``find`` picks out.

        Raises Timeout (no answer), BadFrame (bytes but no checked frame) or DriverError (the
        port cannot be opened or failed). With no finder (a broadcast) returns b"" once sent.
        """
        async with self._turn:
            started = time.monotonic()
            try:
                return await self._exchange(request, find, timeout_s)
            finally:
                self.stats.busy_s += time.monotonic() - started

    async def _exchange(self, request: bytes, find: Finder | None, timeout_s: float) -> bytes:
        if not self.open():
            raise DriverError(self.error)
        self.stats.exchanges += 1
        await self._quiet(timeout_s)
        self._send(request)
        if find is None:
            return b""
        try:
            return await self._answer(find, self._line_free_at + timeout_s, timeout_s)
        except Timeout:
            self.stats.timeouts += 1
            raise
        except BadFrame:
            self.stats.bad_frames += 1
            raise

    async def _quiet(self, timeout_s: float) -> None:
        """Wait until the line has been silent for the inter-frame gap; drop what arrived."""
        give_up = time.monotonic() + timeout_s + self.line.gap_s
        while True:
            self._drop_stray()
            now = time.monotonic()
            wait = max(self._last_rx, self._line_free_at) + self.line.gap_s - now
            if wait <= 0:
                return
            if now + wait > give_up:
                msg = f"{self.line.port}: the line never went quiet (a device keeps sending)"
                raise BadFrame(msg)
            await asyncio.sleep(wait)

    def _send(self, request: bytes) -> None:
        port = self._serial
        if port is None:  # it failed while we waited for the line to go quiet
            raise DriverError(self.error)
        try:
            sent = os.write(port.fileno(), request)
        except OSError as exc:
            self.close(f"{self.line.port}: write failed: {_why(exc)}")
            raise DriverError(self.error) from exc
        if sent < len(request):  # a UART queue of at least 256 bytes never does this
            self.close(f"{self.line.port}: wrote {sent} of {len(request)} bytes")
            raise DriverError(self.error)
        self.stats.bytes_out += sent
        self._line_free_at = time.monotonic() + self.line.wire_s(sent)

    async def _answer(self, find: Finder, due: float, timeout_s: float) -> bytes:
        first = 0.0
        while True:
            if self._serial is None:
                raise DriverError(self.error)
            found = find(self._rx)
            if found.frame is not None:
                self.stats.stray_bytes += found.skipped
                self.stats.answered += 1
                del self._rx[: found.skipped + len(found.frame)]
                return found.frame
            now = time.monotonic()
            if not self._rx:
                limit = due
            else:
                first = first or now
                longest = first + self.line.wire_s(MAX_FRAME) + FRAME_GAP_S
                # A frame still arriving may be split by the adapter: give it FRAME_GAP_S.
                # Bytes that start no frame, or a whole frame that failed its CRC, end at
                # the line's own gap.
                quiet = FRAME_GAP_S if found.incomplete else max(self.line.gap_s, MIN_GAP_S)
                limit = min(self._last_rx + quiet, longest)
            if now >= limit:
                if not self._rx:
                    msg = f"no answer within {timeout_s:g} s"
                    raise Timeout(msg)
                raise BadFrame(_garbled(found, self._rx))
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit - now):
                    await self._arrived.wait()

    def _drop_stray(self) -> None:
        if self._rx:
            self.stats.stray_bytes += len(self._rx)
            self._rx.clear()

    def _readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = os.read(port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the adapter was unplugged, or the PTY's other end closed
            self.close(f"{self.line.port}: {_why(exc)}")
            return
        if not data:
            self.close(f"{self.line.port}: the port reports end of file")
            return
        self.stats.bytes_in += len(data)
        if len(self._rx) > 4 * MAX_FRAME:  # a babbling line: keep only the recent bytes
            self._drop_stray()
        self._rx += data
        self._last_rx = time.monotonic()
        self._arrived.set()


def _garbled(found: Found, rx: bytearray) -> str:
    head = bytes(rx[:16]).hex(" ") + (" ..." if len(rx) > 16 else "")
    if found.bad_crc:
        return f"CRC or checksum error in the answer ({len(rx)} bytes: {head})"
    return f"garbled answer ({len(rx)} bytes: {head})"


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, termios.error) and len(exc.args) == 2:  # noqa: PLR2004
        return f"the port refuses its settings ({exc.args[1]})"
    return str(exc) or type(exc).__name__


# One bus per (event loop, port): devices naming the same port share it.
_BUSES: dict[tuple[int, str], SerialBus] = {}


class Listener(Protocol):
    """What hears whether a device answered (drivers.health's silence tracker)."""

    def missed(self) -> None: ...

    def heard(self) -> None: ...


async def ask(bus: SerialBus, request: bytes, find: Finder, timeout_s: float,
              silence: Listener, where: str) -> bytes:
    """One exchange for one device: its errors keep their type and say which device and request."""
    try:
        answer = await bus.exchange(request, find, timeout_s)
    except Timeout as exc:
        silence.missed()
        raise Timeout(f"{where}: {exc}") from exc
    except BadFrame as exc:
        raise BadFrame(f"{where}: {exc}") from exc
    except DriverError as exc:
        raise DriverError(f"{where}: {exc}") from exc
    silence.heard()
    return answer


def ready(bus: SerialBus | None, silence: Silence, where: str, *,
          probe_now: bool = False) -> SerialBus:
    """The device's open bus, or DriverError at once: not open, in backoff (unless
    ``probe_now``) after unanswered tries, or the port cannot be opened."""
    if bus is None:
        raise DriverError(f"{where}: not open")
    wait = silence.wait_left()
    if wait > 0 and not probe_now:
        raise DriverError(f"{where}: no answer to {silence.tries} tries; next probe in "
                          f"{wait:.1f} s")
    if not bus.open():
        raise DriverError(f"{where}: {bus.error}")
    return bus


def acquire(line: Line, device: str) -> SerialBus:
    """The bus on ``line.port``, shared with the other devices on it; ``release()`` when done.

    Raises ConfigError when another device already uses the port with other settings.
    """
    key = (id(asyncio.get_running_loop()), os.path.realpath(line.port))
    bus = _BUSES.get(key)
    if bus is None:
        bus = _BUSES[key] = SerialBus(line)
    elif bus.line.settings != line.settings:  # the same port may be named by another path
        msg = f"{line.port} is already in use at {bus.line} by another device, not {line}"
        raise ConfigError("", f"devices.{device}.port", msg)
    bus.users += 1
    return bus


def release(bus: SerialBus) -> None:
    """Drop one user of ``bus``; the last one closes the port."""
    bus.users -= 1
    if bus.users > 0:
        return
    bus.close()
    for key, known in list(_BUSES.items()):
        if known is bus:
            del _BUSES[key]
