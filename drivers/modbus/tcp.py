"""Modbus TCP link (pymodbus): every pymodbus failure comes out of here as a DriverError.

pymodbus fails three ways: it raises, it *returns* a response whose ``isError()`` is true, or
``connect()`` gives False. All three become DriverError subclasses here;
``asyncio.CancelledError`` always passes through unchanged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from cimedge.drivers.modbus.config import DeviceConfig
from cimedge.drivers.modbus.plan import BIT_TABLES, Request
from cimedge.drivers.modbus.rtu import EXCEPTION_NAMES
from cimedge.edge.errors import BadFrame, DeviceException, DriverError, Timeout
from cimedge.stop import reraise_cancelled


class TcpLink:
    """One TCP connection to one unit; a link failure drops it, the next ``ready()`` reconnects.

    A reconnect inside the backoff window fails at once (no sleep): after n failed connects
    the next try waits ``uniform(0, min(backoff_max_s, 1.5**n))`` seconds (full jitter, n
    capped at 10).
    """

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; no I/O until ``ready()``."""
        self.device, self.config = device, config
        self.where = f"{device} at {config.host}:{config.port} unit {config.unit}"
        self._client: AsyncModbusTcpClient | None = None
        self._failed_connects = 0
        self._retry_at = 0.0
        self._rng = random.Random()  # backoff jitter, not a secret

    async def open(self) -> None:
        """Connect once; nothing to share."""
        await self.ready()

    def close(self) -> None:
        """Drop the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def fatal(self, exc: DriverError) -> bool:
        """True when ``exc`` took the link down, so the rest of a poll fails at once."""
        return not isinstance(exc, DeviceException)

    async def ready(self, *, now: bool = False) -> None:
        """Connect unless connected; inside the backoff window fail at once unless ``now``."""
        if self._client is not None and self._client.connected:
            return
        self.close()
        wait = self._retry_at - time.monotonic()
        if wait > 0 and not now:
            msg = f"{self.where} is unreachable; next connect in {wait:.1f} s"
            raise DriverError(msg)
        cfg = self.config
        assert isinstance(cfg.port, int)  # noqa: S101  # check() guarantees it for tcp
        # pymodbus's own timer is only a backstop: asyncio.timeout() below decides.
        client = AsyncModbusTcpClient(
            cfg.host, port=cfg.port, name=self.device, timeout=cfg.timeout_s + 1,
            retries=0, reconnect_delay=0,
        )  # fmt: skip
        try:
            async with asyncio.timeout(cfg.timeout_s):
                connected = await client.connect()
                reraise_cancelled()  # pymodbus connects with wait_for: see cimedge.stop
        except TimeoutError:
            connected = False
        except asyncio.CancelledError:
            client.close()
            raise
        finally:
            if not client.connected:
                client.close()
        if not connected:
            self._failed_connects += 1
            n = min(10, self._failed_connects)
            self._retry_at = time.monotonic() + self._rng.uniform(0, min(cfg.backoff_max_s, 1.5**n))
            msg = f"{self.where}: cannot connect"
            raise DriverError(msg)
        self._failed_connects = 0
        self._client = client

    async def read(self, req: Request) -> list[int] | list[bool]:
        """The registers or bits ``req`` asks for."""
        client = self._connected()
        call = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[req.table]
        what = f"read {req.table} {req.address}+{req.count}"
        unit = self.config.unit
        rr = await self._exchange(what, lambda: call(req.address, count=req.count, device_id=unit))
        values = list(rr.bits) if req.table in BIT_TABLES else list(rr.registers)
        if len(values) < req.count:
            self.close()
            msg = f"{self.where}: {what}: got {len(values)} values"
            raise BadFrame(msg)
        return values[: req.count]

    async def write(self, table: str, address: int, regs: list[int]) -> None:
        """Write one coil, one holding register (function 6) or several (function 16)."""
        client, unit = self._connected(), self.config.unit
        if table == "coil":
            on = bool(regs[0])
            await self._exchange(
                f"write coil {address}", lambda: client.write_coil(address, on, device_id=unit)
            )
        elif len(regs) == 1:
            await self._exchange(
                f"write holding {address}",
                lambda: client.write_register(address, regs[0], device_id=unit),
            )
        else:
            await self._exchange(
                f"write holding {address}+{len(regs)}",
                lambda: client.write_registers(address, regs, device_id=unit),
            )

    def _connected(self) -> AsyncModbusTcpClient:
        if self._client is None:
            msg = f"{self.where}: not connected"
            raise DriverError(msg)
        return self._client

    async def _exchange(self, what: str, call: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """One request and its answer; every pymodbus failure comes out as a DriverError."""
        timeout = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout):
                try:
                    rr = await call()
                finally:
                    reraise_cancelled()  # pymodbus waits with wait_for: see cimedge.stop
        except TimeoutError as exc:
            self.close()
            msg = f"{self.where}: {what}: no answer within {timeout:g} s"
            raise Timeout(msg) from exc
        except ModbusIOException as exc:
            self.close()
            msg = f"{self.where}: {what}: {exc}"
            raise BadFrame(msg) from exc
        except (ModbusException, OSError) as exc:
            self.close()
            msg = f"{self.where}: {what}: {exc}"
            raise DriverError(msg) from exc
        except asyncio.CancelledError:
            self.close()  # its answer may still arrive: the next exchange starts on a fresh link
            raise
        if rr.isError():
            code = rr.exception_code
            raise DeviceException(
                code, f"{self.where}: {what}: {EXCEPTION_NAMES.get(code, 'unknown')}"
            )
        return rr
