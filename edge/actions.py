"""Local actions: rule states in, verified writes to coils and registers out, through interlocks.

An action follows a desired state, not an edge: while its ``when`` rule is on, one of its
outputs should be on. ``plan(rules, now)`` (pure) says which writes that needs now, given
the interlocks; ``execute()`` makes them through the drivers (each verified by read-back)
and turns the results into events. A write that fails raises an alarm (rule
``ACTION:POINT``), cleared by the next write to that point that succeeds.

Interlocks, in the order they act:

- ``manual`` rule on (hand mode at the panel): the gateway writes nothing to these outputs.
- ``inhibit`` rules (dry-run protection, overload trip): while one is on, running outputs
  stop at once (even inside their minimum run) and none may start.
- ``min_run_s``: a started output is not stopped by its rule before this.
- ``min_rest_s`` and ``max_starts_per_hour``: an output may not start again sooner or more
  often; with several outputs (duty/standby) another one that may start is taken instead.
- several ``points``: at most one runs (mutual exclusion); with ``alternate`` the duty moves
  to the next output at every start; a failed output is skipped until ``retry_s`` passed.

A signed command may override the demand (``on``/``off``/``auto``); interlocks still apply.
Each start, stop, hold and rewrite is an event of kind ``action``. Times are wall-clock ns;
an interval whose start lies in the future (the clock stepped back) starts again from now.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec

from cimedge.edge.errors import DriverError
from cimedge.edge.model import Event, Quality, Reading
from cimedge.edge.rules import Rules

log = logging.getLogger(__name__)

NonNeg = Annotated[float, msgspec.Meta(ge=0, le=7 * 86400)]
Scalar = bool | int | float
STATE_PREFIX = "action:"
_NS = 1_000_000_000
_HOUR = 3600 * _NS
_COUNTDOWN = re.compile(r" \(\d+ s left\)")
Mode = Literal["auto", "on", "off"]


class ActionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ``[actions.NAME]`` table; edge/RULES.md explains every key."""

    points: Annotated[list[str], msgspec.Meta(min_length=1, max_length=8)]
    when: str = ""  # a rule name, "!name" for its negation; "" for always
    on: Scalar = True
    off: Scalar = False
    level_from: str = ""  # a schedule rule: write its level while on, instead of `on`
    min_run_s: NonNeg = 0.0
    min_rest_s: NonNeg = 0.0
    max_starts_per_hour: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 0
    inhibit: list[str] = []
    trips: list[str] = []  # one rule per point (overload trip): that output stops, is skipped
    manual: str = ""
    alternate: bool = True
    retry_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    msg: Annotated[str, msgspec.Meta(max_length=200)] = ""

    def rule_refs(self) -> list[tuple[str, str]]:
        """(key, rule name) of every rule this action names."""
        refs = [("when", self.when), ("level_from", self.level_from), ("manual", self.manual)]
        refs += [(f"inhibit.{i}", n) for i, n in enumerate(self.inhibit)]
        refs += [(f"trips.{i}", n) for i, n in enumerate(self.trips)]
        return [(k, n.lstrip("!")) for k, n in refs if n]


class Unit(msgspec.Struct, array_like=True):
    """One output's runtime state; all but ``written`` and the failure survive a restart."""

    on: bool = False
    since: int = 0  # when it last started or stopped
    starts: list[int] = []
    written: Any = None  # the last value written and read back; None: write it again
    written_at: int = 0
    failed: bool = False
    retry_at: int = 0


class _Saved(msgspec.Struct, array_like=True):
    duty: int
    mode: str
    units: list[Unit]


class Write(msgspec.Struct, frozen=True):
    """One planned write: which output, what value, why, and whether it is a start."""

    action: str
    unit: int
    point: str
    value: Scalar
    why: str
    start: bool = False
    stop: bool = False


class Action:
    """One configured action and its outputs' state."""

    def __init__(self, name: str, cfg: ActionConfig, saved: bytes | None = None) -> None:
        self.name, self.cfg = name, cfg
        self.duty, self.mode = 0, "auto"
        self.units = [Unit() for _ in cfg.points]
        if saved:
            try:
                s = msgspec.msgpack.decode(saved, type=_Saved)
            except msgspec.DecodeError:
                log.warning("action %s: saved state unreadable; starting from off", name)
            else:
                if len(s.units) == len(self.units):
                    self.duty, self.mode, self.units = s.duty % len(s.units), s.mode, s.units
                    for u in self.units:
                        u.written, u.failed = None, False
        self.tripped: set[int] = set()
        self.held = ""  # the reason a start or stop is being held, reported once
        self.manual_on = False
        self.notes: list[tuple[str, str]] = []  # (point, text) to report as action events

    def saved(self) -> bytes:
        return msgspec.msgpack.encode(_Saved(self.duty, self.mode, self.units))

    def _value(self, rules: Rules, on: bool) -> Scalar:
        if not on:
            return self.cfg.off
        if self.cfg.level_from:
            level = rules.level(self.cfg.level_from)
            return int(level) if level.is_integer() else level
        return self.cfg.on

    def plan(self, rules: Rules, now: int) -> list[Write]:
        """The writes needed now."""
        cfg = self.cfg
        if cfg.manual and rules.is_on(cfg.manual):
            if not self.manual_on:
                self.manual_on = True
                self.notes.append((cfg.points[0], f"manual ({cfg.manual}): outputs left to the "
                                                  "operator"))
            return []
        if self.manual_on:
            self.manual_on = False
            self.notes.append((cfg.points[0], "automatic control resumed"))
            for u in self.units:
                u.written = None  # the operator may have changed them: write the wanted state
        for u in self.units:
            if u.since > now:
                u.since = now
            u.starts = [t for t in u.starts if now - _HOUR < t <= now]
        demand = (rules.is_on(cfg.when) if cfg.when else True) if self.mode == "auto" \
            else self.mode == "on"
        if cfg.level_from and rules.level(cfg.level_from) <= 0:
            demand = False
        blocked = [n for n in cfg.inhibit if rules.holds(n)]
        writes: list[Write] = []
        self.tripped = {i for i, n in enumerate(cfg.trips) if rules.holds(n)}
        for i in sorted(self.tripped):
            if self.units[i].on:
                writes.append(self._write(i, rules, False, f"trip {cfg.trips[i]}", stop=True))
        running = [i for i, u in enumerate(self.units) if u.on and i not in self.tripped]
        hold = ""
        if demand and not blocked:
            for i in running[1:]:  # mutual exclusion: one output at a time
                writes.append(self._write(i, rules, False, "only one may run", stop=True))
            if not running:
                i, hold = self._pick(now)
                if i is not None:
                    writes.append(self._write(i, rules, True, self._why(), start=True))
        else:
            why = f"interlock {', '.join(blocked)}" if blocked else self._why(stopping=True)
            for i in running:
                left = self.units[i].since + int(cfg.min_run_s * _NS) - now
                if blocked or left <= 0:
                    writes.append(self._write(i, rules, False, why, stop=True))
                else:
                    hold = f"stop held: min run ({left / _NS:.0f} s left)"
            if demand and blocked and not running:
                hold = f"start held: {why}"
        key = _COUNTDOWN.sub("", hold)  # report a hold once, not every second of it
        if key != self.held and hold:
            self.notes.append((cfg.points[0], hold))
        self.held = key
        planned = {w.unit for w in writes}
        for i, u in enumerate(self.units):  # keep each output at its wanted value
            want = self._value(rules, u.on)
            if i not in planned and not _same(u.written, want) and now >= u.retry_at:
                why = "level" if cfg.level_from and u.written is not None else "restore"
                writes.append(self._write(i, rules, u.on, why))
        return writes

    def _why(self, *, stopping: bool = False) -> str:
        if self.mode != "auto":
            return f"override {self.mode}"
        if not self.cfg.when:
            return "hold"
        return f"{self.cfg.when} {'off' if stopping else 'on'}"

    def _write(self, i: int, rules: Rules, on: bool, why: str, *, start: bool = False,
               stop: bool = False) -> Write:
        return Write(self.name, i, self.cfg.points[i], self._value(rules, on), why, start, stop)

    def _pick(self, now: int) -> tuple[int | None, str]:
        """The output to start (duty first), or None and why none may."""
        cfg, n = self.cfg, len(self.units)
        reasons = []
        for k in range(n):
            i = (self.duty + k) % n
            u = self.units[i]
            rest = u.since + int(cfg.min_rest_s * _NS) - now
            if i in self.tripped:
                reasons.append(f"{cfg.points[i]} tripped ({cfg.trips[i]})")
            elif u.failed and now < u.retry_at:
                reasons.append(f"{cfg.points[i]} failed")
            elif rest > 0 and u.since:
                reasons.append(f"min rest ({rest / _NS:.0f} s left)")
            elif cfg.max_starts_per_hour and len(u.starts) >= cfg.max_starts_per_hour:
                reasons.append(f"{cfg.max_starts_per_hour} starts in the last hour")
            else:
                return i, ""
        return None, "start held: " + "; ".join(reasons)

    def done(self, w: Write, error: str, now: int) -> list[Event]:
        """Book a write's outcome; the events it makes (an alarm on failure)."""
        u = self.units[w.unit]
        alarm = f"{self.name}:{w.point}"
        value = float(w.value)
        if error:
            u.written, u.retry_at = None, now + int(self.cfg.retry_s * _NS)
            was_failed, u.failed = u.failed, True
            if was_failed:
                return []
            return [Event(now, w.point, "raise", alarm,
                          f"{self.cfg.msg or self.name}: writing {w.value} failed: {error}", value)]
        events = []
        if u.failed:
            u.failed = False
            events.append(Event(now, w.point, "clear", alarm, f"{w.point} written again", value))
        if w.start or w.stop:
            u.on, u.since = w.start, now
            if w.start:
                u.starts.append(now)
                if self.cfg.alternate and len(self.units) > 1:
                    self.duty = (w.unit + 1) % len(self.units)
        u.written, u.written_at = w.value, now
        verb = "set" if not self.cfg.when or not (w.start or w.stop) else \
            "start" if w.start else "stop"
        events.append(Event(now, w.point, "action", self.name,
                            f"{self.cfg.msg or self.name}: {verb} {w.point} = {w.value} ({w.why})",
                            value))
        return events

    def observe(self, r: Reading) -> None:
        """A polled value of an output that differs from what was written: write it again."""
        for i, p in enumerate(self.cfg.points):
            u = self.units[i]
            if p == r.point and r.quality == Quality.GOOD and r.ts_ns > u.written_at \
                    and u.written is not None and not _same(r.value, u.written):
                log.warning("%s reads %r, %r was written: writing again", p, r.value, u.written)
                u.written = None


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


class Actions:
    """Every configured action; the drivers do the writing."""

    def __init__(self, configs: Mapping[str, ActionConfig],
                 saved: Mapping[str, bytes] | None = None,
                 alarms: Mapping[str, tuple[bool, int]] | None = None) -> None:
        saved, alarms = saved or {}, alarms or {}
        self.actions = {n: Action(n, c, saved.get(STATE_PREFIX + n)) for n, c in configs.items()}
        for a in self.actions.values():  # a failure alarm raised before a restart stays raised
            for p, u in zip(a.cfg.points, a.units, strict=True):
                u.failed = alarms.get(f"{a.name}:{p}", (False, 0))[0]
        self._by_point: dict[str, list[Action]] = {}
        for a in self.actions.values():
            for p in a.cfg.points:
                self._by_point.setdefault(p, []).append(a)
        self._dirty: set[str] = set()
        self.writes = self.failures = 0

    def observe(self, readings: Sequence[Reading]) -> None:
        """Check polled outputs against what was written."""
        by_point = self._by_point
        if not by_point:
            return
        for r in readings:
            for a in by_point.get(r.point, ()):
                a.observe(r)

    def plan(self, rules: Rules, now: int) -> list[Write]:
        out: list[Write] = []
        for a in self.actions.values():
            out += a.plan(rules, now)
        return out

    def notes(self, now: int) -> list[Event]:
        """Holds and manual-mode changes since the last call, as action events."""
        out = []
        for a in self.actions.values():
            out += [Event(now, p, "action", a.name, f"{a.cfg.msg or a.name}: {text}", None)
                    for p, text in a.notes]
            a.notes.clear()
        return out

    async def execute(self, writes: Sequence[Write], drivers: Mapping[str, Any],
                      clock: Any) -> tuple[list[Event], dict[str, tuple[bool, int]]]:
        """Make the writes, concurrently across devices; their events and alarm changes."""

        async def one(w: Write) -> str:
            device, _, point = w.point.partition(".")
            driver = drivers.get(device)
            if driver is None:
                return f"device {device} is not open"
            try:
                await driver.write(point, w.value)
            except (DriverError, ValueError, OSError) as e:
                return (str(e) or type(e).__name__)[:300]  # event text has a size limit
            return ""

        errors = await asyncio.gather(*(one(w) for w in writes))
        now = clock()
        events: list[Event] = []
        for w, err in zip(writes, errors, strict=True):
            self.writes += 1
            if err:
                self.failures += 1
                log.error("%s: write %s = %r failed: %s", w.action, w.point, w.value, err)
            events += self.actions[w.action].done(w, err, now)
            self._dirty.add(w.action)
        alarms = {e.rule: (e.kind == "raise", e.ts_ns) for e in events if e.kind != "action"}
        return events, alarms

    def set_mode(self, name: str, mode: Mode) -> None:
        """Remote override of an action's demand; KeyError for an unknown action."""
        self.actions[name].mode = mode
        self._dirty.add(name)

    def take_state(self) -> dict[str, bytes]:
        out = {STATE_PREFIX + n: self.actions[n].saved() for n in self._dirty}
        self._dirty.clear()
        return out

    def active(self) -> list[str]:
        """The raised write-failure alarms."""
        return [f"{a.name}:{p}" for a in self.actions.values()
                for p, u in zip(a.cfg.points, a.units, strict=True) if u.failed]
