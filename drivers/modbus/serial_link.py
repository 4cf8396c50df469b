"""Modbus RTU link: one unit on a shared RS-485 bus, with probing backoff once it falls silent."""

from __future__ import annotations

from cimedge.drivers import serial_bus as bus
from cimedge.drivers.health import Silence
from cimedge.drivers.modbus import rtu
from cimedge.drivers.modbus.config import DeviceConfig
from cimedge.drivers.modbus.plan import Request
from cimedge.drivers.serial_bus import Line, SerialBus, ask
from cimedge.edge.errors import BadFrame, DeviceException, DriverError


class RtuLink:
    """One unit on a ``SerialBus``.

    A request that gets no answer within ``timeout_s`` ends the poll (one timeout per poll,
    not one per request) and starts a backoff: until ``uniform(0, min(backoff_max_s,
    1.5**n))`` seconds have passed (n: silent attempts in a row, capped at 10) a poll fails
    at once without touching the bus; after that, one probe, the poll's first request with
    the short ``probe_timeout_s``, decides whether the poll goes on. So a dead unit costs
    the other units on the bus at most one short wait per backoff period. A bad frame or an
    exception answer fails only its request: the unit is there.
    """

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; the bus is joined in ``open()``."""
        assert isinstance(config.port, str)  # noqa: S101  # check() guarantees it for rtu
        self.device, self.config = device, config
        self.line = Line(
            config.port, baudrate=config.baudrate, bytesize=config.bytesize,
            parity=config.parity, stopbits=config.stopbits,
        )  # fmt: skip
        self.where = f"{device} on {config.port} unit {config.unit}"
        self.bus: SerialBus | None = None
        self.silence = Silence(config.backoff_max_s)

    async def open(self) -> None:
        """Join the bus on ``port`` and open it if this is its first device."""
        self.bus = bus.acquire(self.line, self.device)
        self.bus.open()

    def close(self) -> None:
        """Leave the bus; the last device to leave closes the port."""
        if self.bus is not None:
            bus.release(self.bus)
            self.bus = None

    def fatal(self, exc: DriverError) -> bool:
        """True unless ``exc`` failed only its request (a bad frame or an exception answer)."""
        return not isinstance(exc, BadFrame | DeviceException)

    async def ready(self, *, now: bool = False) -> None:
        """Fail at once while the unit is in backoff (unless ``now``) or the port is shut."""
        bus.ready(self.bus, self.silence, self.where, probe_now=now)

    async def read(self, req: Request) -> list[int] | list[bool]:
        """The registers or bits ``req`` asks for; a probe while the unit is silent."""
        what = f"read {req.table} {req.address}+{req.count}"
        request = rtu.read_request(self.config.unit, req.table, req.address, req.count)
        timeout = self.config.probe_timeout_s if self.silence.probing else self.config.timeout_s
        answer = await self._exchange(request, rtu.READ_FC[req.table], timeout, what)
        return rtu.read_values(answer, req.table, req.count, f"{self.where}: {what}")

    async def write(self, table: str, address: int, regs: list[int]) -> None:
        """Write one coil (5), one holding register (6) or several (16); check the echo."""
        unit = self.config.unit
        if table == "coil":
            request, fc = rtu.write_coil(unit, address, bool(regs[0])), rtu.WRITE_COIL
            what = f"write coil {address}"
        elif len(regs) == 1:
            request, fc = rtu.write_register(unit, address, regs[0]), rtu.WRITE_REGISTER
            what = f"write holding {address}"
        else:
            request, fc = rtu.write_registers(unit, address, regs), rtu.WRITE_REGISTERS
            what = f"write holding {address}+{len(regs)}"
        answer = await self._exchange(request, fc, self.config.timeout_s, what)
        rtu.check_echo(answer, request, f"{self.where}: {what}")

    async def _exchange(self, request: bytes, fc: int, timeout: float, what: str) -> bytes:
        assert self.bus is not None  # noqa: S101  # ready() checked it
        unit = self.config.unit
        return await ask(self.bus, request, lambda rx: rtu.scan(rx, unit, fc), timeout,
                         self.silence, f"{self.where}: {what}")
