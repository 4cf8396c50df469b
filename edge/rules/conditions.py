"""Compiled rules: one small object per rule whose ``feed`` or ``at`` gives its raw condition.

These sit on the hot path (every reading of a point with rules), so they use ``__slots__``,
integer nanoseconds and no allocation per reading. Times are arguments, never clock reads.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from cimedge.edge import sun
from cimedge.edge.rules import kinds
from cimedge.edge.rules.schedule import Timetable

_NS = 1_000_000_000


class Cond:
    """What every rule has: raw condition, delayed state, alarm lifecycle."""

    __slots__ = ("acked", "active", "alarm", "deps", "last", "latch", "name", "off_delay",
                 "on_delay", "point", "raw", "rule", "since", "state")

    def __init__(self, name: str, rule: kinds.Rule) -> None:
        self.name = name
        self.point = getattr(rule, "point", "") or "gateway"
        self.raw = self.state = False  # raw: the condition now; state: after the delays
        self.active = self.acked = False  # the alarm is raised / acknowledged
        self.since = 0
        self.last: Any = None  # the last value seen, for event messages
        self.deps: list[tuple[Cond, bool]] = []
        self.configure(rule)

    def configure(self, rule: Any) -> None:
        """Take a rule's parameters; runtime state (raw, state, alarm) is kept."""
        self.rule = rule
        self.alarm, self.latch = rule.alarm, rule.latch
        self.on_delay = int(rule.on_delay_s * _NS)
        self.off_delay = int(rule.off_delay_s * _NS)

    def feed(self, value: Any, ts: int) -> bool:
        return self.raw

    def text(self) -> str:
        """What the rule watches, for event messages."""
        return self.rule.msg or self.name

    def level(self) -> float:
        return 1.0 if self.state else 0.0


class High(Cond):
    __slots__ = ("off", "on")

    def configure(self, rule: Any) -> None:
        super().configure(rule)
        self.on, self.off = rule.on, rule.clear_at

    def feed(self, value: Any, ts: int) -> bool:
        if value.__class__ is str:
            return self.raw
        self.last = value
        return value > self.off if self.raw else value >= self.on

    def text(self) -> str:
        return self.rule.msg or f"{self.point} high"


class Low(High):
    __slots__ = ()

    def feed(self, value: Any, ts: int) -> bool:
        if value.__class__ is str:
            return self.raw
        self.last = value
        return value < self.off if self.raw else value <= self.on

    def text(self) -> str:
        return self.rule.msg or f"{self.point} low"


class Rate(Cond):
    """Change over the window: now against the oldest reading still inside it."""

    __slots__ = ("fall", "rise", "samples", "window")

    def configure(self, rule: Any) -> None:
        super().configure(rule)
        self.window = int(rule.window_s * _NS)
        self.rise = rule.rise if rule.rise is not None else float("inf")
        self.fall = rule.fall if rule.fall is not None else float("inf")
        self.samples: deque[tuple[int, float]] = deque()

    def feed(self, value: Any, ts: int) -> bool:
        if value.__class__ is str:
            return self.raw
        self.last = value
        s = self.samples
        s.append((ts, value))
        cutoff = ts - self.window
        while s[0][0] < cutoff:
            s.popleft()
        change = value - s[0][1]
        return change >= self.rise or -change >= self.fall

    def text(self) -> str:
        return self.rule.msg or f"{self.point} changing fast"


class State(Cond):
    __slots__ = ("equals",)

    def configure(self, rule: Any) -> None:
        super().configure(rule)
        self.equals = rule.equals

    def feed(self, value: Any, ts: int) -> bool:
        self.last = value
        return bool(value == self.equals)

    def text(self) -> str:
        return self.rule.msg or f"{self.point} is {self.equals!r}"


class Stale(Cond):
    """Fed only good readings; ``at(now)`` says whether the last one is too old."""

    __slots__ = ("after", "last_good")

    def configure(self, rule: Any) -> None:
        super().configure(rule)
        self.after = int(rule.after_s * _NS)
        self.last_good: int | None = None  # None until the first tick: then "since start"

    def feed(self, value: Any, ts: int) -> bool:
        self.last_good = ts
        return False

    def at(self, now: int) -> bool:
        if self.last_good is None:
            self.last_good = now
        return now - self.last_good >= self.after

    def text(self) -> str:
        return self.rule.msg or f"{self.point}: no good reading for {self.rule.after_s:g} s"


class Combination(Cond):
    """All/any of other rules' (delayed) states; ``deps`` are (rule, wanted state)."""

    __slots__ = ("any",)

    def configure(self, rule: Any) -> None:
        super().configure(rule)
        self.any = isinstance(rule, kinds.AnyOf)

    def compute(self) -> bool:
        if self.any:
            return any(c.state is want for c, want in self.deps)
        return all(c.state is want for c, want in self.deps)


class Schedule(Cond):
    __slots__ = ("now_level", "timetable")

    def __init__(self, name: str, rule: kinds.Schedule, where: sun.Location) -> None:
        self.timetable = Timetable(rule.steps, where)
        self.now_level = 0.0
        super().__init__(name, rule)

    def configure(self, rule: Any) -> None:
        super().configure(rule)
        self.timetable = Timetable(rule.steps, self.timetable.where)

    def at(self, now: int) -> bool:
        self.now_level = self.last = self.timetable.level_at(now)
        return self.now_level > 0

    def level(self) -> float:
        return self.now_level if self.state else 0.0


def compile_rule(name: str, rule: kinds.Rule, where: sun.Location) -> Cond:
    """The compiled form of one configured rule."""
    if isinstance(rule, kinds.ThresholdHigh):
        return High(name, rule)
    if isinstance(rule, kinds.ThresholdLow):
        return Low(name, rule)
    if isinstance(rule, kinds.Rate):
        return Rate(name, rule)
    if isinstance(rule, kinds.State):
        return State(name, rule)
    if isinstance(rule, kinds.Stale):
        return Stale(name, rule)
    if isinstance(rule, kinds.Schedule):
        return Schedule(name, rule, where)
    return Combination(name, rule)
