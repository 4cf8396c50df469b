"""The last value a station reported for each point, for drivers whose devices push their data.

HJ 212 and SL 651 stations report when they choose, and IEC 104 sends spontaneous data:
between reports ``read()`` hands the scheduler the last value heard, stamped when it was
measured, GOOD (or the quality the station gave it) while younger than the point's
``stale_after_s``, then STALE with the same value, COMM with no value if none was ever heard.
"""

from __future__ import annotations

import time

from cimedge.drivers.health import HealthBook
from cimedge.edge.errors import DriverError
from cimedge.edge.model import Quality, Reading, Value

_NS = 1_000_000_000
# How far past a "nothing yet" reading a value stamped before it is moved: 1 ms, so the two
# stay apart in SenML's float seconds (about 0.24 us resolution at today's Unix times).
FLOOR_STEP_NS = 1_000_000


class Latest:
    """Per point: (value, measured at, quality, heard at); and the health of the link."""

    def __init__(self, device: str, stale_after_s: dict[str, float], offline_after: int) -> None:
        """``stale_after_s`` names every point, in config order, with its freshness limit."""
        self.device = device
        self.stale_ns = {name: int(s * _NS) for name, s in stale_after_s.items()}
        self.values: dict[str, tuple[Value, int, Quality, int]] = {}
        self.book = HealthBook(offline_after)
        self.heard = 0  # reports taken since the last read
        self.why_not = ""  # the link's own trouble (not listening, not connected), for health
        # After a "nothing heard yet" reading stamped now, the point's first value may carry
        # an earlier time (stations stamp in whole seconds or minutes): it is moved just past
        # it (FLOOR_STEP_NS), so a point's readings never go back in time.
        self._floor: dict[str, int] = {}
        self._measured: dict[str, int] = {}  # the station's own time of the value held

    def put(self, name: str, value: Value, ts_ns: int, quality: Quality = Quality.GOOD) -> None:
        """A value for point ``name`` measured at ``ts_ns``; an older one than held is kept out."""
        if self._measured.get(name, ts_ns) > ts_ns:
            return  # a late history report must not replace a newer value
        self._measured[name] = ts_ns
        self.values[name] = (value, max(ts_ns, self._floor.get(name, 0)), quality, time.time_ns())

    def readings(self) -> list[Reading]:
        """One Reading per point, in config order; settles health for this poll."""
        now = time.time_ns()
        out: list[Reading] = []
        fresh = 0
        for name, stale in self.stale_ns.items():
            point = f"{self.device}.{name}"
            held = self.values.get(name)
            if held is None:
                out.append(Reading(point, now, None, Quality.COMM))
                self._floor[name] = now + FLOOR_STEP_NS
                continue
            value, ts, quality, heard = held
            if now - heard > stale:
                out.append(Reading(point, ts, value, Quality.STALE))
                continue
            fresh += 1
            out.append(Reading(point, ts, value, quality))
        missing = len(self.stale_ns) - fresh
        error = None
        if missing:
            why = self.why_not or "no fresh report"
            error = DriverError(f"{self.device}: {missing} of {len(self.stale_ns)} points "
                                f"without a fresh value ({why})")
        self.book.settle(fresh + self.heard, error)
        self.heard = 0
        return out
