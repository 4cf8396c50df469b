"""Each rule kind on hand-made readings and times; the alarm lifecycle; state across a restart."""

from __future__ import annotations

import pytest

from cimedge.edge.model import Quality, Reading
from cimedge.edge.rules import (
    AllOf,
    AnyOf,
    Rate,
    Rules,
    Schedule,
    Stale,
    State,
    Step,
    ThresholdHigh,
    ThresholdLow,
)
from cimedge.edge.sun import Location

S = 1_000_000_000
T0 = 1_767_225_600 * S


def feed(rules: Rules, point: str, values: list[object], dt: float = 1.0,
         t0: int = T0) -> list[tuple[float, str, str]]:
    """(seconds from t0, kind, rule) of every event, one reading per ``dt`` seconds."""
    out = []
    for i, v in enumerate(values):
        now = t0 + int(i * dt * S)
        q = Quality.GOOD if v is not None else Quality.COMM
        events, _ = rules.evaluate([Reading(point, now, v, q)], now)
        out += [((e.ts_ns - t0) / S, e.kind, e.rule) for e in events]
    return out


def test_deadband_is_the_distance_back_past_on():
    rules = Rules({"hot": ThresholdHigh(point="d.t", on=45.0, deadband=5.0)})
    got = feed(rules, "d.t", [40, 45, 41, 40.1, 40.0, 46])
    assert got == [(1, "raise", "hot"), (4, "clear", "hot"), (5, "raise", "hot")]


def test_low_threshold_with_deadband():
    rules = Rules({"cold": ThresholdLow(point="d.t", on=2.0, deadband=1.0)})
    assert feed(rules, "d.t", [5, 2, 2.9, 3.0]) == [(1, "raise", "cold"), (3, "clear", "cold")]


def test_on_delay_needs_the_condition_to_hold():
    rules = Rules({"hot": ThresholdHigh(point="d.t", on=10, off=8, on_delay_s=3)})
    # over the limit for 2 s (a blip), then for good from t=4
    got = feed(rules, "d.t", [0, 11, 12, 5, 11, 11, 11, 11, 11])
    assert got == [(7, "raise", "hot")]


def test_off_delay_holds_the_state():
    rules = Rules({"hot": ThresholdHigh(point="d.t", on=10, off=8, off_delay_s=2)})
    got = feed(rules, "d.t", [11, 5, 11, 5, 5, 5, 5])
    assert got == [(0, "raise", "hot"), (5, "clear", "hot")]


def test_delays_run_on_ticks_without_readings():
    rules = Rules({"hot": ThresholdHigh(point="d.t", on=10, off=8, on_delay_s=5)})
    rules.evaluate([Reading("d.t", T0, 12.0)], T0)
    assert rules.tick(T0 + 4 * S)[0] == []
    assert rules.next_timer() == T0 + 5 * S
    events, changed = rules.tick(T0 + 5 * S)
    assert [e.kind for e in events] == ["raise"] and changed == {"hot": (True, T0 + 5 * S)}


def test_rate_of_change_over_a_window():
    rules = Rules({"fast": Rate(point="d.l", window_s=10, rise=1.0, fall=2.0)})
    slow = [0.05 * i for i in range(20)]  # 0.5 per 10 s: never
    assert feed(rules, "d.l", slow) == []
    rules = Rules({"fast": Rate(point="d.l", window_s=10, rise=1.0, fall=2.0)})
    got = feed(rules, "d.l", [0, 0.2, 0.5, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1,
                              1.1, 1.1, -1.0])
    # +1.1 over 3 s raises; when the start drops out of the 10 s window it clears; -2.1 raises
    assert got == [(3, "raise", "fast"), (11, "clear", "fast"), (15, "raise", "fast")]


def test_stale_counts_from_the_last_good_reading_and_needs_no_reading_to_raise():
    rules = Rules({"quiet": Stale(point="d.l", after_s=30)})
    rules.evaluate([Reading("d.l", T0, 1.0)], T0)
    rules.evaluate([Reading("d.l", T0 + 10 * S, None, Quality.COMM)], T0 + 10 * S)
    assert rules.tick(T0 + 29 * S)[0] == []
    assert [e.kind for e in rules.tick(T0 + 30 * S)[0]] == ["raise"]
    events, _ = rules.evaluate([Reading("d.l", T0 + 31 * S, 2.0)], T0 + 31 * S)
    assert [e.kind for e in events] == ["clear"]


def test_stale_from_start_when_nothing_ever_came():
    rules = Rules({"quiet": Stale(point="d.l", after_s=5)})
    assert rules.tick(T0)[0] == []
    assert [e.kind for e in rules.tick(T0 + 5 * S)[0]] == ["raise"]


def test_state_rule_on_a_digital_point():
    rules = Rules({"door": State(point="d.door", equals=True, msg="door open")})
    got = feed(rules, "d.door", [False, True, True, False])
    assert got == [(1, "raise", "door"), (3, "clear", "door")]
    events, _ = Rules({"door": State(point="d.door", equals=True, msg="door open")}).evaluate(
        [Reading("d.door", T0, True)])
    assert events[0].msg == "door open" and events[0].value == 1.0


def test_all_and_any_with_negation():
    rules = Rules({
        "on": State(point="d.sw", equals=True, alarm=False),
        "dark": ThresholdLow(point="d.amps", on=0.2, off=0.3, alarm=False),
        "fault": AllOf(of=["on", "dark"], on_delay_s=2, msg="lamp fault"),
        "odd": AnyOf(of=["!on", "fault"], alarm=False),
    })
    def tick(t: int, sw: bool, amps: float) -> list[str]:
        now = T0 + t * S
        events, _ = rules.evaluate([Reading("d.sw", now, sw), Reading("d.amps", now, amps)], now)
        return [f"{e.kind} {e.rule}" for e in events]

    assert tick(0, False, 0.0) == [] and rules.is_on("odd")  # off: "!on" holds
    assert tick(1, True, 0.9) == [] and not rules.is_on("odd")
    assert tick(2, True, 0.0) == []
    assert tick(4, True, 0.0) == ["raise fault"]
    assert rules.is_on("odd")
    assert tick(5, True, 0.8) == ["clear fault"]
    assert rules.conds["fault"].point == "d.sw"  # events name the first rule's point


def test_latched_alarm_waits_for_its_ack():
    rules = Rules({"flood": ThresholdHigh(point="d.l", on=4.5, off=4.0, latch=True)})
    assert feed(rules, "d.l", [4.6, 3.0, 3.0]) == [(0, "raise", "flood")]
    assert rules.active() == ["flood"] and rules.holds("flood") and not rules.is_on("flood")
    events, changed = rules.ack("flood", T0 + 10 * S)
    assert [e.kind for e in events] == ["clear"] and changed == {"flood": (False, T0 + 10 * S)}
    with pytest.raises(ValueError, match="not raised"):
        rules.ack("flood", T0 + 11 * S)


def test_ack_while_the_cause_remains_clears_when_it_goes():
    rules = Rules({"flood": ThresholdHigh(point="d.l", on=4.5, off=4.0, latch=True)})
    feed(rules, "d.l", [4.6])
    events, changed = rules.ack("flood", T0 + S)
    assert [e.kind for e in events] == ["action"] and changed == {}
    assert feed(rules, "d.l", [4.7, 3.0], t0=T0 + 2 * S) == [(1, "clear", "flood")]


def test_restart_keeps_hysteresis_of_a_rule_without_alarm_and_the_ack():
    cfg = {"demand": ThresholdHigh(point="d.l", on=3.5, off=1.2, alarm=False),
           "flood": ThresholdHigh(point="d.l", on=4.5, off=4.0, latch=True)}
    rules = Rules(cfg)
    feed(rules, "d.l", [4.6, 3.0])
    rules.ack("flood", T0 + 5 * S)
    saved = rules.take_state()
    states = {n: (c.active, c.since) for n, c in rules.conds.items() if c.alarm}
    again = Rules(cfg, states, saved)
    assert again.is_on("demand"), "2.0 m is between the levels: the pump keeps running"
    assert again.active() == [] and feed(again, "d.l", [2.0]) == []


def test_schedule_rule_gives_a_level():
    where = Location(timezone="UTC")
    rules = Rules({"lamp": Schedule(steps=[Step("18:00", 100), Step("23:00", 40),
                                           Step("06:00", 0)])}, where=where)
    at = {h: T0 + h * 3600 * S for h in (1, 7, 19, 23)}
    rules.tick(at[1])
    assert rules.level("lamp") == 40 and rules.is_on("lamp")
    rules.tick(at[7])
    assert rules.level("lamp") == 0 and not rules.is_on("lamp")
    rules.tick(at[19])
    assert rules.level("lamp") == 100
    rules.tick(at[23])
    assert rules.level("lamp") == 40


def test_remote_change_is_checked_first():
    rules = Rules({"hot": ThresholdHigh(point="d.t", on=45.0, off=38.0)})
    with pytest.raises(ValueError, match="off 38 > on 30"):
        rules.check_change("hot", "on", 30.0)
    with pytest.raises(ValueError, match="cannot be changed"):
        rules.check_change("hot", "point", "d.other")
    with pytest.raises(ValueError, match="Expected"):
        rules.check_change("hot", "on", "hot")
    rules.change("hot", rules.check_change("hot", "on", 50.0))
    assert feed(rules, "d.t", [47, 50]) == [(1, "raise", "hot")]


def test_bad_polls_neither_raise_nor_clear_and_text_is_ignored():
    rules = Rules({"hot": ThresholdHigh(point="d.t", on=10, off=8)})
    assert feed(rules, "d.t", [11, None, "n/a", 12]) == [(0, "raise", "hot")]
