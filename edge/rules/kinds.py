"""The rule kinds of ``[rules.NAME]`` tables: msgspec Structs, one per kind, and their checks.

Every kind shares the alarm keys (``alarm``, ``latch``, ``msg``) and the timers
(``on_delay_s``, ``off_delay_s``). edge/RULES.md documents every key with an example.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

import msgspec

NonNeg = Annotated[float, msgspec.Meta(ge=0, le=7 * 86400)]
Span = Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)]
Text = Annotated[str, msgspec.Meta(max_length=200)]  # event messages stay within the contract
# "sunset", "sunrise-30m", "sunset+1h", "23:00", "06:15"
AT = re.compile(r"^(?:(sunrise|sunset)(?:([+-])(\d{1,4})([smh]))?|([01]\d|2[0-3]):([0-5]\d))$")


class _Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Keys every kind has."""

    msg: Text = ""
    alarm: bool = True  # raise/clear events; false for a rule that only drives an action
    latch: bool = False  # an alarm stays raised until acknowledged, even once the cause is gone
    on_delay_s: NonNeg = 0.0  # the condition must hold this long before the rule turns on
    off_delay_s: NonNeg = 0.0  # ... and be gone this long before it turns off


class _Threshold(_Rule, kw_only=True):
    point: str
    on: float
    off: float | None = None  # the clear point; the gap to `on` is the hysteresis
    deadband: NonNeg | None = None  # or: clear this far back past `on` (give one of the two)

    def problem(self) -> tuple[str, str] | None:
        if self.off is not None and self.deadband is not None:
            return "deadband", "give off or deadband, not both"
        return None


class ThresholdHigh(_Threshold, tag_field="kind", tag="threshold_high", kw_only=True):
    """On when point >= on; off when point <= off (default on - deadband, or on)."""

    @property
    def clear_at(self) -> float:
        return self.off if self.off is not None else self.on - (self.deadband or 0.0)

    def problem(self) -> tuple[str, str] | None:
        if self.off is not None and self.off > self.on:
            return "off", ("a high threshold clears below where it raises: "
                           f"off {self.off:g} > on {self.on:g}")
        return super().problem()


class ThresholdLow(_Threshold, tag_field="kind", tag="threshold_low", kw_only=True):
    """On when point <= on; off when point >= off (default on + deadband, or on)."""

    @property
    def clear_at(self) -> float:
        return self.off if self.off is not None else self.on + (self.deadband or 0.0)

    def problem(self) -> tuple[str, str] | None:
        if self.off is not None and self.off < self.on:
            return "off", ("a low threshold clears above where it raises: "
                           f"off {self.off:g} < on {self.on:g}")
        return super().problem()


class Rate(_Rule, tag_field="kind", tag="rate", kw_only=True):
    """On when the point rose by `rise` (or fell by `fall`) within the last `window_s`."""

    point: str
    window_s: Span
    rise: Annotated[float, msgspec.Meta(gt=0)] | None = None
    fall: Annotated[float, msgspec.Meta(gt=0)] | None = None

    def problem(self) -> tuple[str, str] | None:
        if self.rise is None and self.fall is None:
            return "rise", "give rise, fall or both"
        return None


class Stale(_Rule, tag_field="kind", tag="stale", kw_only=True):
    """On when the point has had no good reading for `after_s` seconds."""

    point: str
    after_s: Span


class State(_Rule, tag_field="kind", tag="state", kw_only=True):
    """On while a (digital) point equals `equals`."""

    point: str
    equals: bool | int | float | Annotated[str, msgspec.Meta(max_length=64)]


class AllOf(_Rule, tag_field="kind", tag="all", kw_only=True):
    """On while every named rule is on ("!name": while it is off)."""

    of: Annotated[list[str], msgspec.Meta(min_length=1, max_length=64)]
    point: str = ""  # the point its events name; default: the first rule's


class AnyOf(_Rule, tag_field="kind", tag="any", kw_only=True):
    """On while at least one named rule is on ("!name": while it is off)."""

    of: Annotated[list[str], msgspec.Meta(min_length=1, max_length=64)]
    point: str = ""


class Step(msgspec.Struct, forbid_unknown_fields=True):
    """One switching time of a schedule: from `at` on, the schedule's level is `level`."""

    at: str
    level: Annotated[float, msgspec.Meta(ge=0)]


class Schedule(_Rule, tag_field="kind", tag="schedule", kw_only=True):
    """A level by time of day (lamp on/dim/off); on while the level is above 0."""

    steps: Annotated[list[Step], msgspec.Meta(min_length=1, max_length=48)]
    alarm: bool = False
    point: str = "gateway.schedule"

    def problem(self) -> tuple[str, str] | None:
        for i, step in enumerate(self.steps):
            if not AT.match(step.at):
                return f"steps.{i}.at", (f"{step.at!r} is not HH:MM, sunrise or sunset "
                                         "(with an offset such as sunset+15m)")
        return None


Rule = ThresholdHigh | ThresholdLow | Rate | Stale | State | AllOf | AnyOf | Schedule
POINT_KINDS = (ThresholdHigh, ThresholdLow, Rate, Stale, State)
# What a signed command may change (DESIGN.md section 9: an allowlist, validated first).
SETTABLE = frozenset({"on", "off", "deadband", "on_delay_s", "off_delay_s", "window_s", "rise",
                      "fall", "after_s", "equals"})


def problem(name: str, rule: Rule, rules: Mapping[str, Rule],
            points: Mapping[str, str]) -> tuple[str, str] | None:
    """The first thing wrong with one rule as (key, reason); None when it is sound."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        return "", "rule names are 1-64 of A-Z, a-z, 0-9, _ and -"
    if isinstance(rule, POINT_KINDS) and rule.point not in points:
        return "point", f"no configured point named {rule.point!r}"
    if isinstance(rule, AllOf | AnyOf):
        for i, ref in enumerate(rule.of):
            if ref.lstrip("!") not in rules:
                return f"of.{i}", f"no rule named {ref.lstrip('!')!r}"
            if ref.lstrip("!") == name:
                return f"of.{i}", "a rule cannot depend on itself"
    check = getattr(rule, "problem", None)
    return check() if check is not None else None


def cycle(rules: Mapping[str, Rule]) -> list[str] | None:
    """A dependency loop among all/any rules, as the names round it, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> list[str] | None:
        if state.get(name) == 2:
            return None
        if state.get(name) == 1:
            return [*path[path.index(name):], name]
        state[name] = 1
        rule = rules[name]
        for ref in rule.of if isinstance(rule, AllOf | AnyOf) else ():
            if (found := visit(ref.lstrip("!"), [*path, name])) is not None:
                return found
        state[name] = 2
        return None

    for name in rules:
        if (found := visit(name, [])) is not None:
            return found
    return None


def order(rules: Mapping[str, Rule]) -> list[str]:
    """All/any rule names, each after every all/any rule it depends on (no cycles assumed)."""
    out: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        rule = rules[name]
        if isinstance(rule, AllOf | AnyOf):
            for ref in rule.of:
                visit(ref.lstrip("!"))
            out.append(name)

    for name in rules:
        visit(name)
    return out
