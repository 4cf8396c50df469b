"""RTU driver against tools.sim.rtu_bus over a real pseudo-terminal: reads, writes, faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from cimedge.drivers.modbus import DeviceConfig, Driver
from cimedge.edge.errors import ConfigError, DeviceException
from cimedge.edge.model import Quality, Reading
from cimedge.tools.sim.rtu_bus import Fault, RtuBus, demo_unit

POINTS: dict[str, dict[str, Any]] = {
    "r0": {"table": "input", "address": 0, "dtype": "uint16"},
    "pair": {"table": "input", "address": 2, "dtype": "uint32"},
    "counter": {"table": "input", "address": 100, "dtype": "uint32"},
    "setpoint": {"table": "holding", "address": 0, "dtype": "int16"},
    "limit": {"table": "holding", "address": 4, "dtype": "float32"},
    "flag": {"table": "discrete", "address": 1, "dtype": "bool"},
    "cmd": {"table": "coil", "address": 0, "dtype": "bool"},
}


@pytest.fixture
async def sim() -> AsyncIterator[RtuBus]:
    async with RtuBus({u: demo_unit(u) for u in (1, 2, 3)}, baudrate=115200, seed=5) as bus:
        yield bus


def config(port: str, unit: int = 1, **change: Any) -> DeviceConfig:
    table = {
        "driver": "modbus", "transport": "rtu", "port": port, "unit": unit, "baudrate": 115200,
        "points": POINTS, "timeout_s": 0.2, "probe_timeout_s": 0.03, "backoff_max_s": 0.05,
    } | change  # fmt: skip
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


def values(readings: list[Reading]) -> dict[str, Any]:
    return {r.point.split(".", 1)[1]: r.value for r in readings}


def good(readings: list[Reading]) -> bool:
    return all(r.quality is Quality.GOOD for r in readings)


async def test_reads_every_point_in_five_requests(sim: RtuBus) -> None:
    driver = Driver("n1", config(sim.path, unit=2))
    assert [(r.table, r.address, r.count) for r in driver.requests] == [
        ("holding", 0, 6), ("input", 0, 4), ("input", 100, 2), ("coil", 0, 1), ("discrete", 1, 1),
    ]  # fmt: skip
    before = time.time_ns()
    async with driver:
        readings = await driver.read()
        health = driver.health()
    assert good(readings) and all(r.ts_ns >= before for r in readings)
    assert values(readings) == {
        "r0": 2000, "pair": 2002 << 16 | 2003, "counter": 1, "setpoint": 0, "limit": 0.0,
        "flag": True, "cmd": False,
    }  # fmt: skip
    assert (health.state, health.ok_count, health.timeouts, health.crc_errors) == ("ok", 1, 0, 0)
    assert (sim.units[2].requests, sim.frames) == (5, 5)


async def test_writes_are_read_back(sim: RtuBus) -> None:
    unit = sim.units[1]
    async with Driver("n1", config(sim.path)) as driver:
        await driver.write("setpoint", -5)  # function 6
        await driver.write("limit", 2.5)  # float32: function 16
        await driver.write("cmd", True)  # function 5
        assert (unit.holding[0], unit.holding[4], unit.holding[5], unit.coil[0]) == (
            65531, 0x4020, 0, True,
        )  # fmt: skip
        now = values(await driver.read())
    assert (now["setpoint"], now["limit"], now["cmd"]) == (-5, 2.5, True)


async def test_refused_write_is_a_device_exception(sim: RtuBus) -> None:
    points = POINTS | {"far": {"table": "holding", "address": 500, "dtype": "uint16"}}
    async with Driver("n1", config(sim.path, points=points)) as driver:
        with pytest.raises(DeviceException) as err:
            await driver.write("far", 1)
        assert err.value.code == 2
        assert "n1 on /dev/pts/" in str(err.value) and "illegal data address" in str(err.value)
        readings = {r.point: r for r in await driver.read()}
        health = driver.health()
    assert readings["n1.far"].quality is Quality.COMM  # fails alone: the rest is good
    assert all(r.quality is Quality.GOOD for p, r in readings.items() if p != "n1.far")
    assert (health.state, health.exceptions) == ("degraded", 2)


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


@pytest.mark.parametrize("fault", ["silent", "bad_crc", "garbage", "slow", "unplugged"])
async def test_a_faulty_unit_leaves_the_others_on_time(sim: RtuBus, fault: Fault) -> None:
    """Units 1 and 3 keep every tick, all good, while unit 2 fails.

    Unit 2 costs the line at most one timeout (0.1 s) and one probe (0.02 s) per tick, so
    the others finish each poll well inside the 0.3 s period, with room for a loaded host.
    """
    period, ticks = 0.3, 5
    if fault == "unplugged":
        sim.units[2].fail_after(2, "silent")  # in the middle of its first poll
    else:
        sim.units[2].fault, sim.units[2].slow_s = fault, 0.15  # slow: later than the timeout
    timing = {"timeout_s": 0.1, "probe_timeout_s": 0.02, "offline_after": 2}
    drivers = [Driver(f"n{u}", config(sim.path, unit=u, **timing)) for u in (1, 2, 3)]
    async with drivers[0], drivers[1], drivers[2]:
        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(poll(d, period, ticks)) for d in drivers]
        health = drivers[1].health()
    for run in (runs[0].result(), runs[2].result()):
        assert all(good(readings) for _, readings in run)
        assert max(took for took, _ in run) < period  # never late for the next tick
    faulty = runs[1].result()
    assert all(r.quality is Quality.COMM for _, readings in faulty[1:] for r in readings)
    assert health.state == "offline"
    if fault in ("bad_crc", "garbage"):
        assert health.crc_errors >= 4 and health.timeouts == 0
    else:
        assert health.timeouts >= 1 and health.crc_errors == 0
    if fault == "unplugged":
        first = faulty[0][1]
        assert {r.quality for r in first} == {Quality.GOOD, Quality.COMM}


async def test_silent_unit_costs_the_bus_almost_nothing(sim: RtuBus) -> None:
    sim.units[2].fault = "silent"
    async with Driver("n2", config(sim.path, unit=2, backoff_max_s=30.0)) as driver:
        started = time.monotonic()
        for _ in range(20):
            assert not any(r.quality is Quality.GOOD for r in await driver.read())
        elapsed = time.monotonic() - started
        health = driver.health()
    assert sim.units[2].requests <= 3  # the first timeout, then probes at most
    assert elapsed < 0.2 + 2 * 0.03 + 0.2
    assert (health.state, health.timeouts) == ("offline", sim.units[2].requests)
    assert "next probe in" in health.reason


async def test_silent_unit_is_probed_briefly_and_recovers(sim: RtuBus) -> None:
    unit = sim.units[2]
    unit.fault = "silent"
    async with Driver("n2", config(sim.path, unit=2, timeout_s=0.5)) as driver:
        started = time.monotonic()
        await driver.read()
        assert time.monotonic() - started >= 0.5
        await sim.until(lambda: unit.requests == 1)
        probe_took = 0.0
        async with asyncio.timeout(5):
            while unit.requests < 2:  # until the backoff lets one probe through
                started = time.monotonic()
                await driver.read()
                probe_took = max(probe_took, time.monotonic() - started)
                await asyncio.sleep(0.01)  # the poll period
        assert probe_took < 0.25  # probe_timeout_s, not timeout_s
        unit.fault = "none"
        async with asyncio.timeout(5):
            while not good(readings := await driver.read()):
                await asyncio.sleep(0.01)
        health = driver.health()
    assert values(readings)["r0"] == 2000
    assert (health.state, health.offline_since_ns, health.reason) == ("ok", None, "")


async def test_noise_before_an_answer_is_skipped(sim: RtuBus) -> None:
    sim.units[1].fault = "noise"
    async with Driver("n1", config(sim.path)) as driver:
        readings = await driver.read()
        stats = driver.link.bus.stats  # type: ignore[attr-defined]
    assert good(readings)
    assert stats.stray_bytes >= 5 and stats.bad_frames == 0


async def test_units_on_one_port_share_one_bus(sim: RtuBus) -> None:
    one, three = Driver("n1", config(sim.path)), Driver("n3", config(sim.path, unit=3))
    async with one, three:
        bus = one.link.bus  # type: ignore[attr-defined]
        assert bus is three.link.bus and bus.users == 2  # type: ignore[attr-defined]
        first, second = await asyncio.gather(one.read(), three.read())
        assert good(first) and good(second)
        assert (values(first)["r0"], values(second)["r0"]) == (1000, 3000)
    assert not bus.is_open and bus.users == 0


async def test_units_on_one_port_must_agree_on_the_line(sim: RtuBus) -> None:
    async with Driver("n1", config(sim.path)):
        with pytest.raises(ConfigError) as err:
            async with Driver("n3", config(sim.path, unit=3, baudrate=9600)):
                pass
    assert err.value.key == "devices.n3.port"
    assert "already in use at" in err.value.reason and "115200 8N1" in err.value.reason


async def test_port_that_vanishes_gives_comm_readings(sim: RtuBus) -> None:
    async with Driver("n1", config(sim.path)) as driver:
        assert good(await driver.read())
        await sim.close()  # the USB adapter is pulled out
        started = time.monotonic()
        readings = await driver.read()
        again = await driver.read()
        health = driver.health()
    assert time.monotonic() - started < 0.5
    assert {r.quality for r in readings + again} == {Quality.COMM}
    assert "/dev/pts/" in health.reason and health.state == "degraded"


async def test_port_that_does_not_exist_is_not_an_error_until_read() -> None:
    async with Driver("n1", config("/dev/nonexistent-tty")) as driver:
        readings = await driver.read()
        health = driver.health()
    assert {r.quality for r in readings} == {Quality.COMM}
    assert "cannot open /dev/nonexistent-tty" in health.reason


async def test_cancelling_a_read_in_flight_is_prompt(sim: RtuBus) -> None:
    unit = sim.units[1]
    unit.fault, unit.slow_s = "slow", 30.0
    async with Driver("n1", config(sim.path, timeout_s=30.0)) as driver:
        task = asyncio.create_task(driver.read(), name="read")
        await sim.until(lambda: unit.requests == 1)
        started = time.monotonic()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert task in done and task.cancelled()
        assert time.monotonic() - started < 0.5
        assert (driver.health().timeouts, driver.health().state) == (0, "unknown")
        unit.fault = "none"
        assert good(await driver.read())


async def test_an_outer_timeout_still_works_around_read(sim: RtuBus) -> None:
    sim.units[1].fault = "silent"
    async with Driver("n1", config(sim.path, timeout_s=30.0)) as driver:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await driver.read()


async def test_line_timing_gaps_and_separate_buses_in_parallel() -> None:
    """At 9600 baud the master leaves 3.5 characters between frames; two buses overlap."""
    wide = {"block": {"table": "input", "address": 0, "dtype": "string", "length": 40}}
    units = {1: demo_unit(1), 2: demo_unit(2)}
    async with (
        RtuBus(units, line_timing=True) as a,
        RtuBus({1: demo_unit(1)}, line_timing=True) as b,
    ):
        cfg = {"baudrate": 9600, "points": wide}
        async with (
            Driver("a1", config(a.path, **cfg)) as a1,
            Driver("a2", config(a.path, unit=2, **cfg)) as a2,
            Driver("b1", config(b.path, **cfg)) as b1,
        ):
            started = time.monotonic()
            await a1.read()
            single = time.monotonic() - started
            started = time.monotonic()
            await asyncio.gather(a1.read(), a2.read())
            shared = time.monotonic() - started
            started = time.monotonic()
            await asyncio.gather(a1.read(), b1.read())
            separate = time.monotonic() - started
    minimum = (8 + 3.5 + 85) * 10 / 9600  # request, gap, answer of one 40-register read
    assert minimum <= single < 1.3 * minimum
    assert shared >= 2 * minimum + 3.5 * 10 / 9600  # one line: the units take turns, gap between
    assert separate < 1.5 * single  # two lines: at the same time
    assert min(a.gaps) >= 3.5 * 10 / 9600 * 0.95


async def test_two_names_of_one_port_share_its_bus(sim: RtuBus, tmp_path: Any) -> None:
    link = tmp_path / "ttyRS485"
    link.symlink_to(sim.path)  # as /dev/serial/by-id/... names /dev/ttyUSB0
    one, three = Driver("n1", config(sim.path)), Driver("n3", config(str(link), unit=3))
    async with one, three:
        assert one.link.bus is three.link.bus  # type: ignore[attr-defined]
        assert good(await three.read())
