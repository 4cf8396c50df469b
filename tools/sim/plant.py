"""A small simulated plant as one Modbus TCP slave: physics in Python, registers from a spec.

A subclass names its float32 input points (``INPUTS``, two registers each from address 0,
big-endian, high word first), its status bits (``BITS``: bits of the input register right
after the floats), its coils (``COILS``, from 0) and its uint16 holding registers
(``HOLDING``, from 0), and implements ``step(dt)``, which reads ``self.coil``/``self.reg``
(what the gateway wrote) and sets ``self.value``/``self.bit``. Physics runs every 50 ms of
wall time times ``speed``; speed 0 freezes it, and a test may then call ``step()`` itself
(with a controllable clock, not sleeps). ``points()`` and ``toml()`` give the matching
``[devices.NAME]`` table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import struct
from typing import Any, ClassVar, Self

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from cimedge.tools.sim.modbus_server import listen, run_physics, run_until_signalled



def f32(value: float) -> list[int]:
    """A float32 as two registers, high word first."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


class Plant:
    """The Modbus side and the physics loop; subclasses give the register spec and ``step``."""

    INPUTS: ClassVar[dict[str, str]] = {}  # name -> unit, float32 at 2*i
    BITS: ClassVar[tuple[str, ...]] = ()  # status bits of input register 2*len(INPUTS)
    COILS: ClassVar[tuple[str, ...]] = ()
    HOLDING: ClassVar[dict[str, int]] = {}  # name -> initial value

    def __init__(self, *, host: str = "127.0.0.1", speed: float = 1.0, unit: int = 1,
                 seed: int | None = None) -> None:
        self.host, self.port, self.speed, self.unit = host, 0, speed, unit
        self.rng = random.Random(seed)  # noise, not a secret
        self.value = dict.fromkeys(self.INPUTS, 0.0)
        self.bit = dict.fromkeys(self.BITS, False)
        self.coil = dict.fromkeys(self.COILS, False)
        self.reg = dict(self.HOLDING)
        self.clock_s = 0.0
        self.writes = 0  # coil and holding writes the gateway made
        self._server: ModbusTcpServer | None = None
        self._physics: asyncio.Task[None] | None = None
        n_in = 2 * len(self.INPUTS) + 1
        self.device = SimDevice(
            id=unit,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, values=[*self.HOLDING.values(), 0], datatype=DataType.REGISTERS)],
                [SimData(0, values=[0] * n_in, datatype=DataType.REGISTERS)],
            ),
            action=self._on_request,
        )

    def step(self, dt: float) -> None:
        """Advance the physics by ``dt`` simulated seconds."""
        self.clock_s += dt

    def stats(self) -> dict[str, Any]:
        """Counts and the state, JSON-ready."""
        return {"writes": self.writes, "coil": dict(self.coil), "reg": dict(self.reg),
                "value": {k: round(v, 3) for k, v in self.value.items()}}

    async def start(self, port: int = 0) -> Self:
        """Listen (port 0: a free one, then in ``self.port``) and start the physics."""
        self._server, self.port = await listen(self.device, self.host, port)
        self._physics = asyncio.create_task(self._run(), name=f"{type(self).__name__}.physics")
        return self

    async def close(self) -> None:
        if self._physics is not None:
            self._physics.cancel()
            await asyncio.wait({self._physics})
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        await run_physics(self.step, lambda: self.speed)

    async def _on_request(self, fc: int, _start: int, address: int, count: int,
                          registers: list[int], values: Any) -> None:
        """Runs before pymodbus serves a request; ``registers`` is the whole block from 0."""
        if fc == 4:
            regs: list[int] = []
            for name in self.INPUTS:
                regs += f32(self.value[name])
            regs.append(sum(1 << i for i, b in enumerate(self.BITS) if self.bit[b]))
            registers[: len(regs)] = regs
        elif values is not None and fc in (5, 15):
            for i, v in enumerate(values):
                if address + i < len(self.COILS):
                    self.coil[self.COILS[address + i]] = bool(v)
            self.writes += 1
        elif values is not None and fc in (6, 16):
            names = list(self.HOLDING)
            for i, v in enumerate(values):
                if address + i < len(names):
                    self.reg[names[address + i]] = int(v)
            self.writes += 1

    @classmethod
    def points(cls) -> dict[str, dict[str, Any]]:
        """The register map as ``[devices.NAME.points]`` tables."""
        out: dict[str, dict[str, Any]] = {}
        for i, (name, unit) in enumerate(cls.INPUTS.items()):
            out[name] = {"table": "input", "address": 2 * i, "dtype": "float32", "unit": unit}
        for i, name in enumerate(cls.BITS):
            out[name] = {"table": "input", "address": 2 * len(cls.INPUTS), "dtype": "bool",
                         "bit": i}
        for i, name in enumerate(cls.COILS):
            out[name] = {"table": "coil", "address": i, "dtype": "bool"}
        for i, name in enumerate(cls.HOLDING):
            out[name] = {"table": "holding", "address": i, "dtype": "uint16"}
        return out

    @classmethod
    def toml(cls, name: str, host: str = "127.0.0.1", port: int = 502, unit: int = 1,
             poll_interval_s: float = 1.0) -> str:
        """A whole ``[devices.NAME]`` table as site-TOML text."""
        head = {"driver": "modbus", "host": host, "port": port, "unit": unit,
                "poll_interval_s": poll_interval_s}
        out = [f"[devices.{name}]", *(f"{k} = {json.dumps(v)}" for k, v in head.items())]
        for point, table in cls.points().items():
            out += ["", f"[devices.{name}.points.{point}]",
                    *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
        return "\n".join(out) + "\n"


def approach(current: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: ``current`` moved toward ``target`` with time constant ``tau`` s."""
    return target + (current - target) * math.exp(-dt / tau)


def main(cls: type[Plant], module: str, doc: str, argv: list[str] | None = None) -> None:
    """``python -m cimedge.tools.sim.<module>``: serve one plant on --port until a signal."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args(argv)
    asyncio.run(run_until_signalled(lambda: cls(speed=args.speed).start(args.port), None))
