"""The gateway's local control: rules, report-by-exception, actions and signed commands together.

The poller hands each tick's readings to ``tick()`` (rules see every reading; the store
gets what the RBE filter keeps) and commits what it returns in the tick's transaction.
``run()`` is the control task: on every tick it was woken for, and at least every
``tick_s`` seconds, it runs the rules' timers (delays, stale points, schedules), plans the
actions, writes through the drivers and commits the resulting events. It needs no broker.
``on_cmd()`` takes signed commands from the transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from cimedge.edge.actions import Actions
from cimedge.edge.clock import Clock
from cimedge.cloud_sync.backend_keys import BackendFile
from cimedge.edge.commands import Command, Commands, Refused, operations_keys
from cimedge.edge.errors import StoreError
from cimedge.edge.model import Event, Reading
from cimedge.edge.rbe import Rbe
from cimedge.edge.rules import Rules

if TYPE_CHECKING:
    from cimedge.edge.config import Site

log = logging.getLogger(__name__)

SET_PREFIX = "set:"
CMD_POINT = "gateway.cmd"
REFUSAL_EVERY_NS = 10 * 1_000_000_000  # a flood of bad commands makes one event per 10 s
State = dict[str, bytes | None]


class Tick(msgspec.Struct):
    """What one poll tick commits: the kept readings, events, alarm and control state."""

    readings: list[Reading]
    events: list[Event]
    alarms: dict[str, tuple[bool, int]]
    state: State


class Controller:
    """Local control of one site; ``Controller.open()`` restores it from the store."""

    def __init__(self, site: Site, drivers: Mapping[str, Any], store: Any, *,
                 clock: Clock = time.time_ns, alarms: Mapping[str, tuple[bool, int]] | None = None,
                 saved: Mapping[str, bytes] | None = None, tick_s: float = 0.5,
                 backend: BackendFile | None = None) -> None:
        alarms, saved = dict(alarms or {}), dict(saved or {})
        self.site, self.drivers, self.store, self.clock = site, drivers, store, clock
        self.tick_s = tick_s
        self.rules = Rules(site.rules, alarms, saved, site.where)
        self.rbe = Rbe(site.report, list(site.units))
        self.actions = Actions(site.actions, saved, alarms)
        self.commands: Commands | None = None
        if site.commands is not None:
            legacy = site.commands.backend_key_file
            keys = operations_keys(backend or BackendFile(site.path(site.gateway.backend_file)),
                                   site.path(legacy) if legacy else None)
            self.commands = Commands(site.commands, keys, site.gateway.device_id, saved)
        self._changes: dict[str, dict[str, Any]] = {}  # rule -> its remote changes
        for key, blob in saved.items():  # remote set-point changes outlive a restart
            if key.startswith(SET_PREFIX):
                self._restore(key[len(SET_PREFIX):], blob)
        self.wake = asyncio.Event()
        self.polled = asyncio.Event()  # every device has been polled once
        self._unpolled = set(site.devices)
        self.refused: dict[str, int] = {}
        self._last_refusal = -REFUSAL_EVERY_NS
        self._quiet_refusals = 0
        self.last_action_ns: int | None = None  # when the last write was made (bench, status)

    @classmethod
    async def open(cls, site: Site, drivers: Mapping[str, Any], store: Any,
                   **kw: Any) -> Controller:
        return cls(site, drivers, store, alarms=await store.alarms(), saved=await store.state(),
                   **kw)

    def _restore(self, rule: str, blob: bytes) -> None:
        try:
            changes = msgspec.msgpack.decode(blob, type=dict[str, Any])
            for key, value in changes.items():
                self.rules.change(rule, self.rules.check_change(rule, key, value))
            self._changes[rule] = changes
        except (ValueError, msgspec.DecodeError) as e:
            log.warning("remote change of %s no longer applies: %s", rule, e)

    # -- the poller's side --------------------------------------------------------------
    def tick(self, readings: Sequence[Reading], now_ns: int | None = None) -> Tick:
        """Evaluate one poll's readings; what to commit with them. Wakes the control task."""
        events, alarms = self.rules.evaluate(readings, now_ns)
        self.actions.observe(readings)
        if not self.polled.is_set():
            self._unpolled.difference_update(r.point.partition(".")[0] for r in readings)
            if not self._unpolled:
                self.polled.set()
        if events or self.actions.actions:
            self.wake.set()
        return Tick(self.rbe.keep(readings), events, alarms, dict(self.rules.take_state()))

    # -- the control task ---------------------------------------------------------------
    async def step(self, now_ns: int | None = None) -> Tick:
        """Timers, then actions: plan, write, book. What to commit (no readings)."""
        now = self.clock() if now_ns is None else now_ns
        events, alarms = self.rules.tick(now)
        writes = self.actions.plan(self.rules, now)
        events += self.actions.notes(now)
        if writes:
            done, failed = await self.actions.execute(writes, self.drivers, self.clock)
            events += done
            alarms.update(failed)
            self.last_action_ns = time.perf_counter_ns()
        state: State = dict(self.rules.take_state())
        state.update(self.actions.take_state())
        return Tick([], events, alarms, state)

    async def run(self, first_poll_s: float = 10.0) -> None:
        """The control task: step on every wake-up and every ``tick_s``; commit what changed.

        It starts once every device has been polled (or after ``first_poll_s``), so that the
        first actions follow the site as it is, not the rules' state before the restart.
        """
        try:
            async with asyncio.timeout(first_poll_s):
                await self.polled.wait()
        except TimeoutError:
            log.warning("devices not polled yet: %s; control starts anyway",
                        ", ".join(sorted(self._unpolled)))
        while True:
            self.wake.clear()
            t = await self.step()
            if t.events or t.alarms or t.state:
                await self.commit(t)
            try:
                async with asyncio.timeout(self.tick_s):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def commit(self, t: Tick) -> None:
        for e in t.events:
            log.log(logging.INFO if e.kind == "action" else logging.WARNING, "%s %s: %s",
                    e.kind, e.rule, e.msg)
        try:
            await self.store.append(t.readings, t.events, t.alarms, state=t.state)
        except StoreError as e:  # actions went on; the events are lost with this tick
            log.error("control events not committed: %s", e)

    def active(self) -> list[str]:
        """Raised alarms: rules' and failed writes'."""
        return self.rules.active() + self.actions.active()

    # -- signed commands ----------------------------------------------------------------
    async def on_cmd(self, data: bytes) -> None:
        """Check and apply one command; every outcome becomes an event (refusals rate-limited)."""
        now = self.clock()
        if self.commands is None:
            return
        try:
            cmd = self.commands.check(data, now)
            events, alarms, state = self._apply(cmd, now)
        except Refused as e:
            self.refused[e.reason] = self.refused.get(e.reason, 0) + 1
            log.warning("command refused: %s", e)
            if now - self._last_refusal < REFUSAL_EVERY_NS:
                self._quiet_refusals += 1
                return
            more = f" (+{self._quiet_refusals} more refused)" if self._quiet_refusals else ""
            self._last_refusal, self._quiet_refusals = now, 0
            events = [Event(now, CMD_POINT, "action", "cmd", f"command refused: {e}{more}")]
            await self.commit(Tick([], events, {}, {}))
            return
        state.update(self.commands.accept(cmd, now))
        await self.commit(Tick([], events, alarms, state))
        self.wake.set()

    def _apply(self, cmd: Command, now: int) -> tuple[list[Event], dict[str, tuple[bool, int]],
                                                      State]:
        """Validate, then apply one command; Refused("invalid") leaves everything unchanged."""
        tag = f"(command {cmd.nonce.hex()[:16]})"
        if cmd.op == "set":
            try:
                new = self.rules.check_change(cmd.target, cmd.key, cmd.value)
            except ValueError as e:
                raise Refused("invalid", str(e)) from None
            cond = self.rules.conds[cmd.target]
            old = getattr(cond.rule, cmd.key)
            self.rules.change(cmd.target, new)
            key = SET_PREFIX + cmd.target
            changes = dict(self._changes.get(cmd.target, {}), **{cmd.key: cmd.value})
            self._changes[cmd.target] = changes
            msg = f"{cmd.target}.{cmd.key} {old!r} -> {cmd.value!r} {tag}"
            return ([Event(now, cond.point, "action", cmd.target, msg, _num(cmd.value))], {},
                    {key: msgspec.msgpack.encode(changes)})
        if cmd.op == "ack":
            if cmd.target in self.rules.conds and self.rules.conds[cmd.target].active:
                events, alarms = self.rules.ack(cmd.target, now)
                return events, alarms, dict(self.rules.take_state())
            raise Refused("invalid", f"no raised alarm named {cmd.target!r}")
        if cmd.target not in self.actions.actions or cmd.value not in ("on", "off", "auto"):
            raise Refused("invalid", "override needs an action name and value on, off or auto")
        self.actions.set_mode(cmd.target, cmd.value)  # type: ignore[arg-type]
        point = self.actions.actions[cmd.target].cfg.points[0]
        return ([Event(now, point, "action", cmd.target, f"override {cmd.value} {tag}")], {},
                dict(self.actions.take_state()))

def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) else None
