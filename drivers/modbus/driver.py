"""Modbus driver, over TCP (pymodbus) or RTU on a shared serial line: plan, decode, health.

The links (``tcp.TcpLink``, ``serial_link.RtuLink``) do the I/O and turn every failure into a
DriverError subclass; this module turns failed polls into COMM readings and health.
``asyncio.CancelledError`` always passes through unchanged.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol, Self

from cimedge.drivers.health import HealthBook
from cimedge.drivers.modbus import codec
from cimedge.drivers.modbus.config import DeviceConfig
from cimedge.drivers.modbus.plan import BIT_TABLES, Request
from cimedge.drivers.modbus.serial_link import RtuLink
from cimedge.drivers.modbus.tcp import TcpLink
from cimedge.edge.errors import DriverError
from cimedge.edge.model import DeviceHealth, Quality, Reading, Value


class Link(Protocol):
    """What the driver needs of a transport; each failure is a DriverError subclass."""

    where: str

    async def open(self) -> None: ...
    def close(self) -> None: ...
    def fatal(self, exc: DriverError) -> bool: ...
    async def ready(self, *, now: bool = False) -> None: ...
    async def read(self, req: Request) -> list[int] | list[bool]: ...
    async def write(self, table: str, address: int, regs: list[int]) -> None: ...


class Driver:
    """An open link to one Modbus device (see ``drivers.base.Driver``).

    ``read()`` answers every poll without raising: a request that fails gives its points
    ``Quality.COMM`` and value None. A link failure (TCP: refused connect, timeout, garbled
    frame; RTU: no answer, port gone) fails the rest of that poll at once, so a dead device
    costs one timeout per poll, not one per request; an exception answer (and, on RTU, a bad
    frame) fails only its request. While the link is in backoff a poll fails at once, with
    no I/O (TCP: no reconnect; RTU: no traffic on the shared bus but one short probe per
    backoff period; see ``TcpLink`` and ``RtuLink``).

    Health is kept by ``drivers.health.HealthBook`` (ok, degraded, offline after
    ``offline_after`` polls without any answer; timeouts, bad frames, exceptions counted).
    """

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare the link; no I/O until ``__aenter__``."""
        config.check()
        self.device = device
        self.config = config
        self.requests: tuple[Request, ...] = config.plan()
        self._layouts = {name: config.layout(name) for name in config.points}
        self._unpackers = {name: codec.unpacker(lay) for name, lay in self._layouts.items()}
        self._names = {name: f"{device}.{name}" for name in config.points}
        self.link: Link = TcpLink(device, config) if config.transport == "tcp" else RtuLink(
            device, config
        )
        self._lock = asyncio.Lock()  # one exchange at a time: polls and writes share the link
        self._book = HealthBook(config.offline_after)

    async def __aenter__(self) -> Self:
        """Open the link; a device that is down is not an error here, only in health."""
        async with self._lock:
            try:
                await self.link.open()
            except DriverError as exc:
                self._book.health.reason = str(exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the link, also when cancelled."""
        self.link.close()

    def health(self) -> DeviceHealth:
        """A copy of what this driver knows of the device's link."""
        return self._book.copy()

    async def read(self) -> list[Reading]:
        """One Reading per configured point, in config order, stamped at its answer."""
        async with self._lock:
            return await self._poll()

    async def write(self, point: str, value: Value) -> None:
        """Write a coil or holding-register point, then read it back to verify.

        Raises ValueError for a caller's mistake (unknown or read-only point, value that
        does not fit) and DriverError when the device fails, refuses (DeviceException) or
        reads back something else. A write does not wait for the read backoff.
        """
        p = self.config.points.get(point)
        if p is None:
            msg = f"{self.device} has no point {point!r}"
            raise ValueError(msg)
        if p.table not in ("coil", "holding"):
            msg = f"{self._names[point]} is on the read-only {p.table} table"
            raise ValueError(msg)
        if value is None:
            msg = f"{self._names[point]}: cannot write None"
            raise ValueError(msg)
        regs = codec.encode(value, self._layouts[point])
        expected: list[int] | list[bool] = [bool(regs[0])] if p.table == "coil" else regs
        async with self._lock:
            await self.link.ready(now=True)
            try:
                await self.link.write(p.table, p.address, regs)
                back = await self.link.read(
                    Request(p.table, p.address, len(expected), (point,))
                )
            except DriverError as exc:
                self._book.count(exc)
                raise
        if back != expected:
            msg = f"{self.link.where}: wrote {expected} to {p.table} {p.address}, read back {back}"
            raise DriverError(msg)

    async def _poll(self) -> list[Reading]:
        readings: dict[str, Reading] = {}
        link_error: DriverError | None = None
        error: DriverError | None = None
        answered = 0
        try:
            await self.link.ready()
        except DriverError as exc:
            link_error = exc
        for req in self.requests:
            if link_error is None:
                try:
                    values = await self.link.read(req)
                except DriverError as exc:
                    self._book.count(exc)
                    if self.link.fatal(exc):
                        link_error = exc
                    else:
                        error = exc
                else:
                    answered += 1
                    self._decode(req, values, time.time_ns(), readings)
                    continue
            failed_at = time.time_ns()
            for name in req.points:
                readings[name] = Reading(self._names[name], failed_at, None, Quality.COMM)
        self._book.settle(answered, link_error or error)
        return [readings[name] for name in self.config.points]

    def _decode(
        self, req: Request, values: list[int] | list[bool], ts: int, out: dict[str, Reading]
    ) -> None:
        """Put the Reading of each point of ``req`` into ``out``."""
        bits = req.table in BIT_TABLES
        data = b"" if bits else codec.registers_bytes(values)  # type: ignore[arg-type]
        for name in req.points:
            point = self.config.points[name]
            at = point.address - req.address
            if bits:
                value: codec.Raw = bool(values[at])
            elif (unpack := self._unpackers[name]) is not None:
                value = unpack(data, at)
            else:
                value = codec.decode(
                    [int(v) for v in values[at : at + point.width]], self._layouts[name]
                )
            finite = not isinstance(value, float) or math.isfinite(value)
            out[name] = Reading(
                self._names[name], ts, value, Quality.GOOD if finite else Quality.RANGE
            )
