"""Sunrise and sunset for a site: NOAA's solar equations, or a table of local times; no clock reads.

The equations are those of NOAA's solar calculator (Meeus, "Astronomical Algorithms"):
accurate to about a minute between the polar circles, which is far finer than any lamp
needs. Sunrise and sunset are when the sun's centre is 0.833 degrees below the horizon
(refraction plus the sun's radius). Past the polar circles, a day without sunrise gives
sunrise and sunset a minute apart round solar noon (the lamp stays on but for that
minute) and a day without sunset puts them a minute apart round solar midnight.

A table (``[site.sun_table]``, "MM-DD" = ["HH:MM", "HH:MM"] in local time) is for a city
that publishes its own lighting timetable: days between entries are interpolated
linearly, wrapping round the year.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Mapping
from typing import Annotated

import msgspec

_ZENITH = math.radians(90.833)
_J2000 = 2451545.0
_UNIX_EPOCH_JD = 2440587.5
_HA_MIN, _HA_MAX = 0.125, 179.875  # degrees of hour angle: half a minute from 0 and 12 hours


def _julian_day(day: dt.date, minutes_utc: float) -> float:
    return _UNIX_EPOCH_JD + (day - dt.date(1970, 1, 1)).days + minutes_utc / 1440.0


def _solar(jd: float) -> tuple[float, float]:
    """Declination (radians) and the equation of time (minutes) at Julian day ``jd``."""
    t = (jd - _J2000) / 36525.0
    l0 = math.radians((280.46646 + t * (36000.76983 + t * 0.0003032)) % 360.0)
    m = math.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
    e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    c = (math.sin(m) * (1.914602 - t * (0.004817 + 0.000014 * t))
         + math.sin(2 * m) * (0.019993 - 0.000101 * t) + math.sin(3 * m) * 0.000289)
    omega = math.radians(125.04 - 1934.136 * t)
    app_long = math.radians(math.degrees(l0) + c - 0.00569 - 0.00478 * math.sin(omega))
    eps0 = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
    eps = math.radians(eps0 + 0.00256 * math.cos(omega))
    decl = math.asin(math.sin(eps) * math.sin(app_long))
    y = math.tan(eps / 2) ** 2
    eqtime = 4 * math.degrees(
        y * math.sin(2 * l0) - 2 * e * math.sin(m) + 4 * e * y * math.sin(m) * math.cos(2 * l0)
        - 0.5 * y * y * math.sin(4 * l0) - 1.25 * e * e * math.sin(2 * m))
    return decl, eqtime


def _event(day: dt.date, lat: float, lon: float, sign: int, guess: float) -> float:
    """Minutes after 00:00 UTC of ``day`` of sunrise (sign -1) or sunset (sign +1)."""
    minutes = guess
    phi = math.radians(lat)
    for _ in range(2):  # the second pass takes the sun's position at the event, not at noon
        decl, eqtime = _solar(_julian_day(day, minutes))
        cos_ha = (math.cos(_ZENITH) / (math.cos(phi) * math.cos(decl))
                  - math.tan(phi) * math.tan(decl))
        # clamped half a minute short of the poles' whole day or night, so sunrise and
        # sunset never coincide and a schedule's order of events stays the same
        ha = min(_HA_MAX, max(_HA_MIN, math.degrees(math.acos(min(1.0, max(-1.0, cos_ha))))))
        minutes = 720 - 4 * lon - eqtime + sign * 4 * ha
    return minutes


def sun_times(day: dt.date, lat: float, lon: float) -> tuple[dt.datetime, dt.datetime]:
    """Sunrise and sunset (aware, UTC) of the local solar day ``day`` at lat, lon (east +)."""
    noon = 720 - 4 * lon
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    rise = _event(day, lat, lon, -1, noon - 360)
    sset = _event(day, lat, lon, +1, noon + 360)
    return start + dt.timedelta(minutes=rise), start + dt.timedelta(minutes=sset)


def _hhmm(text: str) -> int:
    """Minutes after midnight of "HH:MM"; ValueError when it is not one."""
    h, sep, m = text.partition(":")
    if not sep or not (h.isdigit() and m.isdigit() and len(m) == 2):
        raise ValueError(f"{text!r} is not HH:MM")
    if int(h) > 23 or int(m) > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return int(h) * 60 + int(m)


def parse_table(table: Mapping[str, list[str]]) -> list[tuple[int, int, int]]:
    """A sun table as sorted (day of a leap year, sunrise minutes, sunset minutes).

    Raises ValueError naming the bad entry.
    """
    rows = []
    for key, value in table.items():
        try:
            day = dt.date(2000, int(key[:2]), int(key[3:])) if len(key) == 5 and key[2] == "-" \
                else None
        except ValueError:
            day = None
        if day is None:
            raise ValueError(f"{key!r} is not a day as MM-DD")
        if len(value) != 2:
            raise ValueError(f"{key}: give [sunrise, sunset] as two \"HH:MM\" times")
        rise, sset = _hhmm(value[0]), _hhmm(value[1])
        if rise >= sset:
            raise ValueError(f"{key}: sunrise {value[0]} is not before sunset {value[1]}")
        rows.append((day.timetuple().tm_yday, rise, sset))
    if not rows:
        raise ValueError("the table is empty")
    return sorted(rows)


def table_times(rows: list[tuple[int, int, int]], day: dt.date) -> tuple[float, float]:
    """Local sunrise and sunset (minutes after midnight) for ``day``, interpolated."""
    yday = dt.date(2000, day.month, day.day).timetuple().tm_yday  # leap-year numbering
    before = max((r for r in rows if r[0] <= yday), default=None, key=lambda r: r[0])
    after = min((r for r in rows if r[0] > yday), default=None, key=lambda r: r[0])
    if before is None:
        before = (rows[-1][0] - 366, *rows[-1][1:])
    if after is None:
        after = (rows[0][0] + 366, *rows[0][1:])
    if before[0] == yday or after[0] == before[0]:
        return float(before[1]), float(before[2])
    f = (yday - before[0]) / (after[0] - before[0])
    return (before[1] + f * (after[1] - before[1]), before[2] + f * (after[2] - before[2]))


class Location(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The ``[site]`` table: where the site is, its time zone, and optionally a sun table."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    timezone: str = "UTC"
    sun_table: dict[str, list[str]] = {}

    def problem(self) -> tuple[str, str] | None:
        """The first thing wrong, as (key, reason), or None."""
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return "timezone", f"{self.timezone!r} is not a time zone name (as Asia/Shanghai)"
        if (self.lat is None) != (self.lon is None):
            return "lat" if self.lat is None else "lon", "give both lat and lon"
        if self.sun_table:
            try:
                parse_table(self.sun_table)
            except ValueError as e:
                return "sun_table", str(e)
        return None

    def has_sun(self) -> bool:
        return bool(self.sun_table) or self.lat is not None
