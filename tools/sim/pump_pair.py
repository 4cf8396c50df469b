"""A pump station with duty and standby pumps: tools/sim/pump_station.py plus a second pump.

The wet well, inflow and pump 1 are the pump-station simulator's, unchanged (its own
physics frozen at speed 0 and stepped from here); pump 2 is a separate Modbus slave
(coil 0 ``pump_cmd``; input float32 0 ``pump_current`` A; input register 2 bit 0
``pump_running``) that drains the same well at the same rate. For the gateway to drive
pump 1, holding register 0 of the station must be 1 (manual: the pump follows coil 0).

``step(dt)`` advances both with the well shared; ``serve(speed=...)`` runs that every
50 ms of wall time; speed 0 leaves the stepping to a test.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, ClassVar, Self

from cimedge.tools.sim import pump_station
from cimedge.tools.sim.modbus_server import run_physics
from cimedge.tools.sim.plant import Plant


class StandbyPump(Plant):
    """The second pump; its current says whether it pumps water or runs dry."""

    INPUTS: ClassVar[dict[str, str]] = {"pump_current": "A"}
    BITS = ("pump_running",)
    COILS = ("pump_cmd",)
    starts = 0

    def run(self, dt: float, level: float) -> None:
        on = self.coil["pump_cmd"]
        if on and not self.bit["pump_running"]:
            self.starts += 1
        self.bit["pump_running"] = on
        dry = level <= pump_station.DRY_LEVEL
        self.value["pump_current"] = ((6.0 if dry else 12.0) + self.rng.gauss(0, 0.3)) if on \
            else abs(self.rng.gauss(0, 0.02))


class PumpPair:
    """The station (``station``, pump 1) and ``standby`` (pump 2) over one wet well."""

    def __init__(self, speed: float = 1.0, seed: int | None = None) -> None:
        self.speed = speed
        self.rng = random.Random(seed)  # noise, not a secret
        self.station: pump_station.PumpStation | None = None
        self.standby = StandbyPump(speed=0, seed=seed)
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> pump_station.StationState:
        assert self.station is not None
        return self.station.state

    def step(self, dt: float) -> None:
        """Advance the well and both pumps by ``dt`` simulated seconds."""
        s = self.state
        pump_station.step(s, dt, self.rng)
        if self.standby.coil["pump_cmd"]:
            drain = pump_station.PUMP_CAPACITY * pump_station.LEVEL_RATE * dt
            s.level = max(0.0, s.level - drain)
        self.standby.run(dt, s.level)

    def stats(self) -> dict[str, Any]:
        s = self.state
        return {"level": round(s.level, 3), "pump1": s.running, "pump2": self.standby.coil[
            "pump_cmd"], "pump1_starts": s.pump_starts, "pump2_starts": self.standby.starts}

    async def start(self) -> Self:
        self.station = await pump_station.serve(port=0, speed=0)
        await self.standby.start(0)
        self._task = asyncio.create_task(self._run(), name="pump_pair.physics")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        await self.standby.close()
        if self.station is not None:
            await self.station.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        await run_physics(self.step, lambda: self.speed)


async def serve(speed: float = 1.0, seed: int | None = None) -> PumpPair:
    """Both slaves listening on free ports: ``.station.port`` and ``.standby.port``."""
    return await PumpPair(speed, seed).start()
