"""Where the control side gets the time: the system clock, or a hand-moved one for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from cimedge.edge.wallclock import FLOOR_NS, WallClock

Clock = Callable[[], int]  # wall-clock time, ns since the Unix epoch


class ManualClock:
    """A clock that moves only when told: scenario tests run hours of schedule in milliseconds."""

    def __init__(self, start_ns: int) -> None:
        self.ns = start_ns

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> int:
        self.ns += int(seconds * 1e9)
        return self.ns


def carried(watch: WallClock) -> Clock:
    """The system clock, or, while it reads before 2025 (an RTC reset), the time the poller's
    wall-clock watch carries forward on the monotonic clock, as its readings are stamped."""

    def now() -> int:
        wall = time.time_ns()
        if wall < FLOOR_NS and watch.offset_ns is not None:
            return time.monotonic_ns() + watch.offset_ns
        return wall

    return now
