"""A schedule's switching times resolved for a site and day: the level in force at a given time.

A step's ``at`` is a local time of day ("23:00") or sunrise/sunset with an offset
("sunset+15m"), computed for ``[site]`` lat/lon or read from its sun table. The level in
force is that of the latest step at or before now, looking back over the two previous days,
so a schedule wraps round midnight naturally.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence

from cimedge.edge import sun
from cimedge.edge.rules.kinds import AT, Step

_UNIT_S = {"s": 1, "m": 60, "h": 3600}
_NS = 1_000_000_000


class Timetable:
    """The switching times of one schedule; ``level_at(now_ns)`` is pure apart from a cache."""

    def __init__(self, steps: Sequence[Step], where: sun.Location) -> None:
        self.where = where
        self.tz = zoneinfo.ZoneInfo(where.timezone)
        self.table = sun.parse_table(where.sun_table) if where.sun_table else None
        self.steps: list[tuple[str, int, float]] = []  # (anchor, seconds, level)
        for step in steps:
            m = AT.match(step.at)
            if m is None:
                raise ValueError(f"{step.at!r} is not a switching time")
            if m.group(1):
                off = int(m.group(3) or 0) * _UNIT_S[m.group(4) or "s"]
                self.steps.append((m.group(1), -off if m.group(2) == "-" else off, step.level))
            else:
                self.steps.append(("clock", int(m.group(5)) * 3600 + int(m.group(6)) * 60,
                                   step.level))
        if any(a != "clock" for a, _, _ in self.steps) and not where.has_sun():
            raise ValueError("sunrise/sunset needs [site] lat and lon, or a sun_table")
        self._days: dict[dt.date, list[tuple[int, float]]] = {}

    def _sun(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        if self.table is not None:
            rise, sset = sun.table_times(self.table, day)
            midnight = dt.datetime(day.year, day.month, day.day, tzinfo=self.tz)
            return (midnight + dt.timedelta(minutes=rise), midnight + dt.timedelta(minutes=sset))
        assert self.where.lat is not None and self.where.lon is not None
        return sun.sun_times(day, self.where.lat, self.where.lon)

    def day(self, day: dt.date) -> list[tuple[int, float]]:
        """(switching time in ns since the epoch, level) of each step on local date ``day``."""
        got = self._days.get(day)
        if got is None:
            rise_set = self._sun(day) if any(a != "clock" for a, _, _ in self.steps) else None
            got = []
            for anchor, secs, level in self.steps:
                if anchor == "clock":
                    base = dt.datetime(day.year, day.month, day.day, tzinfo=self.tz)
                    at = base + dt.timedelta(seconds=secs)  # wall-clock arithmetic: 23:00 is 23:00
                else:
                    assert rise_set is not None
                    at = rise_set[anchor == "sunset"] + dt.timedelta(seconds=secs)
                got.append((int(at.timestamp()) * _NS + at.microsecond * 1000, level))
            if len(self._days) > 8:
                self._days.clear()
            self._days[day] = got
        return got

    def _around(self, now_ns: int) -> list[tuple[int, float]]:
        today = dt.datetime.fromtimestamp(now_ns / _NS, self.tz).date()
        out: list[tuple[int, float]] = []
        for back in (2, 1, 0, -1):
            out += self.day(today - dt.timedelta(days=back))
        out.sort(key=lambda e: e[0])
        return out

    def level_at(self, now_ns: int) -> float:
        """The level in force at ``now_ns``."""
        level = 0.0
        for at, lv in self._around(now_ns):
            if at > now_ns:
                break
            level = lv
        return level

    def next_change(self, now_ns: int) -> int | None:
        """When the level next changes after ``now_ns`` (within a day), or None."""
        current = self.level_at(now_ns)
        for at, lv in self._around(now_ns):
            if at > now_ns and lv != current:
                return at
        return None
