"""IEC 104 client against c104's server (lib60870): an independent peer on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from cimedge.drivers.iec104 import DeviceConfig, Driver
from cimedge.edge.errors import DeviceException, DriverError
from cimedge.edge.model import Quality, Reading

c104 = pytest.importorskip("c104")

from cimedge.tools.sim.iec104_rtu import Rtu, free_port  # noqa: E402

POINTS = {"level": {"ioa": 1001, "unit": "m"}, "inflow": {"ioa": 1002, "scale": 0.1},
          "pump": {"ioa": 2001, "command": "single", "command_ioa": 3001},
          "breaker": {"ioa": 2002, "command": "double", "command_ioa": 3002},
          "energy": {"ioa": 4001, "counter": True}}


def config(port: int, **change: Any) -> DeviceConfig:
    table = {"driver": "iec104", "host": "127.0.0.1", "port": port, "points": POINTS,
             "t0_s": 2.0, "t1_s": 2.0, "t2_s": 0.5, "t3_s": 5.0, "command_timeout_s": 2.0,
             "backoff_max_s": 0.05} | change
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


async def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for cond() to hold, checking every 10 ms (a condition, not a sleep-for-sync)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    return {r.point.split(".", 1)[1]: r for r in readings}


@pytest.fixture
async def rtu() -> AsyncIterator[Rtu]:
    server = await asyncio.to_thread(Rtu)
    server.start()
    yield server
    await asyncio.to_thread(server.stop)


async def test_interrogation_counters_and_clock_sync(rtu: Rtu) -> None:
    async with Driver("plc", config(rtu.port)) as drv:
        got = by_name(await drv.read())
        health = drv.health()
    assert {n: r.value for n, r in got.items()} == {
        "level": 1.75, "inflow": 42.0, "pump": False, "breaker": True, "energy": 123456}
    assert all(r.quality is Quality.GOOD for r in got.values())
    assert drv.counts["interrogations"] == 1 and drv.counts["clock_syncs"] == 1
    assert rtu.clock_syncs == 1 and health.state == "ok"


@pytest.mark.parametrize(("flag", "quality"), [
    ("Invalid", Quality.COMM), ("NonTopical", Quality.STALE), ("Substituted", Quality.STALE),
    ("Blocked", Quality.STALE), ("Overflow", Quality.RANGE)])
async def test_spontaneous_values_carry_their_quality(rtu: Rtu, flag: str,
                                                      quality: Quality) -> None:
    async with Driver("plc", config(rtu.port)) as drv:
        await drv.read()
        rtu.set("level", 2.5, getattr(c104.Quality, flag))
        await until(lambda: drv.latest.values["level"][0] == 2.5)
        got = by_name(await drv.read())
    assert (got["level"].value, got["level"].quality) == (2.5, quality)


async def test_cyclic_data_and_acknowledgements_keep_the_link(rtu: Rtu) -> None:
    async with Driver("plc", config(rtu.port, w=4, k=8)) as drv:
        await drv.read()
        for i in range(40):  # far past k: without our S-frames c104 would stop sending
            await asyncio.to_thread(rtu.set, "inflow", c104.Int16(i))
        await until(lambda: drv.latest.values["inflow"][0] == pytest.approx(3.9))
        got = by_name(await drv.read())
    assert got["inflow"].quality is Quality.GOOD and drv.counts["links"] == 1


async def test_periodic_reports(rtu: Rtu) -> None:
    await asyncio.to_thread(rtu.stop)
    cyclic = await asyncio.to_thread(Rtu, free_port(), cyclic_ms=100)
    cyclic.start()
    try:
        async with Driver("plc", config(cyclic.port)) as drv:
            await drv.read()
            seen = drv.counts["asdus"]
            await until(lambda: drv.counts["asdus"] >= seen + 3)
    finally:
        await asyncio.to_thread(cyclic.stop)


async def test_commands_select_before_operate_and_read_back(rtu: Rtu) -> None:
    async with Driver("plc", config(rtu.port)) as drv:
        await drv.read()
        await drv.write("pump", True)
        await drv.write("breaker", False)
        got = by_name(await drv.read())
        with pytest.raises(ValueError, match="not a command point"):
            await drv.write("level", 1.0)
    assert got["pump"].value is True and got["breaker"].value is False
    assert [name for name, _ in rtu.commands] == ["pump", "breaker_cmd"]


async def test_refused_and_unfulfilled_commands(rtu: Rtu) -> None:
    async with Driver("plc", config(rtu.port, command_timeout_s=0.5)) as drv:
        await drv.read()
        rtu.refuse = True
        with pytest.raises(DeviceException, match="refused"):
            await drv.write("pump", True)
        rtu.refuse, rtu.stuck = False, True
        with pytest.raises(DriverError, match="executed, but the point reads False"):
            await drv.write("pump", True)
        assert drv.health().exceptions == 1


async def test_lost_link_goes_stale_then_reconnects() -> None:
    port = free_port()
    first = await asyncio.to_thread(Rtu, port)
    first.start()
    async with Driver("plc", config(port, stale_after_s=0.3)) as drv:
        await drv.read()
        await asyncio.to_thread(first.stop)
        await until(lambda: drv.link is None or drv.link.closed)
        await until(lambda: all(r.quality is Quality.STALE for r in drv.latest.readings()))
        again = await asyncio.to_thread(Rtu, port)
        again.start()
        try:
            async with asyncio.timeout(10):  # poll as the scheduler would, until reconnected
                while drv.counts["interrogations"] < 2:
                    got = by_name(await drv.read())
                    await asyncio.sleep(0.02)
        finally:
            await asyncio.to_thread(again.stop)
    assert all(r.quality is Quality.GOOD for r in got.values())


async def test_silent_peer_times_out_and_a_read_can_be_cancelled() -> None:
    accepted = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Driver("plc", config(port, t1_s=0.3, t2_s=0.1, backoff_max_s=30.0)) as drv:
            readings = await drv.read()  # ends at t1 without STARTDT con
            assert all(r.quality is Quality.COMM for r in readings)
            assert drv.health().timeouts == 1 and "STARTDT" in drv.health().reason
            drv.silence.tries = 0
            accepted.clear()
            task = asyncio.create_task(drv.read())
            await accepted.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        server.close()


async def test_the_demos_lite_rtu_serves_the_same_points() -> None:
    from cimedge.tools.sim.iec104_rtu import LiteRtu

    lite = LiteRtu(cyclic_s=0.05)
    port = await lite.start()
    try:
        async with Driver("plc", config(port)) as drv:
            first = by_name(await drv.read())
            await drv.write("pump", True)
            seen = drv.counts["asdus"]
            await until(lambda: drv.counts["asdus"] >= seen + 2)  # cyclic level
            got = by_name(await drv.read())
    finally:
        await lite.close()
    assert first["level"].value == 1.75 and first["energy"].value == 123456
    assert got["pump"].value is True and lite.commands == [(3001, True)]
