"""The gateway's own Modbus RTU driver (drivers.modbus, transport "rtu") polls the real firmware."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec

from cimedge.drivers.modbus import DeviceConfig, Driver
from cimedge.edge.model import Quality, Reading

POINTS: dict[str, dict[str, Any]] = {
    "major": {"table": "input", "address": 0, "dtype": "uint16"},
    "uptime": {"table": "input", "address": 2, "dtype": "uint32"},
    "status": {"table": "input", "address": 4, "dtype": "uint16"},
    "fault": {"table": "input", "address": 4, "dtype": "bool", "bit": 0},
    "channels": {"table": "input", "address": 5, "dtype": "uint16"},
    "level": {"table": "input", "address": 100, "dtype": "float32", "unit": "m"},
    "gas": {"table": "input", "address": 102, "dtype": "float32", "unit": "ppm"},
    "period": {"table": "holding", "address": 202, "dtype": "uint16"},
    "level_scale": {"table": "holding", "address": 210, "dtype": "float32"},
}


def config(port: str, **change: Any) -> DeviceConfig:  # noqa: ANN401
    table = {"driver": "modbus", "transport": "rtu", "port": port, "unit": 1, "baudrate": 9600,
             "points": POINTS, "timeout_s": 0.5} | change
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


def values(readings: list[Reading]) -> dict[str, Any]:
    return {r.point.split(".", 1)[1]: r.value for r in readings}


async def read_until(driver: Driver, done: Any, timeout: float = 3.0) -> dict[str, Any]:  # noqa: ANN401
    """Poll like the gateway does until ``done(values)``; the sampler runs on its own period."""
    for _ in range(int(timeout / 0.1)):
        got = values(await driver.read())
        if done(got):
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(got)


async def test_the_driver_reads_and_writes_the_node(sim) -> None:  # noqa: ANN001
    node = sim()
    node.set_value(0, 2.75)
    node.set_value(1, 400)
    driver = Driver("ps01-node1", config(node.port))
    async with driver:
        await driver.write("period", 100)  # function 6, read back by the driver
        await driver.write("level_scale", 2.0)  # function 16, read back
        await read_until(driver, lambda v: v["level"] == 5.5)
        readings = await driver.read()
        health = driver.health()
    assert all(r.quality is Quality.GOOD for r in readings)
    got = values(readings)
    assert got | {"uptime": 0} == {"major": 1, "uptime": 0, "status": 0, "fault": False,
                                   "channels": 2, "level": 5.5, "gas": 400.0, "period": 100,
                                   "level_scale": 2.0}
    assert health.state == "ok"


async def test_a_sensor_fault_reaches_the_gateway_as_nan_and_status(sim) -> None:  # noqa: ANN001
    node = sim()
    node.set_value(0, None)
    async with Driver("ps01-node1", config(node.port)) as driver:
        got = await read_until(driver, lambda v: v["fault"])
    assert got["status"] == 1
    assert math.isnan(got["level"])


async def test_a_powered_off_node_reads_as_comm_failure(sim) -> None:  # noqa: ANN001
    node = sim()
    async with Driver("ps01-node1", config(node.port, timeout_s=0.2)) as driver:
        assert all(r.quality is Quality.GOOD for r in await driver.read())
        node.power_off()
        readings = await driver.read()
        assert {r.quality for r in readings} == {Quality.COMM}
        node.power_on()
        await asyncio.sleep(0.3)  # past the driver's backoff
        for _ in range(20):
            if all(r.quality is Quality.GOOD for r in await driver.read()):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the driver did not recover")
