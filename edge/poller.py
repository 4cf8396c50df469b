"""The poll scheduler: each device on its own monotonic timetable, one store commit per tick."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec
from edge.errors import StoreError
from edge.model import Reading
from edge.control import Controller
from edge.store import Store
from edge.wallclock import WallClock

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
    skips polls; a late tick is not made up for (ticks are skipped, never queued). A tick
    the store cannot take (disk full, read-only) is counted and reported; polling and rules
    go on, and the next tick tries the store again.
    """
    loop = asyncio.get_running_loop()
    clock = clock or WallClock()
    stats = stats or PollStats()
    next_at = loop.time()
    while True:
        readings = await driver.read()  # type: ignore[attr-defined]
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
        next_at += period_s
        now = loop.time()
        if next_at < now:  # overran: start again from now instead of bursting to catch up
            next_at = now
        await asyncio.sleep(next_at - now)
