"""The rules engine: readings and a time in, alarm transitions and rule states out; no I/O.

Each rule has a raw condition (from its readings or the time), a state that follows it
after ``on_delay_s``/``off_delay_s``, and, when ``alarm`` is set, an alarm that is raised
and cleared with the state, or held until acknowledged when ``latch`` is set.

Persistence: the caller commits, in the same transaction as the tick, the changed alarm
states (the store's ``alarms`` table) and ``take_state()`` (every rule's state and
acknowledgement, so that a pump's hysteresis survives a restart as well as an alarm does).
A restart then neither repeats nor loses a transition. A delay that was running at the
restart starts again; rate windows and stale timers start empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from cimedge.edge.model import Event, Reading
from cimedge.edge.rules import kinds
from cimedge.edge.rules.conditions import Combination, Cond, compile_rule
from cimedge.edge.sun import Location

AlarmStates = dict[str, tuple[bool, int]]  # rule name -> (alarm raised, since_ns)
STATE_PREFIX = "rule:"


class Rules:
    """Every configured rule, evaluated on each good reading of its point and on every tick.

    ``states`` are the alarm states from the store; ``saved`` the ``take_state()`` blobs
    committed before (keys ``rule:NAME``).
    """

    def __init__(self, rules: Mapping[str, kinds.Rule], states: AlarmStates | None = None,
                 saved: Mapping[str, bytes] | None = None, where: Location | None = None) -> None:
        where = where or Location()
        states, saved = states or {}, saved or {}
        self.conds: dict[str, Cond] = {n: compile_rule(n, r, where) for n, r in rules.items()}
        by_point: dict[str, list[Cond]] = {}
        for c in self.conds.values():
            if isinstance(c.rule, kinds.POINT_KINDS):
                by_point.setdefault(c.rule.point, []).append(c)
        self._by_point = {p: tuple(cs) for p, cs in by_point.items()}
        self._timed = [c for c in self.conds.values() if hasattr(c, "at")]
        self._combos: list[Combination] = []
        for name in kinds.order(rules):
            combo = self.conds[name]
            assert isinstance(combo, Combination)
            combo.deps = [(self.conds[ref.lstrip("!")], not ref.startswith("!"))
                          for ref in combo.rule.of]
            if not combo.point or combo.point == "gateway":
                combo.point = combo.rule.point or combo.deps[0][0].point
            self._combos.append(combo)
        self.states: AlarmStates = {}
        for name, c in self.conds.items():
            active, since = states.get(name, (False, 0))
            blob = saved.get(STATE_PREFIX + name)
            c.state = c.raw = bool(blob[0] & 1) if blob else active
            c.acked = bool(blob and blob[0] & 2)
            c.active, c.since = (active, since) if c.alarm else (False, since)
            if c.alarm:
                self.states[name] = (c.active, since)
        self._pending: dict[Cond, int] = {}  # rule -> when its delay ends
        self._events: list[Event] = []
        self._changed: AlarmStates = {}
        self._dirty: dict[str, bytes] = {}
        self._combos_stale = True

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, readings: Sequence[Reading],
                 now_ns: int | None = None) -> tuple[list[Event], AlarmStates]:
        """The alarm events of this tick and the changed alarm states.

        Timers (delays, stale, schedules) run at ``now_ns``; without it each reading's own
        time is used and the timers run at the latest of them. Failed polls (quality other
        than good, or no value) feed nothing: they neither raise nor clear a threshold.
        """
        self._events, self._changed = events, changed = [], {}
        by_point, flip = self._by_point, self._flip
        latest = now_ns
        for r in readings:
            conds = by_point.get(r.point)
            if conds is None or r.quality or r.value is None:
                continue
            ts = r.ts_ns if now_ns is None else now_ns
            v = r.value
            for c in conds:
                raw = c.feed(v, ts)
                if raw is not c.raw:
                    flip(c, raw, ts)
            if latest is None or ts > latest:
                latest = ts
        if latest is not None:
            self._time(latest)
        return events, changed

    def tick(self, now_ns: int) -> tuple[list[Event], AlarmStates]:
        """Run the timers alone (no reading arrived): delays, stale points, schedules."""
        return self.evaluate((), now_ns)

    def _time(self, now: int) -> None:
        for c in self._timed:
            raw = c.at(now)  # type: ignore[attr-defined]
            if raw is not c.raw:
                self._flip(c, raw, now)
        if self._pending:
            for c, due in list(self._pending.items()):
                if due <= now:
                    del self._pending[c]
                    self._set(c, c.raw, now)
        if self._combos_stale:
            self._combos_stale = False
            for combo in self._combos:
                raw = combo.compute()
                if raw is not combo.raw:
                    self._flip(combo, raw, now)

    def _flip(self, c: Cond, raw: bool, ts: int) -> None:
        c.raw = raw
        if raw is c.state:
            self._pending.pop(c, None)  # it went back before its delay ran out
            return
        delay = c.on_delay if raw else c.off_delay
        if delay:
            self._pending[c] = ts + delay
        else:
            self._set(c, raw, ts)

    def _set(self, c: Cond, state: bool, ts: int) -> None:
        c.state, c.since = state, ts
        self._combos_stale = True
        if c.alarm:
            if state and not c.active:
                c.active, c.acked = True, False
                self._alarm(c, "raise", ts, c.text())
            elif not state and c.active and (c.acked or not c.latch):
                c.active = False
                self._alarm(c, "clear", ts, c.text() + " cleared")
        self._dirty[STATE_PREFIX + c.name] = bytes([c.state | c.acked << 1])

    def _alarm(self, c: Cond, kind: str, ts: int, text: str) -> None:
        value = _number(c.last)
        msg = f"{text} ({value:g})" if value is not None and c.last is not None \
            and not isinstance(c.last, bool) else text
        self._events.append(Event(ts, c.point, kind, c.name, msg, value))
        self._changed[c.name] = self.states[c.name] = (c.active, ts)

    # -- the operator's side ------------------------------------------------------------
    def ack(self, name: str, now_ns: int) -> tuple[list[Event], AlarmStates]:
        """Acknowledge a raised alarm: it clears now if its cause is gone, else when it goes.

        Raises KeyError for an unknown rule and ValueError when there is nothing to ack.
        """
        c = self.conds[name]
        if not c.active:
            raise ValueError(f"alarm {name} is not raised")
        self._events, self._changed = events, changed = [], {}
        if c.state:
            c.acked = True
            self._events.append(Event(now_ns, c.point, "action", name,
                                      f"{c.text()} acknowledged (still present)", None))
        else:
            c.active = False
            self._alarm(c, "clear", now_ns, c.text() + " acknowledged and cleared")
        self._dirty[STATE_PREFIX + name] = bytes([c.state | c.acked << 1])
        return events, changed

    def check_change(self, name: str, key: str, value: Any) -> kinds.Rule:
        """The rule as it would be with ``key`` set to ``value``; ValueError when not allowed."""
        c = self.conds.get(name)
        if c is None:
            raise ValueError(f"no rule named {name!r}")
        fields = msgspec.structs.asdict(c.rule)
        if key not in kinds.SETTABLE or key not in fields:
            raise ValueError(f"{key!r} of rule {name} cannot be changed remotely")
        raw = msgspec.to_builtins(c.rule)
        raw[key] = value
        try:
            new = msgspec.convert(raw, type(c.rule))
        except msgspec.ValidationError as e:
            raise ValueError(f"{name}.{key}: {e}") from None
        if (found := new.problem() if hasattr(new, "problem") else None) is not None:
            raise ValueError(f"{name}.{found[0]}: {found[1]}")
        return new

    def change(self, name: str, rule: kinds.Rule) -> None:
        """Apply a rule checked by ``check_change``; its state and alarm are kept."""
        self.conds[name].configure(rule)

    # -- views --------------------------------------------------------------------------
    def take_state(self) -> dict[str, bytes]:
        """Rule states changed since the last call, to commit with the tick's alarm states."""
        out, self._dirty = self._dirty, {}
        return out

    def active(self) -> list[str]:
        """Names of the raised alarms."""
        return [n for n, c in self.conds.items() if c.active]

    def is_on(self, name: str) -> bool:
        """A rule's state ("!name": its negation)."""
        if name.startswith("!"):
            return not self.conds[name[1:]].state
        return self.conds[name].state

    def holds(self, name: str) -> bool:
        """On, or a latched alarm not yet cleared by an ack: what an interlock tests."""
        if name.startswith("!"):
            return not self.holds(name[1:])
        c = self.conds[name]
        return c.state or c.active

    def level(self, name: str) -> float:
        """A schedule's level in force (0 while off); 1 or 0 for other rules."""
        return self.conds[name].level()

    def next_timer(self) -> int | None:
        """When the earliest running delay ends, or None."""
        return min(self._pending.values(), default=None)


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None

