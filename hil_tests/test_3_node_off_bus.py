"""Scenario 3: a node pulled off the RS-485 bus, and put back."""

from __future__ import annotations

import time

import pytest

from hil_tests.gateway import Gateway, until
from hil_tests.test_2_polling import latest


@pytest.mark.rig_needs("switch")
def test_node_off_the_bus_and_back(gateway: Gateway) -> None:
    """A node off the bus goes offline and its points read `comm`; back on, it answers again."""
    rig = gateway.rig
    node = next(iter(rig.spec.nodes))
    others = [m for m, spec in rig.spec.meters.items() if spec.bus == rig.spec.nodes[node].bus]
    cut = time.time()
    rig.switch(node, False)
    try:
        until(lambda: gateway.devices().get(node) == "offline", 20, f"{node} to go offline")
        assert all(gateway.devices()[m] == "ok" for m in others), gateway.devices()
        # report by exception: the change to comm is sent once, not every poll
        until(lambda: latest(gateway, cut).get(f"{node}.uptime", {}).get("quality") == "comm",
              20, f"{node}'s readings to arrive marked comm")
    finally:
        rig.switch(node, True)
    back = time.time()
    until(lambda: gateway.devices().get(node) == "ok", 20, f"{node} to answer again")
    until(lambda: latest(gateway, back).get(f"{node}.uptime", {}).get("quality") == "good",
          20, f"good readings of {node} after it came back")
    assert all(gateway.devices()[m] == "ok" for m in others)
