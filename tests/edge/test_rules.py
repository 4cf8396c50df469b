"""The threshold rule: raise at `on`, clear only past `off`, state carried across a restart."""

from __future__ import annotations

from cimedge.edge.config import ThresholdHigh, ThresholdLow
from cimedge.edge.model import Quality, Reading
from cimedge.edge.rules import Rules

HIGH = {"high": ThresholdHigh(point="d.level", on=3.5, off=3.0, msg="level high")}


def _run(rules: Rules, values: list[float | None]) -> list[tuple[str, float]]:
    out = []
    for i, v in enumerate(values):
        q = Quality.GOOD if v is not None else Quality.COMM
        events, _ = rules.evaluate([Reading("d.level", i, v, q)])
        out += [(e.kind, e.value) for e in events]
    return out


def test_hysteresis_raises_once_and_clears_below_off():
    rules = Rules(HIGH)
    got = _run(rules, [1.0, 3.4, 3.5, 3.9, 3.2, 3.6, 3.0, 2.0, 3.4, 3.5])
    assert got == [("raise", 3.5), ("clear", 3.0), ("raise", 3.5)]


def test_failed_polls_do_not_clear_or_raise():
    assert _run(Rules(HIGH), [3.6, None, None, 3.4]) == [("raise", 3.6)]


def test_low_threshold():
    rules = Rules({"low": ThresholdLow(point="d.level", on=1.0, off=1.2)})
    assert _run(rules, [2.0, 1.0, 1.1, 1.2, 0.5]) == [("raise", 1.0), ("clear", 1.2), ("raise", 0.5)]


def test_restart_mid_alarm_does_not_repeat_the_raise():
    rules = Rules(HIGH)
    events, changed = rules.evaluate([Reading("d.level", 1, 3.7)])
    assert [e.kind for e in events] == ["raise"] and changed == {"high": (True, 1)}
    restarted = Rules(HIGH, states=changed)
    assert _run(restarted, [3.8, 3.6, 2.9]) == [("clear", 2.9)]


def test_event_names_rule_point_and_message():
    events, _ = Rules(HIGH).evaluate([Reading("d.level", 7, 3.75)])
    e = events[0]
    assert (e.ts_ns, e.point, e.rule, e.kind) == (7, "d.level", "high", "raise")
    assert e.msg == "level high (3.75)"
