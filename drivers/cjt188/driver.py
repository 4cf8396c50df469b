"""CJ/T 188-2004 meter driver on a shared RS-485/M-Bus line; the package's only I/O module.

One read-data request (90 1F) a poll gives every field of the meter. Meters share the port's
``drivers.serial_bus.SerialBus`` with DL/T 645 meters and Modbus RTU devices there, taking
turns; a meter that stops answering is probed once per backoff period. The valve
(``valve_open``) is the one writable point: a write sends the valve command (A0 17) and is
verified by reading the meter back, so a local action drives it through the same
interlocks, and a signed override command reaches it through the same allowlist, as any
coil.
"""

from __future__ import annotations

import asyncio
import time
from typing import Self

from cimedge.drivers import serial_bus as bus
from cimedge.drivers.cjt188 import frame
from cimedge.drivers.cjt188.config import DeviceConfig
from cimedge.drivers.health import HealthBook, Silence
from cimedge.drivers.serial_bus import Finder, Line, SerialBus, ask
from cimedge.edge.errors import BadFrame, DriverError
from cimedge.edge.model import DeviceHealth, Quality, Reading, Value


class Driver:
    """One CJ/T 188 meter (see ``drivers.base.Driver``)."""

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; the port opens in ``__aenter__``."""
        config.check()
        self.device, self.config = device, config
        self.line = Line(config.port, baudrate=config.baudrate, bytesize=config.bytesize,
                         parity=config.parity, stopbits=config.stopbits)
        self.bus: SerialBus | None = None
        self.silence = Silence(config.backoff_max_s)
        self._book = HealthBook(config.offline_after)
        self._lock = asyncio.Lock()
        self._serial = 0

    @property
    def where(self) -> str:
        """The meter, for messages."""
        return f"{self.device} on {self.config.port} meter {self.config.address}"

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

    async def read(self) -> list[Reading]:
        """One Reading per configured point, in config order, from one read-data exchange."""
        async with self._lock:
            try:
                values = await self._read_meter(probe=False)
            except DriverError as exc:
                self._book.count(exc)
                self._book.settle(0, exc)
                now = time.time_ns()
                return [Reading(f"{self.device}.{n}", now, None, Quality.COMM)
                        for n in self.config.points]
            self._book.settle(1, None)
        now = time.time_ns()
        out = []
        for name, p in self.config.points.items():
            v = values.get(p.field)
            if v is None:  # an unknown unit, or the valve in fault
                out.append(Reading(f"{self.device}.{name}", now, None, Quality.RANGE))
            elif isinstance(v, bool):
                out.append(Reading(f"{self.device}.{name}", now, v))
            else:
                out.append(Reading(f"{self.device}.{name}", now, v * p.scale + p.offset))
        return out

    async def write(self, point: str, value: Value) -> None:
        """Open (true) or close (false) the valve, then read the meter back to verify."""
        p = self.config.points.get(point)
        if p is None or p.field != "valve_open" or not isinstance(value, bool | int | float):
            msg = f"{self.device}.{point}: only the valve_open point is writable (true/false)"
            raise ValueError(msg)
        want = bool(value)
        async with self._lock:
            try:
                serial = self._next_serial()
                what = f"{self.where}: {'open' if want else 'close'} valve"
                request = frame.valve_request(self.config.type_code, self.config.address,
                                              serial, want, self.config.preamble)
                raw = await self._exchange(request, frame.WRITE_DATA, what,
                                           self.config.valve_timeout_s)
                frame.check_answer(frame.parse(raw), serial, frame.DI_VALVE, what)
                back = await self._read_meter(probe=True)
            except DriverError as exc:
                self._book.count(exc)
                raise
        if back["valve_open"] is not want:
            state = "in fault" if back["valve_fault"] else "open" if back["valve_open"] else "closed"
            msg = f"{self.where}: valve commanded {'open' if want else 'closed'}, reads {state}"
            raise DriverError(msg)

    def _next_serial(self) -> int:
        self._serial = (self._serial + 1) & 0xFF
        return self._serial

    async def _read_meter(self, *, probe: bool) -> dict[str, float | bool | None]:
        serial = self._next_serial()
        what = f"{self.where}: read data"
        request = frame.read_request(self.config.type_code, self.config.address, serial,
                                     self.config.preamble)
        bus.ready(self.bus, self.silence, self.where, probe_now=probe)
        raw = await self._exchange(request, frame.READ_DATA, what, None)
        answer = frame.parse(raw)
        frame.check_answer(answer, serial, frame.DI_READ, what)
        if answer.meter_type != self.config.type_code:
            raise BadFrame(f"{what}: answer from a meter of type {answer.meter_type:02X}")
        return frame.read_values(answer)

    async def _exchange(self, request: bytes, function: int, what: str,
                        timeout: float | None) -> bytes:
        line = bus.ready(self.bus, self.silence, self.where, probe_now=True)
        address = self.config.address
        find: Finder = lambda rx: frame.scan(rx, address, function)  # noqa: E731
        if timeout is None:
            timeout = (self.config.probe_timeout_s if self.silence.probing
                       else self.config.timeout_s)
        return await ask(line, request, find, timeout, self.silence, what)
