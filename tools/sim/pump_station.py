"""A drainage pump station as a Modbus TCP slave (pymodbus), with a wet well that fills and drains.

Physics (``step``, ticked every 50 ms of wall time, times ``speed``): inflow varies slowly around
180 m3/h (plus or minus 20 % over 300 s, with noise) and raises the wet-well level; the pump, at
360 m3/h, lowers it. The station's own float switch starts the pump at ``start_level`` (3.8 m) and
stops it at ``stop_level`` (1.0 m), so the level cycles by itself: one fill and drain takes about
40 s at speed 1 (time is compressed about 70 times against a real 25 m2 well), 4 s at speed 10.
Speed 0 freezes the physics, so a test can compare readings with ``station.state`` exactly.

Register map (unit 1 by default; every multi-register value big-endian, high word first):

======== ========== ========= ====================================================================
table    address    dtype     meaning
======== ========== ========= ====================================================================
input    0-1        float32   wet-well level, m (0-5; 5 is the overflow)
input    2-3        float32   inflow, m3/h
input    4-5        float32   discharge pressure, bar (~0.2 pump off, ~2.5 on, ~0.3 running dry)
input    6-7        float32   pump current, A (~0 off, ~12 on with noise, ~6 running dry)
input    8          uint16    status bits: 0 pump running, 1 manual mode, 2 high level (>= 4.5 m)
input    9-19                 reserved, read as 0
input    20-21      uint32    counter: +1 for every read request that covers register 20 or 21,
                              so every value served is unique (see ``served_values()``)
input    22-29                reserved, read as 0
input    30-37      string    model, "CIM-PS-SIM", NUL-padded
discrete 0          bool      pump running
coil     0          bool      pump command: a write switches the pump at once; in auto mode the
                              float switch still acts at its two levels, in manual mode the pump
                              follows only this coil. Reads back the last command written.
holding  0          uint16    mode: 0 auto (float switch), 1 manual (obey coil 0)
holding  2-3        float32   start level, m (default 3.8), stored rounded to 0.01 m
holding  4-5        float32   stop level, m (default 1.0), stored rounded to 0.01 m
======== ========== ========= ====================================================================

A holding write that would leave mode outside 0-1 or not 0 < stop < start <= 5 is refused with
exception 3 (illegal data value); other addresses give exception 2. A level off the 1 cm grid
reads back rounded (write 4.256, read 4.26), so a read-back check sees the difference.
``demo_points()``, ``demo_device()`` and ``demo_toml()`` give the matching gateway config.

In-process: ``station = await serve(port=0)``, then ``station.port``, ``station.stats()``,
``await station.close()``. As a process: ``python -m cimedge.tools.sim.pump_station --port 0
[--speed S] [--stats-file F]`` prints one line ``listening 127.0.0.1:PORT`` and, on SIGTERM,
writes ``stats()`` as JSON to F. ``served`` counts counter values handed to the transport: a
value whose answer was lost on the wire (client gone) is still counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from cimedge.tools.sim.modbus_server import listen, run_physics, run_until_signalled

NOMINAL_INFLOW = 180.0  # m3/h
PUMP_CAPACITY = 360.0  # m3/h
LEVEL_RATE = 0.14 / NOMINAL_INFLOW  # m/s per m3/h: the 2.8 m between the switches in 20 s
INFLOW_PERIOD_S = 300.0
MAX_LEVEL = 5.0
HIGH_LEVEL = 4.5
DRY_LEVEL = 0.05
COUNTER = 20
MODEL = "CIM-PS-SIM"
MODEL_AT, MODEL_REGS = 30, 8
INPUT_REGS = MODEL_AT + MODEL_REGS


@dataclass
class StationState:
    """What the station is doing now; the physics task and the Modbus requests both change it."""

    level: float = 2.0
    inflow: float = NOMINAL_INFLOW
    pressure: float = 0.24
    current: float = 0.0
    running: bool = False
    command: bool = False
    manual: bool = False
    start_level: float = 3.8
    stop_level: float = 1.0
    clock_s: float = 0.0
    pump_starts: int = 0

    def switch(self, on: bool) -> None:
        """Run or stop the pump, counting starts."""
        if on and not self.running:
            self.pump_starts += 1
        self.running = on


def step(s: StationState, dt: float, rng: random.Random) -> None:
    """Advance the station by ``dt`` simulated seconds."""
    s.clock_s += dt
    swing = 1 + 0.2 * math.sin(2 * math.pi * s.clock_s / INFLOW_PERIOD_S)
    s.inflow = max(0.0, NOMINAL_INFLOW * swing + rng.gauss(0, 2.0))
    if s.manual:
        s.switch(s.command)
    elif s.level >= s.start_level:
        s.switch(True)
    elif s.level <= s.stop_level:
        s.switch(False)
    outflow = PUMP_CAPACITY if s.running else 0.0
    s.level = min(MAX_LEVEL, max(0.0, s.level + (s.inflow - outflow) * LEVEL_RATE * dt))
    dry = s.level <= DRY_LEVEL
    if s.running:
        s.current = (6.0 if dry else 12.0) + rng.gauss(0, 0.3)
        s.pressure = (0.3 if dry else 2.3 + 0.05 * s.level) + rng.gauss(0, 0.02)
    else:
        s.current = abs(rng.gauss(0, 0.02))
        s.pressure = max(0.0, 0.2 + 0.02 * s.level + rng.gauss(0, 0.01))


def _f32(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def _from_f32(regs: list[int]) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", *regs))[0])


class PumpStation:
    """A running simulated station; make one with ``serve()``."""

    def __init__(
        self, *, host: str, speed: float, unit: int, seed: int | None, counter_start: int
    ) -> None:
        """Build the register blocks; nothing listens until ``start()``."""
        self.host, self.port, self.speed, self.unit = host, 0, speed, unit
        self.state = StationState()
        self.requests = 0  # requests of any kind that reached the datastore
        self.held = 0  # requests waiting while muted
        self._first = counter_start
        self._counter = counter_start
        self._rng = random.Random(seed)  # noise, not a secret
        self._answering = asyncio.Event()
        self._answering.set()
        self._server: ModbusTcpServer | None = None
        self._physics: asyncio.Task[None] | None = None
        model = MODEL.encode().ljust(2 * MODEL_REGS, b"\0")
        inputs = [0] * MODEL_AT + list(struct.unpack(f">{MODEL_REGS}H", model))
        holding = [0, 0, *_f32(self.state.start_level), *_f32(self.state.stop_level)]
        self.device = SimDevice(
            id=unit,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, values=holding, datatype=DataType.REGISTERS)],
                [SimData(0, values=inputs, datatype=DataType.REGISTERS)],
            ),
            action=self._on_request,
        )

    @property
    def served(self) -> int:
        """How many counter values have been served."""
        return self._counter - self._first

    def served_values(self) -> list[int]:
        """Every counter value served, in order (each exactly once)."""
        return list(range(self._first + 1, self._counter + 1))

    def stats(self) -> dict[str, Any]:
        """Return counts for a test or the stats file."""
        s = self.state
        return {
            "served": self.served, "first": self._first + 1, "last": self._counter,
            "requests": self.requests, "pump_starts": s.pump_starts,
            "level": round(s.level, 3), "running": s.running,
        }  # fmt: skip

    def mute(self) -> None:
        """Hold every request from now on without answering (a hung device)."""
        self._answering.clear()

    def unmute(self) -> None:
        """Answer again, including the requests held so far."""
        self._answering.set()

    async def start(self, port: int) -> None:
        """Listen on ``port`` (0: a free one, then in ``self.port``) and start the physics."""
        self._server, self.port = await listen(self.device, self.host, port)
        self._physics = asyncio.create_task(self._run(), name=f"pump_station[{self.port}].physics")

    async def close(self) -> None:
        """Stop listening, drop the connections, stop the physics."""
        if self._physics is not None:
            self._physics.cancel()
            await asyncio.wait({self._physics})
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
        self.unmute()
        while self.held:  # let held requests finish instead of dying with the loop
            await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        """Use as ``async with await serve() as station``."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the station."""
        await self.close()

    async def _run(self) -> None:
        await run_physics(lambda dt: step(self.state, dt, self._rng), lambda: self.speed)

    async def _on_request(
        self, fc: int, _start: int, address: int, count: int, registers: list[int], values: Any
    ) -> ExcCodes | None:
        """Run before pymodbus serves any request; ``registers`` is the whole block.

        Every block starts at address 0, so ``registers[i]`` is address ``i`` (for coils and
        discrete inputs, bit ``i % 16`` of ``registers[i // 16]``).
        """
        self.requests += 1
        if not self._answering.is_set():
            self.held += 1
            try:
                await self._answering.wait()
            finally:
                self.held -= 1
        if fc == 4:
            self._fill_inputs(registers, address, count)
        elif fc == 2:
            registers[0] = int(self.state.running)
        elif values is not None and fc in (5, 15) and address == 0:
            self.state.command = bool(values[0])
            self.state.switch(self.state.command)
        elif values is not None and fc in (6, 16, 22, 23):
            return self._configure(registers, address, values)
        return None

    def _fill_inputs(self, registers: list[int], address: int, count: int) -> None:
        s = self.state
        status = s.running | s.manual << 1 | (s.level >= HIGH_LEVEL) << 2
        now = _f32(s.level) + _f32(s.inflow) + _f32(s.pressure) + _f32(s.current) + [status]
        registers[: len(now)] = now
        if address < COUNTER + 2 and address + count > COUNTER:
            self._counter += 1
            registers[COUNTER : COUNTER + 2] = divmod(self._counter & 0xFFFFFFFF, 0x10000)

    def _configure(self, registers: list[int], address: int, values: list[int]) -> ExcCodes | None:
        new = registers[:6]  # mode, reserved, start level, stop level
        for i, value in enumerate(values):
            if 0 <= address + i < len(new):
                new[address + i] = int(value)
        start_level, stop_level = round(_from_f32(new[2:4]), 2), round(_from_f32(new[4:6]), 2)
        if new[0] not in (0, 1) or not 0 < stop_level < start_level <= MAX_LEVEL:
            return ExcCodes.ILLEGAL_VALUE
        new[2:6] = _f32(start_level) + _f32(stop_level)
        for i in range(len(values)):  # store levels rounded to 1 cm, as a real controller might
            if 0 <= address + i < len(new):
                values[i] = new[address + i]
        self.state.manual = new[0] == 1
        self.state.start_level, self.state.stop_level = start_level, stop_level
        return None


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float = 1.0,
    *,
    unit: int = 1,
    seed: int | None = None,
    counter_start: int = 0,
) -> PumpStation:
    """Start a station on host:port (0: a free port, see ``.port``); close it with ``close()``.

    ``counter_start`` lets a restarted station continue the counter where the last one
    stopped, so values stay unique across restarts.
    """
    station = PumpStation(host=host, speed=speed, unit=unit, seed=seed, counter_start=counter_start)
    await station.start(port)
    return station


def demo_points() -> dict[str, dict[str, Any]]:
    """Return the points of the register map, as ``[devices.NAME.points]`` tables."""

    def f32(address: int, unit: str) -> dict[str, Any]:
        return {"table": "input", "address": address, "dtype": "float32", "unit": unit}

    return {
        "level": f32(0, "m"),
        "inflow": f32(2, "m3/h"),
        "pressure": f32(4, "bar"),
        "pump_current": f32(6, "A"),
        "high_level": {"table": "input", "address": 8, "dtype": "bool", "bit": 2},
        "counter": {"table": "input", "address": COUNTER, "dtype": "uint32"},
        "model": {"table": "input", "address": MODEL_AT, "dtype": "string", "length": MODEL_REGS},
        "pump_running": {"table": "discrete", "address": 0, "dtype": "bool"},
        "pump_cmd": {"table": "coil", "address": 0, "dtype": "bool"},
        "mode": {"table": "holding", "address": 0, "dtype": "uint16"},
        "start_level": {"table": "holding", "address": 2, "dtype": "float32", "unit": "m"},
        "stop_level": {"table": "holding", "address": 4, "dtype": "float32", "unit": "m"},
    }


def demo_device(host: str = "127.0.0.1", port: int = 5020, unit: int = 1) -> dict[str, Any]:
    """Return a whole ``[devices.NAME]`` table for this station, as the TOML loader gives it."""
    return {
        "driver": "modbus", "transport": "tcp", "host": host, "port": port, "unit": unit,
        "poll_interval_s": 1.0, "timeout_s": 1.0, "max_gap": 8,
        "word_order": "big", "byte_order": "big", "points": demo_points(),
    }  # fmt: skip


def demo_toml(name: str = "ps1", host: str = "127.0.0.1", port: int = 5020, unit: int = 1) -> str:
    """``demo_device()`` as site-TOML text, ready to paste under a site file."""

    def line(key: str, value: object) -> str:
        return f"{key} = {json.dumps(value)}"  # JSON scalars are valid TOML scalars

    device = demo_device(host, port, unit)
    points = device.pop("points")
    out = [f"[devices.{name}]", *(line(k, v) for k, v in device.items())]
    for point, table in points.items():
        out += ["", f"[devices.{name}.points.{point}]", *(line(k, v) for k, v in table.items())]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the station until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m cimedge.tools.sim.pump_station", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--speed", type=float, default=1.0, help="physics speed-up; 0 freezes it")
    parser.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed, for repeatable runs")
    parser.add_argument(
        "--counter-start", type=int, default=0, help="counter value before the first served"
    )
    parser.add_argument(
        "--stats-file", type=Path, default=None, help="write stats() here as JSON on exit"
    )
    args = parser.parse_args(argv)

    async def start() -> PumpStation:
        return await serve(args.host, args.port, args.speed, unit=args.unit, seed=args.seed,
                           counter_start=args.counter_start)  # fmt: skip

    asyncio.run(run_until_signalled(start, args.stats_file))


if __name__ == "__main__":
    main()
