"""The poll scheduler: each device on a monotonic timetable, on its period's beat."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import msgspec
from cimedge.edge.errors import StoreError
from cimedge.edge.model import Reading
from cimedge.edge.control import Controller
from cimedge.edge.store import Store
from cimedge.edge.wallclock import WallClock
from cimedge.stop import reraise_cancelled

log = logging.getLogger(__name__)


class PollStats(msgspec.Struct):
    """Counters the status shows: ticks that could not be committed, and their readings."""

    ticks: int = 0
    uncommitted_ticks: int = 0
    uncommitted_readings: int = 0
    store_error: str = ""


async def poll_device(name: str, driver: object, period_s: float, store: Store,
                      control: Controller, last: dict[str, Reading], on_commit: Callable[[], None],
                      clock: WallClock | None = None, stats: PollStats | None = None) -> None:
    """Read ``driver`` every ``period_s`` seconds, evaluate rules, commit the tick.

    Rules see every reading; the store keeps those report-by-exception lets through
    (edge/rbe.py). The control task makes the writes the rules call for (edge/control.py).

    The timetable is kept on the monotonic clock, so a wall-clock step neither bunches nor
    skips polls; after the first poll (at once) polls fall on the period's beat, so devices
    of one period poll together and share a commit; a late tick is not made up for (ticks
    are skipped, never queued). A tick
    the store cannot take (disk full, read-only) is counted and reported; polling and rules
    go on, and the next tick tries the store again.
    """
    loop = asyncio.get_running_loop()
    clock = clock or WallClock()
    stats = stats or PollStats()
    next_at = None
    while True:
        readings = await driver.read()  # type: ignore[attr-defined]
        reraise_cancelled()  # a driver's library may have swallowed it: see cimedge.stop
        mono = time.monotonic_ns()
        clock_events = clock.check(time.time_ns(), mono)
        readings = clock.fix(readings, mono)
        tick = control.tick(readings)
        events = clock_events + tick.events
        stats.ticks += 1
        try:
            await store.append(tick.readings, events, tick.alarms, state=tick.state)
            stats.store_error = ""
        except StoreError as e:
            stats.uncommitted_ticks += 1
            stats.uncommitted_readings += len(readings)
            if not stats.store_error:
                log.error("poll of %s not committed: %s", name, e)
            stats.store_error = str(e)
        for r in readings:
            last[r.point] = r
        for e in events:
            log.warning("%s %s: %s", e.kind, e.rule, e.msg)
        on_commit()
        now = loop.time()
        if next_at is None or next_at + period_s < now:
            # First poll done (at once, at start), or overran: from the next beat on the
            # period's grid, not in a burst to catch up. Devices of one period then poll on
            # the same beat, so their ticks share a commit (edge/store.py: group commit).
            next_at = math.ceil(now / period_s) * period_s
        else:
            next_at += period_s
        await asyncio.sleep(next_at - now)
