"""Wall-clock watch: steps and an RTC reset are reported; readings keep a sane time."""

from __future__ import annotations

from cimedge.edge.model import Reading
from cimedge.edge.wallclock import FLOOR_NS, WallClock

S = 10**9
WALL = FLOOR_NS + 100 * 86400 * S


def test_steady_clock_reports_nothing():
    c = WallClock()
    for i in range(10):
        assert c.check(WALL + i * S, 1000 * S + i * S) == []


def test_a_step_is_one_raise_and_clear_with_its_size():
    c = WallClock()
    c.check(WALL, 1000 * S)
    events = c.check(WALL + 1 * S - 30 * S, 1001 * S)  # NTP pulled it back 30 s
    assert [(e.kind, e.rule) for e in events] == [("raise", "clock_step"), ("clear", "clock_step")]
    assert events[0].value == -30.0 and "-30.000 s" in events[0].msg
    assert c.check(WALL + 2 * S - 30 * S, 1002 * S) == [], "the new offset is the norm"


def test_rtc_reset_to_1970_is_carried_forward_and_cleared_when_sane():
    c = WallClock()
    c.check(WALL, 1000 * S)
    events = c.check(5 * S, 1010 * S)  # the RTC lost its battery: 1970
    assert [(e.kind, e.rule) for e in events] == [("raise", "clock_invalid")]
    assert events[0].ts_ns == WALL + 10 * S
    fixed = c.fix([Reading("d.p", 5 * S, 1.0)], 1010 * S)
    assert fixed[0].ts_ns == WALL + 10 * S, "readings get the last good time carried forward"
    assert c.check(6 * S, 1011 * S) == [], "reported once"
    events = c.check(WALL + 12 * S, 1012 * S)
    assert [(e.kind, e.rule) for e in events] == [("clear", "clock_invalid")]


def test_fix_touches_only_readings_stamped_before_the_floor():
    """A tick straddling the moment the clock comes right: each reading judged alone."""
    c = WallClock()
    c.check(WALL, 1000 * S)
    sane, bad = Reading("d.a", WALL + 5 * S, 1.0), Reading("d.b", 7 * S, 2.0)
    assert c.fix([sane, bad], 1005 * S) == [sane, Reading("d.b", WALL + 5 * S, 2.0)]
    assert c.fix([sane], 1005 * S) == [sane]


def test_insane_clock_from_boot_has_nothing_to_carry():
    c = WallClock()
    assert c.check(5 * S, 1 * S) == []
    r = [Reading("d.p", 5 * S, 1.0)]
    assert c.fix(r, 1 * S) == r
