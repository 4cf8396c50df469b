"""Report by exception: which readings the store keeps; pure, time comes with the readings.

Rules see every reading (a safety rule must not miss a spike the filter would hide); the
store, and so the wire, gets only the readings this filter keeps. A point keeps a reading
when it is the point's first, when its quality changed, when its value moved by at least
``deadband`` from the last kept value (any change for text and booleans), or when
``max_interval_s`` has passed since the last kept one (a heartbeat, so a steady value
still shows the point is alive). ``deadband = 0`` with ``max_interval_s = 0`` (the
default) keeps every reading. Alarm events carry the value that crossed, so nothing a
rule acted on is lost by filtering. After a restart every point's first reading is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

import msgspec

from cimedge.edge.model import Reading

NonNeg = Annotated[float, msgspec.Meta(ge=0)]


class PointReport(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How one point reports: deadband in its unit, and the heartbeat in seconds (0 = none)."""

    deadband: NonNeg = 0.0
    max_interval_s: NonNeg = 0.0


class ReportConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The ``[report]`` table: defaults for every point, and ``[report.points.DEVICE]``
    tables of ``POINT = { deadband = ..., max_interval_s = ... }`` per point."""

    deadband: NonNeg = 0.0
    max_interval_s: NonNeg = 0.0
    points: dict[str, dict[str, PointReport]] = {}

    def for_point(self, name: str) -> PointReport:
        device, _, point = name.partition(".")
        got = self.points.get(device, {}).get(point)
        return got if got is not None else PointReport(self.deadband, self.max_interval_s)


class Rbe:
    """The filter; ``keep(readings)`` returns the readings the store should keep."""

    def __init__(self, config: ReportConfig, points: Sequence[str] = ()) -> None:
        self.config = config
        # per point: (deadband, interval ns) or None to keep everything
        self._rules: dict[str, tuple[float, int] | None] = {}
        self._last: dict[str, tuple[object, int, int]] = {}  # point -> (value, quality, ts)
        self.kept = self.dropped = 0
        for p in points:
            self._rule(p)

    def _rule(self, point: str) -> tuple[float, int] | None:
        pr = self.config.for_point(point)
        rule = None if pr.deadband == 0 and pr.max_interval_s == 0 else \
            (pr.deadband, int(pr.max_interval_s * 1e9))
        self._rules[point] = rule
        return rule

    def keep(self, readings: Sequence[Reading]) -> list[Reading]:
        """The readings to store, in their order."""
        out = []
        rules, last = self._rules, self._last
        for r in readings:
            rule = rules[r.point] if r.point in rules else self._rule(r.point)
            if rule is None:  # kept, and never compared: no need to remember it
                out.append(r)
            elif self._changed(r, rule, last.get(r.point)):
                last[r.point] = (r.value, r.quality, r.ts_ns)
                out.append(r)
        self.kept += len(out)
        self.dropped += len(readings) - len(out)
        return out

    @staticmethod
    def _changed(r: Reading, rule: tuple[float, int],
                 prev: tuple[object, int, int] | None) -> bool:
        if prev is None:
            return True
        value, quality, ts = prev
        deadband, interval = rule
        if r.quality != quality or (interval and r.ts_ns - ts >= interval):
            return True
        v = r.value
        if isinstance(v, bool) or not isinstance(v, int | float) or \
                isinstance(value, bool) or not isinstance(value, int | float):
            return v != value
        return abs(v - value) >= deadband if deadband else v != value


def points_of(config: ReportConfig, units: Mapping[str, str]) -> list[tuple[str, str]]:
    """Per-point entries naming no configured point, as (key path, reason)."""
    out = []
    for device, table in config.points.items():
        for point in table:
            if f"{device}.{point}" not in units:
                out.append((f"report.points.{device}.{point}",
                            f"no configured point named '{device}.{point}'"))
    return out
