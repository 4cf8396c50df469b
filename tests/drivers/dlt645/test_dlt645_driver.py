"""DL/T 645 driver against tools.sim.dlt645_meter over a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from cimedge.drivers import serial_bus
from cimedge.drivers.dlt645 import DeviceConfig, Driver, discover
from cimedge.drivers.dlt645.identifiers import CATALOGUE
from cimedge.edge.errors import BadFrame
from cimedge.edge.model import Quality, Reading
from cimedge.tools.sim.dlt645_meter import Meter, MeterLine, demo_meter
from cimedge.tools.sim.pty_line import Fault

A, B = "000012345678", "000012345679"
POINTS = {
    "energy": {"di": "energy_import"}, "energy_total": {"di": "energy_total"},
    "voltage": {"di": "voltage_a"}, "current": {"di": "current_a"}, "power": {"di": "power"},
    "reactive": {"di": "reactive_power"}, "pf": {"di": "power_factor"},
    "frequency": {"di": "frequency"}, "temperature": {"di": "meter_temperature"},
}  # fmt: skip


@pytest.fixture
async def line() -> AsyncIterator[MeterLine]:
    async with MeterLine([demo_meter(A), demo_meter(B)], baudrate=115200, seed=3) as sim:
        yield sim


def config(port: str, address: str = A, **change: Any) -> DeviceConfig:
    table = {
        "driver": "dlt645", "port": port, "address": address, "baudrate": 115200,
        "points": POINTS, "timeout_s": 0.1, "probe_timeout_s": 0.02, "backoff_max_s": 0.05,
    } | change  # fmt: skip
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


def values(readings: list[Reading]) -> dict[str, Any]:
    return {r.point.split(".", 1)[1]: r.value for r in readings}


def good(readings: list[Reading]) -> bool:
    return all(r.quality is Quality.GOOD for r in readings)


async def test_reads_the_common_quantities_with_their_scaling(line: MeterLine) -> None:
    before = time.time_ns()
    async with Driver("lp", config(line.path)) as meter:
        readings = await meter.read()
        health = meter.health()
    assert good(readings) and all(r.ts_ns >= before for r in readings)
    assert values(readings) == {
        "energy": 12345.67, "energy_total": 12345.67, "voltage": 229.8, "current": 0.412,
        "power": 0.0947, "reactive": -0.0061, "pf": 0.998, "frequency": 50.01,
        "temperature": -5.2,
    }  # fmt: skip
    assert (health.state, health.ok_count) == ("ok", 1)
    assert line.meters[A].requests == len(POINTS) and line.meters[B].requests == 0


async def test_scale_offset_and_identifiers_outside_the_catalogue(line: MeterLine) -> None:
    line.meters[A].values[0x02800008] = 3.61  # clock battery, not in the catalogue
    line.meters[A].formats[0x02800008] = CATALOGUE["frequency"].format  # XX.XX
    points = {
        "battery": {"di": "02800008", "length": 2, "decimals": 2, "unit": "V"},
        "current": {"di": "current_a", "scale": 50.0, "offset": 0.5},  # a 250/5 A transformer
    }
    async with Driver("lp", config(line.path, points=points)) as meter:
        assert values(await meter.read()) == {"battery": 3.61, "current": 0.412 * 50 + 0.5}


async def test_unknown_identifier_fails_only_its_point(line: MeterLine) -> None:
    points = POINTS | {"ghost": {"di": "02800008", "length": 2, "decimals": 2}}
    async with Driver("lp", config(line.path, points=points)) as meter:
        readings = {r.point: r for r in await meter.read()}
        health = meter.health()
    assert (readings["lp.ghost"].quality, readings["lp.ghost"].value) == (Quality.COMM, None)
    assert all(r.quality is Quality.GOOD for p, r in readings.items() if p != "lp.ghost")
    assert (health.state, health.exceptions) == ("degraded", 1)
    assert "device exception 2" in health.reason and "no such data" in health.reason


async def test_wildcard_address_reads_the_meter_it_matches(line: MeterLine) -> None:
    async with Driver("lp", config(line.path, address="AAAAAAAA5679")) as meter:
        assert good(await meter.read())
    assert line.meters[B].requests == len(POINTS) and line.meters[A].requests == 0


async def test_discovery_with_one_meter_and_with_two() -> None:
    async with MeterLine([demo_meter(A)], baudrate=115200) as sim:
        async with Driver("lp", config(sim.path, address="auto")) as meter:
            assert good(await meter.read())
            assert meter.address == A
    async with MeterLine([demo_meter(A), demo_meter(B)], baudrate=115200) as sim:
        bus = serial_bus.acquire(serial_bus.Line(sim.path, 115200, 8, "E", 1), "probe")
        try:
            with pytest.raises(BadFrame, match="connect one meter at a time"):
                await discover(bus, timeout_s=0.2)
        finally:
            serial_bus.release(bus)


async def test_discovery_of_no_meter_times_out() -> None:
    async with MeterLine([], baudrate=115200) as sim:
        async with Driver("lp", config(sim.path, address="auto")) as meter:
            readings = await meter.read()
            health = meter.health()
    assert {r.quality for r in readings} == {Quality.COMM}
    assert (health.timeouts, health.state) == (1, "degraded")
    assert "no answer within 0.1 s" in health.reason


async def poll(driver: Driver, period: float, ticks: int) -> list[tuple[float, list[Reading]]]:
    """Read every ``period`` seconds as edge.poller does; (read duration, readings) per tick."""
    loop = asyncio.get_running_loop()
    next_at, out = loop.time(), []
    for _ in range(ticks):
        started = loop.time()
        readings = await driver.read()
        out.append((loop.time() - started, readings))
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return out


@pytest.mark.parametrize("fault", ["silent", "bad_crc", "garbage", "slow"])
async def test_a_faulty_meter_leaves_the_other_on_time(line: MeterLine, fault: Fault) -> None:
    """Meter B fails; meter A on the same line keeps every 0.3 s tick, all good."""
    line.meters[B].fault, line.meters[B].slow_s = fault, 0.15
    period, ticks = 0.3, 5
    a, b = Driver("a", config(line.path)), Driver("b", config(line.path, address=B))
    async with a, b:
        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(poll(d, period, ticks)) for d in (a, b)]
        health = b.health()
    assert all(good(readings) for _, readings in runs[0].result())
    assert max(took for took, _ in runs[0].result()) < period
    assert all(not good(readings) for _, readings in runs[1].result())
    if fault in ("bad_crc", "garbage"):
        assert health.crc_errors >= len(POINTS) and health.timeouts == 0
    else:
        assert health.timeouts >= 1 and health.state == "offline"


async def test_silent_meter_is_probed_and_recovers(line: MeterLine) -> None:
    meter = line.meters[A]
    meter.fault = "silent"
    async with Driver("lp", config(line.path)) as driver:
        assert not good(await driver.read())
        assert meter.requests == 1  # the poll stopped at the first timeout
        meter.fault = "none"
        async with asyncio.timeout(5):
            while not good(readings := await driver.read()):
                await asyncio.sleep(0.01)  # the poll period
        assert values(readings)["voltage"] == 229.8
        assert driver.health().state == "ok"


async def test_write_is_refused_and_port_loss_gives_comm(line: MeterLine) -> None:
    async with Driver("lp", config(line.path)) as meter:
        with pytest.raises(ValueError, match="read-only"):
            await meter.write("energy", 1.0)
        await line.close()
        readings = await meter.read()
    assert {r.quality for r in readings} == {Quality.COMM}


async def test_cancelling_a_read_in_flight_is_prompt(line: MeterLine) -> None:
    meter: Meter = line.meters[A]
    meter.fault, meter.slow_s = "slow", 30.0
    async with Driver("lp", config(line.path, timeout_s=30.0)) as driver:
        task = asyncio.create_task(driver.read())
        await line.until(lambda: meter.requests == 1)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert task in done and task.cancelled()
        assert driver.health().timeouts == 0
        meter.fault = "none"
        assert good(await driver.read())


async def test_line_timing_at_2400_baud() -> None:
    """One point at 2400 8E1: 20 request bytes, 3.5 characters, 22 answer bytes."""
    async with MeterLine([demo_meter(A)], line_timing=True) as sim:
        cfg = config(sim.path, baudrate=2400, timeout_s=1.0, points={"v": {"di": "voltage_a"}})
        async with Driver("lp", cfg) as meter:
            started = time.monotonic()
            assert good(await meter.read())
            took = time.monotonic() - started
    minimum = (20 + 3.5 + 2 + 12 + 6) * 11 / 2400
    assert minimum <= took < 1.3 * minimum
