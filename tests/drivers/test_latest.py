"""drivers/latest.py: pushed values, their age, and readings that never go back in time."""

from __future__ import annotations

import time

from cimedge.drivers.latest import FLOOR_STEP_NS, Latest
from cimedge.edge.model import Quality


def test_fresh_stale_and_never_heard() -> None:
    latest = Latest("d", {"a": 3600.0, "b": 3600.0, "c": 0.000001}, offline_after=2)
    now = time.time_ns()
    latest.put("a", 1.5, now - 10**9)
    latest.put("c", 2.5, now - 10**9)
    latest.heard = 1
    got = {r.point: r for r in latest.readings()}
    assert (got["d.a"].value, got["d.a"].quality, got["d.a"].ts_ns) == (1.5, Quality.GOOD,
                                                                         now - 10**9)
    assert got["d.b"].value is None and got["d.b"].quality is Quality.COMM
    assert (got["d.c"].value, got["d.c"].quality) == (2.5, Quality.STALE)
    assert latest.book.health.state == "degraded" and "2 of 3 points" in latest.book.health.reason


def test_a_value_stamped_before_the_comm_reading_is_moved_just_after_it() -> None:
    latest = Latest("d", {"a": 60.0}, offline_after=1)
    (comm,) = latest.readings()
    latest.put("a", 7.0, comm.ts_ns - 500_000_000)  # the station's whole second, before
    (value,) = latest.readings()
    assert value.value == 7.0 and value.ts_ns == comm.ts_ns + FLOOR_STEP_NS
    assert value.ts_ns / 1e9 > comm.ts_ns / 1e9  # still apart as SenML float seconds
    latest.put("a", 7.5, comm.ts_ns - 500_000_000)  # the same second again: taken, kept in order
    assert (latest.readings()[0].value, latest.readings()[0].ts_ns) == (7.5,
                                                                         comm.ts_ns + FLOOR_STEP_NS)
    latest.put("a", 8.0, comm.ts_ns + 10**9)  # later values keep their own time
    assert latest.readings()[0].ts_ns == comm.ts_ns + 10**9


def test_an_older_report_does_not_replace_a_newer_value() -> None:
    latest = Latest("d", {"a": 60.0}, offline_after=1)
    latest.put("a", 2.0, 2_000)
    latest.put("a", 1.0, 1_000)
    assert latest.values["a"][0] == 2.0
