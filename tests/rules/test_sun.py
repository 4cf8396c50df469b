"""Sunrise and sunset: NOAA equations against published times, tables, schedules round midnight."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from cimedge.edge import sun
from cimedge.edge.rules.kinds import Step
from cimedge.edge.rules.schedule import Timetable

S = 1_000_000_000


def ns(t: dt.datetime) -> int:
    return int(t.timestamp()) * S + t.microsecond * 1000


@pytest.mark.parametrize(("lat", "lon", "tz", "day", "rise", "sset"), [
    # published almanac times (timeanddate.com / NOAA), rounded to the minute
    (39.9042, 116.4074, "Asia/Shanghai", dt.date(2024, 6, 21), "04:46", "19:46"),
    (-33.8688, 151.2093, "Australia/Sydney", dt.date(2024, 12, 21), "05:41", "20:05"),
    (40.7128, -74.0060, "America/New_York", dt.date(2024, 3, 20), "06:58", "19:09"),
])
def test_noaa_equations_match_published_times(lat, lon, tz, day, rise, sset):
    r, s = sun.sun_times(day, lat, lon)
    zone = zoneinfo.ZoneInfo(tz)
    for got, want in ((r, rise), (s, sset)):
        local = got.astimezone(zone)
        wanted = local.replace(hour=int(want[:2]), minute=int(want[3:]), second=30)
        assert abs((local - wanted).total_seconds()) <= 90, (got, want)


def test_polar_day_and_night_keep_sunrise_before_sunset():
    for day in (dt.date(2024, 6, 21), dt.date(2024, 12, 21)):
        r, s = sun.sun_times(day, 78.2, 15.6)  # Longyearbyen
        assert r < s


def test_table_interpolates_and_wraps_round_the_year():
    rows = sun.parse_table({"01-01": ["07:00", "17:00"], "07-01": ["05:00", "19:00"]})
    assert sun.table_times(rows, dt.date(2025, 1, 1)) == (420.0, 1020.0)
    mid_rise, _ = sun.table_times(rows, dt.date(2025, 4, 1))
    assert 300 < mid_rise < 420
    late_rise, _ = sun.table_times(rows, dt.date(2025, 12, 31))  # between 07-01 and next 01-01
    assert 415 < late_rise < 420


@pytest.mark.parametrize(("table", "reason"), [
    ({"13-01": ["07:00", "17:00"]}, "not a day"),
    ({"01-01": ["7", "17:00"]}, "not HH:MM"),
    ({"01-01": ["18:00", "17:00"]}, "not before sunset"),
])
def test_bad_tables_are_refused(table, reason):
    with pytest.raises(ValueError, match=reason):
        sun.parse_table(table)


def test_timetable_switches_at_computed_sunset_and_sunrise_with_offsets():
    where = sun.Location(lat=31.2304, lon=121.4737, timezone="Asia/Shanghai")
    tt = Timetable([Step("sunset+10m", 100), Step("23:30", 50), Step("sunrise-5m", 0)], where)
    zone = zoneinfo.ZoneInfo("Asia/Shanghai")
    day = dt.date(2026, 3, 1)
    rise, sset = sun.sun_times(day, 31.2304, 121.4737)
    on_ns = ns(sset + dt.timedelta(minutes=10))
    assert tt.level_at(on_ns - S) == 0 and tt.level_at(on_ns) == 100
    half = int(dt.datetime(2026, 3, 1, 23, 30, tzinfo=zone).timestamp()) * S
    assert tt.level_at(half - S) == 100 and tt.level_at(half) == 50
    rise2, _ = sun.sun_times(day + dt.timedelta(days=1), 31.2304, 121.4737)
    off_ns = ns(rise2 - dt.timedelta(minutes=5))
    assert tt.level_at(off_ns - S) == 50 and tt.level_at(off_ns) == 0
    assert tt.next_change(half) == off_ns
    assert rise < sset


def test_sun_steps_need_a_place():
    with pytest.raises(ValueError, match="lat and lon"):
        Timetable([Step("sunset", 100)], sun.Location())
    Timetable([Step("18:00", 100)], sun.Location())  # a clock timetable needs none
