"""Scenario 4: a pump cycle, run by the gateway's local rules."""

from __future__ import annotations

import time

import pytest

from hil_tests.gateway import Gateway, until
from hil_tests.test_2_polling import point_of, stored


@pytest.mark.rig_needs("pump_station")
def test_pump_cycle(gateway: Gateway) -> None:
    """The well fills, the gateway starts a pump at the high level, the well drains, it stops."""
    t0 = time.time()

    def cycle() -> tuple[float, float] | None:
        """(start, stop) times: a pump started after the level reached 3.5 m, then stopped."""
        rows = sorted(stored(gateway, t0), key=lambda r: r["time"])
        high = start = None
        for r in rows:
            name, value = point_of(r), r["value"]
            if name == "ps1.level" and value and float(value) >= 3.5 and high is None:  # noqa: PLR2004
                high = r["time"]
            running = name in ("ps1.pump_running", "ps2.pump_running") and value == "true"
            if high and start is None and running:
                start = r["time"]
            if start and name in ("ps1.pump_running", "ps2.pump_running") and \
                    value == "false" and r["time"] > start and _none_running(rows, r["time"]):
                return start, r["time"]
        return None
    start, stop = until(cycle, 90, "a pump start at high level and its stop", every=1.0)
    assert start < stop
    assert gateway.received().get("rejects", {}) == {}


def _none_running(rows: list[dict[str, str]], at: str) -> bool:
    last = {}
    for r in rows:
        if r["time"] <= at and point_of(r) in ("ps1.pump_running", "ps2.pump_running"):
            last[point_of(r)] = r["value"]
    return bool(last) and all(v == "false" for v in last.values())
