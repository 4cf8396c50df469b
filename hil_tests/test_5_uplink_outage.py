"""Scenario 5: the uplink goes down, the gateway keeps polling into its buffer, then drains it."""

from __future__ import annotations

import time

import pytest

from hil_tests.gateway import Gateway, until
from hil_tests.test_2_polling import stored


@pytest.mark.rig_needs("uplink")
def test_uplink_outage_and_backlog_drain(gateway: Gateway) -> None:
    """Readings buffered during an outage all reach the backend after it, in seq order, once."""
    rig = gateway.rig
    until(lambda: gateway.received().get("last_seq"), 30, "a first batch at the backend")
    cut = time.time()
    rig.uplink(False)
    try:
        until(lambda: not gateway.status()["daemon"]["connected"], 30,
              "the gateway to see the uplink down")
        before = gateway.received()["last_seq"]
        # Report by exception keeps the rate low: a few readings a second on this site.
        backlog = until(lambda: (b := gateway.buffer())["readings_unbatched"] >= 10 and b, 30,
                        "a backlog to build up")
        assert gateway.received()["last_seq"] == before  # nothing got through meanwhile
    finally:
        restored = time.time()
        rig.uplink(True)
    until(lambda: gateway.status()["daemon"]["connected"], 60, "the gateway to reconnect")
    until(lambda: gateway.buffer()["batches_unacked"] == 0 and
          gateway.received().get("last_seq", 0) > before, 60, "the backlog to drain")
    got = gateway.received()
    assert got["missing"] == 0, got  # every seq from 1 on arrived: nothing lost, no gap
    assert got["rejects"] == {}, got
    during = [r for r in stored(gateway, cut) if r["time"] <= _iso(restored)]
    assert len(during) >= backlog["readings_unbatched"] // 2, (len(during), backlog)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
