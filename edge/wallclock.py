"""Wall-clock watch: a step (NTP correction) or an RTC reset to 1970 is reported, not believed.

Polls are scheduled on the monotonic clock; readings carry wall time. Each tick compares
the two: a jump in their difference is a step, reported as a raise-and-clear pair of
events (rule ``clock_step``, value = the step in seconds). A wall clock before
``FLOOR_NS`` cannot be right; while it reads so, readings are stamped with the last good
wall time carried forward on the monotonic clock, and rule ``clock_invalid`` is raised
until the clock is sane again. Data is never reordered: the buffer sends in commit order.
"""

from __future__ import annotations

import msgspec

from cimedge.edge.model import Event, Reading

FLOOR_NS = 1_735_689_600 * 10**9  # 2025-01-01T00:00:00Z: no reading of ours is older
POINT = "gateway.clock"


class WallClock:
    """Tracks wall minus monotonic time; pure: both clocks are passed in."""

    def __init__(self, step_s: float = 2.0) -> None:
        self.step_ns = int(step_s * 1e9)
        self.offset_ns: int | None = None  # wall - monotonic, last time the wall clock was sane
        self.invalid = False
        self.steps = 0

    def carried_ns(self, mono_ns: int) -> int | None:
        """The last good wall time carried forward on the monotonic clock (None: never good)."""
        return None if self.offset_ns is None else mono_ns + self.offset_ns

    def fix(self, readings: list[Reading], mono_ns: int) -> list[Reading]:
        """Readings stamped before FLOOR_NS get the carried time instead.

        Per reading, not per tick: a driver may stamp a reading just before the clock
        comes right (or goes wrong), and a sane stamp must never be shifted.
        """
        good = self.carried_ns(mono_ns)
        if good is None or all(r.ts_ns >= FLOOR_NS for r in readings):
            return readings
        return [msgspec.structs.replace(r, ts_ns=good) if r.ts_ns < FLOOR_NS else r
                for r in readings]

    def check(self, wall_ns: int, mono_ns: int) -> list[Event]:
        """The clock events of this tick (none, a step, or clock_invalid raise/clear)."""
        if wall_ns < FLOOR_NS:
            good = self.carried_ns(mono_ns)
            if good is None or self.invalid:
                return []  # never saw a good time, or already reported
            self.invalid = True
            return [Event(good, POINT, "raise", "clock_invalid",
                          f"wall clock reads {wall_ns / 1e9:.0f} s since 1970; "
                          "using carried time", None)]
        events: list[Event] = []
        offset = wall_ns - mono_ns
        if self.invalid:
            self.invalid = False
            events.append(Event(wall_ns, POINT, "clear", "clock_invalid", "wall clock sane again",
                                None))
        elif self.offset_ns is not None and abs(offset - self.offset_ns) > self.step_ns:
            step = (offset - self.offset_ns) / 1e9
            self.steps += 1
            msg = f"wall clock stepped by {step:+.3f} s"
            events += [Event(wall_ns, POINT, "raise", "clock_step", msg, step),
                       Event(wall_ns, POINT, "clear", "clock_step", msg, step)]
        self.offset_ns = offset
        return events
