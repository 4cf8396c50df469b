"""Driver against the real pump-station simulator on a loopback port 0: reads, writes, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from cimedge.drivers.modbus import DeviceConfig, Driver
from cimedge.edge.errors import DeviceException, DriverError
from cimedge.edge.model import Quality, Reading
from cimedge.tools.sim.pump_station import PumpStation, demo_device, serve
from tests.same_step import SameStep


@pytest.fixture
async def station() -> AsyncIterator[PumpStation]:
    st = await serve(speed=0, seed=1)  # frozen physics: readings must equal st.state
    yield st
    await st.close()


def config(port: int, **change: Any) -> DeviceConfig:
    table = demo_device(port=port) | {"timeout_s": 0.5, "backoff_max_s": 0.05} | change
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


def by_point(readings: list[Reading]) -> dict[str, Reading]:
    return {r.point.removeprefix("ps1."): r for r in readings}


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, checking as often as the loop allows."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_reads_every_point_with_its_value_and_type(station: PumpStation) -> None:
    s = station.state
    s.level, s.inflow, s.pressure, s.current, s.running = 4.75, 190.5, 2.5, 12.25, True
    before = time.time_ns()
    async with Driver("ps1", config(station.port)) as driver:
        readings = await driver.read()
        health = driver.health()
    after = time.time_ns()
    assert [r.point for r in readings] == [f"ps1.{name}" for name in demo_device()["points"]]
    assert all(r.quality is Quality.GOOD and before <= r.ts_ns <= after for r in readings)
    values = {name: r.value for name, r in by_point(readings).items()}
    assert values == {
        "level": 4.75, "inflow": 190.5, "pressure": 2.5, "pump_current": 12.25,
        "high_level": True, "counter": 1, "model": "CIM-PS-SIM", "pump_running": True,
        "pump_cmd": False, "mode": 0, "start_level": pytest.approx(3.8), "stop_level": 1.0,
    }  # fmt: skip
    assert {type(values[k]) for k in ("level", "start_level")} == {float}
    assert {type(values[k]) for k in ("counter", "mode")} == {int}
    assert (health.state, health.ok_count, health.reason) == ("ok", 1, "")
    assert before <= (health.last_success_ns or 0) <= after


async def test_demo_plan_takes_five_requests(station: PumpStation) -> None:
    driver = Driver("ps1", config(station.port))
    assert [(r.table, r.address, r.count) for r in driver.requests] == [
        ("holding", 0, 6), ("input", 0, 9), ("input", 20, 18), ("coil", 0, 1), ("discrete", 0, 1),
    ]  # fmt: skip
    async with driver:
        await driver.read()
    assert station.requests == 5


async def test_counter_serves_each_value_exactly_once(station: PumpStation) -> None:
    async with Driver("ps1", config(station.port)) as driver:
        counters = [by_point(await driver.read())["counter"].value for _ in range(5)]
    assert counters == [1, 2, 3, 4, 5] == station.served_values()
    assert station.served == 5


async def test_write_coil_is_read_back_and_drives_the_pump(station: PumpStation) -> None:
    async with Driver("ps1", config(station.port)) as driver:
        await driver.write("pump_cmd", True)
        assert (station.state.command, station.state.running) == (True, True)
        now = by_point(await driver.read())
        assert (now["pump_cmd"].value, now["pump_running"].value) == (True, True)
        await driver.write("pump_cmd", False)
        assert station.state.running is False


async def test_write_holding_single_and_multiple_registers(station: PumpStation) -> None:
    async with Driver("ps1", config(station.port)) as driver:
        await driver.write("mode", 1)  # one register: function 6
        await driver.write("start_level", 4.25)  # float32: function 16
        assert (station.state.manual, station.state.start_level) == (True, 4.25)
        with pytest.raises(DeviceException) as refused:
            await driver.write("start_level", 0.5)  # below the stop level
        assert refused.value.code == 3
        assert "illegal data value" in str(refused.value)
        assert station.state.start_level == 4.25
        assert by_point(await driver.read())["start_level"].value == 4.25
        health = driver.health()
    assert (health.exceptions, health.state) == (1, "ok")


async def test_write_that_reads_back_different_raises(station: PumpStation) -> None:
    async with Driver("ps1", config(station.port)) as driver:
        with pytest.raises(DriverError, match=r"wrote \[\d+, \d+\] to holding 2, read back"):
            await driver.write("start_level", 4.256)  # the station keeps whole centimetres
    assert station.state.start_level == 4.26


@pytest.mark.parametrize(
    ("point", "value", "message"),
    [
        ("level", 1.0, "read-only input table"),
        ("pump_running", True, "read-only discrete table"),
        ("nope", 1, "has no point 'nope'"),
        ("mode", 70000, "does not fit in uint16"),
        ("pump_cmd", None, "cannot write None"),
        ("pump_cmd", "on", "true or false"),
        ("high_level", True, "read-only input table"),
    ],
)
async def test_write_mistakes_are_value_errors(
    station: PumpStation, point: str, value: Any, message: str
) -> None:
    async with Driver("ps1", config(station.port)) as driver:
        with pytest.raises(ValueError, match=message):
            await driver.write(point, value)
    assert station.requests == 0


async def test_exception_response_fails_only_its_request(station: PumpStation) -> None:
    table = demo_device(port=station.port)
    table["points"]["ghost"] = {"table": "input", "address": 100, "dtype": "uint16"}
    async with Driver("ps1", config(station.port, points=table["points"])) as driver:
        readings = by_point(await driver.read())
        health = driver.health()
    assert (readings["ghost"].quality, readings["ghost"].value) == (Quality.COMM, None)
    assert all(r.quality is Quality.GOOD for name, r in readings.items() if name != "ghost")
    assert (health.state, health.exceptions, health.ok_count) == ("degraded", 1, 0)
    assert "input 100+1: illegal data address" in health.reason


async def test_silent_device_times_out_then_recovers(station: PumpStation) -> None:
    async with Driver("ps1", config(station.port, timeout_s=0.2)) as driver:
        station.mute()
        started = time.monotonic()
        readings = await driver.read()
        elapsed = time.monotonic() - started
        health = driver.health()
        assert all(r.quality is Quality.COMM and r.value is None for r in readings)
        assert elapsed < 1.0  # one timeout per poll, not one per request
        assert (health.state, health.timeouts) == ("degraded", 1)
        assert "no answer within 0.2 s" in health.reason
        station.unmute()
        assert all(r.quality is Quality.GOOD for r in await driver.read())
        assert driver.health().state == "ok"


async def test_device_down_goes_offline_without_blocking_and_recovers(station: PumpStation) -> None:
    port = station.port
    async with Driver("ps1", config(port, offline_after=3)) as driver:
        assert by_point(await driver.read())["counter"].value == 1
        await station.close()
        states = []
        for _ in range(3):
            started = time.monotonic()
            readings = await driver.read()
            assert time.monotonic() - started < 0.6
            assert {(r.quality, r.value) for r in readings} == {(Quality.COMM, None)}
            states.append(driver.health().state)
        assert states == ["degraded", "degraded", "offline"]
        down = driver.health()
        assert down.offline_since_ns is not None and down.last_success_ns is not None
        assert down.offline_since_ns > down.last_success_ns

        again = await serve(port=port, speed=0, counter_start=station.served)
        try:
            latest: list[Reading] = []

            async def poll() -> bool:
                latest[:] = await driver.read()
                return latest[0].quality is Quality.GOOD

            async with asyncio.timeout(5):
                while not await poll():
                    await asyncio.sleep(0.01)  # backoff is at most backoff_max_s = 0.05 s
            assert by_point(latest)["counter"].value == 2
            up = driver.health()
            assert (up.state, up.offline_since_ns, up.reason) == ("ok", None, "")
        finally:
            await again.close()


async def test_backoff_answers_at_once_while_the_device_is_away() -> None:
    station = await serve(speed=0)
    port = station.port
    await station.close()
    async with Driver("ps1", config(port, backoff_max_s=30.0)) as driver:  # first connect fails
        started = time.monotonic()
        for _ in range(20):
            assert (await driver.read())[0].quality is Quality.COMM
        assert time.monotonic() - started < 0.5
        assert driver.health().state == "offline"


async def test_cancelling_a_read_in_flight_is_prompt(station: PumpStation) -> None:
    async with Driver("ps1", config(station.port, timeout_s=30.0)) as driver:
        station.mute()
        task = asyncio.create_task(driver.read(), name="read")
        await eventually(lambda: station.held == 1)
        started = time.monotonic()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert task in done and task.cancelled()
        assert time.monotonic() - started < 0.5
        health = driver.health()
        assert (health.timeouts, health.state) == (0, "unknown")  # a cancel is not a device failure
        station.unmute()
        assert all(r.quality is Quality.GOOD for r in await driver.read())


async def test_a_read_cancelled_in_the_step_its_answer_arrives_ends_cancelled(
    station: PumpStation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pymodbus waits with wait_for, which on 3.11 would hand the answer back (cimedge/stop.py)."""
    race = SameStep().modbus(monkeypatch)
    async with Driver("ps1", config(station.port)) as driver:
        task = asyncio.create_task(driver.read(), name="read")
        race.arm(task)
        done, _ = await asyncio.wait({task}, timeout=30)
        assert race.fired == 1
        assert task in done and task.cancelled()
        assert all(r.quality is Quality.GOOD for r in await driver.read())  # a fresh link


async def test_an_outer_timeout_still_works_around_read(station: PumpStation) -> None:
    async with Driver("ps1", config(station.port, timeout_s=30.0)) as driver:
        station.mute()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await driver.read()
        station.unmute()


async def test_write_to_a_device_that_is_down_raises_driver_error() -> None:
    station = await serve(speed=0)
    port = station.port
    await station.close()
    async with Driver("ps1", config(port)) as driver:
        with pytest.raises(DriverError, match="cannot connect"):
            await driver.write("pump_cmd", True)


async def test_non_finite_float_is_range_quality(station: PumpStation) -> None:
    station.state.level = float("nan")
    async with Driver("ps1", config(station.port)) as driver:
        level = by_point(await driver.read())["level"]
    assert level.quality is Quality.RANGE
    assert level.value != level.value  # NaN is kept, flagged
