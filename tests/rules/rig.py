"""A site on its simulator with the gateway's control on a hand-moved clock; no broker at all.

The rig is the daemon's poll tick made explicit: advance the clock, step the simulator's
physics, read every device through the real Modbus driver, stamp the readings with the
rig's clock, ``Controller.tick``, commit, then ``Controller.step`` (timers and actions,
writes through the real driver with read-back) and commit. Hours of site time run in
seconds, and the order of events is exactly what the daemon's would be.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from cimedge import drivers
from cimedge.edge import config, sites
from cimedge.edge.clock import ManualClock
from cimedge.edge.control import Controller
from cimedge.edge.model import Event, Reading
from cimedge.edge.store import Store

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


class Rig:
    """``await Rig(...).open()``; ``await rig.run(seconds, dt)``; ``await rig.close()``."""

    def __init__(self, tmp: Path, site_type: str, values: dict[str, Any],
                 physics: Callable[[float], None], *, start_ns: int = T0,
                 extra_toml: str = "") -> None:
        self.tmp, self.physics = tmp, physics
        text = sites.render(site_type, {"broker": "mqtt://127.0.0.1:1", **values}) + extra_toml
        (tmp / "site.toml").write_text(text)
        self.site = config.load(tmp / "site.toml")
        self.clock = ManualClock(start_ns)
        self.events: list[Event] = []  # every committed event, in commit order
        self.last: dict[str, Reading] = {}
        self.seen: dict[int, dict[str, Any]] = {}  # poll time -> every value that poll read
        self.trace: list[tuple[int, dict[str, Any]]] = []  # (t, watch()) after every step
        self.watch: Callable[[], dict[str, Any]] = dict
        self.store: Store | None = None
        self.control: Controller | None = None
        self.drivers: dict[str, Any] = {}

    async def open(self) -> Rig:
        self.store = await Store(self.tmp / "buffer.sqlite").__aenter__()
        for name, dev in self.site.devices.items():
            drv = drivers.load(dev.driver).Driver(name, dev.config)
            self.drivers[name] = await drv.__aenter__()
        self.control = await Controller.open(self.site, self.drivers, self.store,
                                             clock=self.clock)
        return self

    async def close(self) -> None:
        for drv in self.drivers.values():
            await drv.__aexit__(None, None, None)
        self.drivers.clear()
        if self.store is not None:
            await self.store.__aexit__(None, None, None)
            self.store = None

    async def restart(self) -> None:
        """Stop the gateway and start a new one on the same buffer (a restart)."""
        await self.close()
        await self.open()

    async def poll(self) -> None:
        """One poll of every device, then one control step, both committed."""
        assert self.control is not None and self.store is not None
        now = self.clock()
        for drv in self.drivers.values():
            readings = [msgspec.structs.replace(r, ts_ns=now) for r in await drv.read()]
            for r in readings:
                self.last[r.point] = r
                self.seen.setdefault(now, {})[r.point] = r.value
            tick = self.control.tick(readings)
            await self.store.append(tick.readings, tick.events, tick.alarms, state=tick.state)
            self.events += tick.events
        step = await self.control.step()
        await self.control.commit(step)
        self.events += step.events

    async def run(self, seconds: float, dt: float = 1.0) -> None:
        """``seconds`` of site time in steps of ``dt``: physics, then a poll."""
        for _ in range(round(seconds / dt)):
            self.clock.advance(dt)
            self.physics(dt)
            await self.poll()
            self.trace.append((self.clock(), self.watch()))

    def value(self, point: str) -> Any:
        return self.last[point].value

    def stored_events(self) -> list[tuple[str, str, str]]:
        """(kind, rule, msg) of every event in the buffer, in id order."""
        with sqlite3.connect(self.tmp / "buffer.sqlite") as db:
            return list(db.execute("SELECT kind, rule, msg FROM events ORDER BY id"))

    def kinds(self, rule: str) -> list[str]:
        return [e.kind for e in self.events if e.rule == rule]
