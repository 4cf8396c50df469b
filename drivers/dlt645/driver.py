"""DL/T 645-2007 meter driver on a shared RS-485 line; the package's only I/O module.

One read request per point (function 0x11, one data identifier each). Meters on the same
port share one ``drivers.serial_bus.SerialBus`` with any other serial device there, taking
turns; a meter that stops answering fails its poll at the first timeout and is then probed
once per backoff period (``drivers.health.Silence``), so it costs the others on the line little.
"""

from __future__ import annotations

import asyncio
import time
from typing import Self

from cimedge.drivers import serial_bus as bus
from cimedge.drivers.dlt645 import frame
from cimedge.drivers.dlt645.config import DeviceConfig
from cimedge.drivers.health import HealthBook, Silence
from cimedge.drivers.serial_bus import Finder, Line, SerialBus, ask
from cimedge.edge.errors import BadFrame, DeviceException, DriverError, Timeout
from cimedge.edge.model import DeviceHealth, Quality, Reading, Value


async def discover(line: SerialBus, *, preamble: int = 4, timeout_s: float = 1.0) -> str:
    """The address of the one meter on ``line``, asked with the broadcast address (0x13).

    Only one meter may be connected: several would answer at once and garble each other
    (BadFrame). Raises Timeout when no meter answers.
    """
    request = frame.read_address_request(preamble)
    find: Finder = lambda rx: frame.scan(rx, frame.BROADCAST, frame.READ_ADDRESS)  # noqa: E731
    try:
        raw = await line.exchange(request, find, timeout_s)
    except BadFrame as exc:
        msg = f"{line.line.port}: address discovery: {exc} (connect one meter at a time)"
        raise BadFrame(msg) from exc
    answer = frame.parse(raw)
    if answer.abnormal:
        status = answer.data[0] if answer.data else 0
        raise DeviceException(status, f"address discovery: {frame.describe_error(status)}")
    return answer.address


class Driver:
    """One DL/T 645 meter (see ``drivers.base.Driver``); its points are read-only.

    ``address = "auto"`` discovers the address with a broadcast at the first poll (one
    meter on the line only). An abnormal answer or a bad frame fails only its point; a
    timeout or a port failure fails the rest of the poll.
    """

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; the port opens in ``__aenter__``."""
        config.check()
        self.device, self.config = device, config
        self.line = Line(
            config.port, baudrate=config.baudrate, bytesize=config.bytesize,
            parity=config.parity, stopbits=config.stopbits,
        )  # fmt: skip
        self.address: str | None = None if config.address == "auto" else config.address
        self.points = {
            name: (p.identifier(), p.format(), p.scale, p.offset)
            for name, p in config.points.items()
        }
        self.bus: SerialBus | None = None
        self.silence = Silence(config.backoff_max_s)
        self._book = HealthBook(config.offline_after)
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        """The meter, for messages."""
        return f"{self.device} on {self.config.port} meter {self.address or 'auto'}"

    async def __aenter__(self) -> Self:
        """Join the bus on ``port``; a port that will not open shows in health, not here."""
        self.bus = bus.acquire(self.line, self.device)
        if not self.bus.open():
            self._book.health.reason = self.bus.error
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Leave the bus; the last device to leave closes the port."""
        if self.bus is not None:
            bus.release(self.bus)
            self.bus = None

    def health(self) -> DeviceHealth:
        """A copy of what this driver knows of the meter."""
        return self._book.copy()

    async def write(self, point: str, value: Value) -> None:
        """DL/T 645 writes need the meter's password and operator code: not supported."""
        msg = f"{self.device}.{point}: DL/T 645 points are read-only in this driver ({value!r})"
        raise ValueError(msg)

    async def read(self) -> list[Reading]:
        """One Reading per configured point, in config order, stamped at its answer."""
        async with self._lock:
            return await self._poll()

    async def _poll(self) -> list[Reading]:
        readings: list[Reading] = []
        link_error: DriverError | None = None
        error: DriverError | None = None
        answered = 0
        try:
            await self._ready()
        except DriverError as exc:
            self._book.count(exc)
            link_error = exc
        for name, (di, fmt, scale, offset) in self.points.items():
            point = f"{self.device}.{name}"
            if link_error is None:
                what = f"{self.where}: read {name} ({di:08X})"
                try:
                    raw = await self._exchange(frame.read_request(
                        self.address or frame.BROADCAST, di, self.config.preamble), what)
                    value = frame.read_value(raw, di, fmt, what)
                except (BadFrame, DeviceException) as exc:
                    self._book.count(exc)
                    error = exc
                except DriverError as exc:
                    self._book.count(exc)
                    link_error = exc
                else:
                    answered += 1
                    readings.append(Reading(point, time.time_ns(), value * scale + offset))
                    continue
            readings.append(Reading(point, time.time_ns(), None, Quality.COMM))
        self._book.settle(answered, link_error or error)
        return readings

    async def _ready(self) -> None:
        bus.ready(self.bus, self.silence, self.where)
        if self.address is None:
            timeout = self._timeout()
            try:
                self.address = await discover(
                    self.bus, preamble=self.config.preamble, timeout_s=timeout
                )
            except Timeout:
                self.silence.missed()
                raise
            self.silence.heard()

    def _timeout(self) -> float:
        return self.config.probe_timeout_s if self.silence.probing else self.config.timeout_s

    async def _exchange(self, request: bytes, what: str) -> bytes:
        assert self.bus is not None and self.address is not None  # noqa: S101  # _ready()
        address = self.address
        find: Finder = lambda rx: frame.scan(rx, address, frame.READ_DATA)  # noqa: E731
        return await ask(self.bus, request, find, self._timeout(), self.silence, what)
