"""The hardware watchdog is fed only while the node is healthy; a reset shows in status bit 1."""

from __future__ import annotations

import time

from conftest import wait_for

from cimedge.tools.sim.node import sim_board


def test_a_healthy_node_is_never_reset(sim, rtu) -> None:  # noqa: ANN001
    node = sim(board=sim_board(2, wdt_ms=1000))
    bus = rtu(node)
    time.sleep(3.2)  # three watchdog periods
    assert node.boots == ["power"]
    assert bus.read(4, 4, 1) == [0]


def test_a_dead_sampler_stops_the_feeding_though_the_bus_still_answers(sim, rtu) -> None:  # noqa: ANN001
    node = sim(board=sim_board(2, wdt_ms=800))
    bus = rtu(node)
    assert bus.write(202, [100]) == bytes.fromhex("10 00 ca 00 01")
    node.set_value(0, "crash")  # a bug: the sampler task dies, the slave task lives on
    time.sleep(0.3)
    assert bus.read(4, 5, 1) == [2]  # still answering...
    node.values[0] = 5.0  # (the next boot's sensor is fine)
    node.wait_boot(2, timeout=10)  # ...but within 2 periods + 1 s the watchdog resets it
    node.wait_ready()
    assert node.boots == ["power", "wdt"]
    wait_for(lambda: bus.read(4, 4, 1) == [2])  # status bit 1: watchdog reset seen
    node.power_cycle()
    assert bus.read(4, 4, 1) == [0]  # a power-on clears it


def test_a_hung_interpreter_is_reset(sim, rtu) -> None:  # noqa: ANN001
    node = sim(board=sim_board(2, wdt_ms=800))
    bus = rtu(node)
    node.values[0] = "hang"
    node.command({"cmd": "set", "ch": 0, "value": "hang"})  # the next sample never returns
    node.values[0] = 1.0
    node.wait_boot(2, timeout=10)
    node.wait_ready()
    assert node.boots == ["power", "wdt"]
    assert bus.read(4, 4, 1) == [2]
