"""Local actions and their interlocks, on a recording driver: the rules engine is the real one."""

from __future__ import annotations

import pytest

from cimedge.edge.actions import ActionConfig, Actions
from cimedge.edge.errors import DriverError
from cimedge.edge.model import Reading
from cimedge.edge.rules import Rules, State, ThresholdHigh, ThresholdLow

S = 1_000_000_000
T0 = 1_767_225_600 * S


class Outputs:
    """A device whose writes are recorded; ``fail`` makes the next writes to a point fail."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.log: list[tuple[str, object]] = []
        self.fail: set[str] = set()

    async def write(self, point: str, value: object) -> None:
        if point in self.fail:
            raise DriverError(f"wrote {value}, read back something else")
        self.values[point] = value
        self.log.append((point, value))


RULES = {
    "demand": ThresholdHigh(point="d.level", on=3.5, off=1.2, alarm=False),
    "dry": ThresholdLow(point="d.level", on=0.3, off=0.6),
    "trip1": ThresholdHigh(point="d.amps1", on=16, off=14, latch=True),
    "hand": State(point="d.hand", equals=True, alarm=False),
}


class Site:
    def __init__(self, **kw: object) -> None:
        cfg = {"points": ["d.p1", "d.p2"], "when": "demand", "inhibit": ["dry"],
               "trips": ["trip1", "trip1"], "manual": "hand", **kw}
        if kw.get("points") == ["d.p1"]:
            cfg["trips"] = ["trip1"]
        self.rules = Rules(RULES)
        self.actions = Actions({"pumps": ActionConfig(**cfg)})  # type: ignore[arg-type]
        self.dev = Outputs()
        self.t = T0
        self.events: list = []
        self.level(2.0)

    def level(self, v: float, amps: float = 12.0, hand: bool = False) -> None:
        self.rules.evaluate([Reading("d.level", self.t, v), Reading("d.amps1", self.t, amps),
                             Reading("d.hand", self.t, hand)], self.t)

    async def at(self, seconds: float, level: float, **kw: object) -> list[str]:
        """Move to T0 + seconds, read the level, run the actions; the writes made."""
        self.t = T0 + int(seconds * S)
        self.level(level, **kw)  # type: ignore[arg-type]
        before = len(self.dev.log)
        writes = self.actions.plan(self.rules, self.t)
        self.events += self.actions.notes(self.t)
        events, _ = await self.actions.execute(writes, {"d": self.dev}, lambda: self.t)
        self.events += events
        return [f"{p}={v}" for p, v in self.dev.log[before:]]

    def msgs(self) -> list[str]:
        return [e.msg for e in self.events]


async def test_first_pass_takes_outputs_to_a_known_state_then_follows_the_rule():
    s = Site()
    assert await s.at(0, 2.0) == ["p1=False", "p2=False"]
    assert await s.at(1, 2.5) == []
    assert await s.at(2, 3.5) == ["p1=True"]
    assert await s.at(3, 1.3) == []
    assert await s.at(4, 1.2) == ["p1=False"]


async def test_duty_alternates_and_only_one_runs():
    s = Site()
    await s.at(0, 2.0)
    got = [await s.at(10 * i + 1, 3.6) + await s.at(10 * i + 5, 1.0) for i in range(4)]
    assert got == [["p1=True", "p1=False"], ["p2=True", "p2=False"],
                   ["p1=True", "p1=False"], ["p2=True", "p2=False"]]


async def test_min_run_holds_the_stop_but_dry_run_stops_at_once():
    s = Site(min_run_s=30)
    await s.at(0, 2.0)
    assert await s.at(1, 3.6) == ["p1=True"]
    assert await s.at(10, 1.0) == []
    assert "pumps: stop held: min run (21 s left)" in s.msgs()
    assert await s.at(31, 1.0) == ["p1=False"]
    assert await s.at(40, 3.6) == ["p2=True"]
    assert await s.at(45, 0.3) == ["p2=False"]  # inside min run: dry-run protection wins
    assert s.events[-1].msg.endswith("(interlock dry)")


async def test_dry_run_blocks_a_start():
    s = Site(points=["d.p1"])
    await s.at(0, 0.2)  # dry: raised
    s.rules.conds["demand"].state = True  # a demand while the well is dry (stuck float)
    assert await s.at(1, 0.2) == []
    assert "pumps: start held: interlock dry" in s.msgs()


async def test_min_rest_and_starts_per_hour_fall_to_the_standby_then_hold():
    s = Site(min_rest_s=100, max_starts_per_hour=2)
    await s.at(0, 2.0)
    assert await s.at(1, 3.6) + await s.at(5, 1.0) == ["p1=True", "p1=False"]
    assert await s.at(20, 3.6) + await s.at(25, 1.0) == ["p2=True", "p2=False"]
    assert await s.at(40, 3.6) == []  # both rest
    assert any("min rest" in m and m.startswith("pumps: start held") for m in s.msgs())
    assert await s.at(105, 3.6) + await s.at(110, 1.0) == ["p1=True", "p1=False"]
    assert await s.at(125, 3.6) + await s.at(130, 1.0) == ["p2=True", "p2=False"]
    assert await s.at(400, 3.6) == []  # rested, but each has had 2 starts this hour
    assert "2 starts in the last hour" in s.msgs()[-1]
    assert await s.at(3602, 3.6) == ["p1=True"]  # the first start left the window


async def test_trip_stops_its_pump_and_the_standby_takes_over_until_ack():
    s = Site(trips=["trip1", "hand"])  # pump 2 trips only in hand mode: not here
    await s.at(0, 2.0)
    assert await s.at(1, 3.6) == ["p1=True"]
    assert await s.at(2, 3.4, amps=20.0) == ["p1=False", "p2=True"]
    assert await s.at(3, 3.0, amps=0.0) == []  # trip1 is latched: pump 1 stays out
    assert "trip1" in s.rules.active()


async def test_failed_write_raises_an_alarm_and_the_standby_starts_then_clears():
    s = Site(retry_s=10)
    await s.at(0, 2.0)
    s.dev.fail = {"p1"}
    assert await s.at(1, 3.6) == []
    assert [(e.kind, e.rule) for e in s.events[-1:]] == [("raise", "pumps:d.p1")]
    assert s.actions.active() == ["pumps:d.p1"]
    assert await s.at(2, 3.6) == ["p2=True"]
    s.dev.fail = set()
    await s.at(3, 1.0)
    assert await s.at(12, 3.6) == ["p1=True"]  # retried after retry_s, and it worked
    assert [e.kind for e in s.events if e.rule == "pumps:d.p1"] == ["raise", "clear"]


async def test_manual_mode_leaves_outputs_alone_and_restores_after():
    s = Site()
    await s.at(0, 2.0)
    assert await s.at(1, 3.6, hand=True) == []
    assert "pumps: manual (hand): outputs left to the operator" in s.msgs()
    assert await s.at(2, 3.6, hand=False) == ["p1=True", "p2=False"]
    assert "pumps: automatic control resumed" in s.msgs()


async def test_remote_override_still_respects_interlocks():
    s = Site()
    await s.at(0, 2.0)
    s.actions.set_mode("pumps", "on")
    assert await s.at(1, 2.0) == ["p1=True"]
    assert await s.at(2, 0.2) == ["p1=False"]  # dry run beats the override
    s.actions.set_mode("pumps", "auto")
    assert await s.at(3, 2.0) == []


async def test_polled_value_that_differs_is_written_again():
    s = Site(points=["d.p1"])
    await s.at(0, 2.0)
    s.actions.observe([Reading("d.p1", T0 + 5 * S, True)])  # the device changed by itself
    assert await s.at(6, 2.0) == ["p1=False"]


async def test_state_survives_a_restart():
    s = Site(min_rest_s=100)
    await s.at(0, 2.0)
    await s.at(1, 3.6)
    await s.at(5, 1.0)
    saved = s.actions.take_state()
    again = Actions({"pumps": s.actions.actions["pumps"].cfg}, saved)
    a = again.actions["pumps"]
    assert a.duty == 1 and a.units[0].starts == [T0 + S] and a.units[0].since == T0 + 5 * S


def test_config_rejects_unknown_keys():
    import msgspec
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"points": ["d.p"], "min_runtime": 3}, ActionConfig)
