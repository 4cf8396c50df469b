"""HJ 212 driver against tools.sim.hj212_station over loopback TCP, both ways round."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cimedge.drivers.hj212 import DeviceConfig, Driver
from cimedge.edge.model import Quality, Reading
from cimedge.tools.sim.hj212_station import Station

MN_A, MN_B = "LP0001AQ01", "LP0001AQ02"
POINTS = {
    "pm25": {"code": "a34004", "unit": "ug/m3"}, "pm10": {"code": "a34002"},
    "noise": {"code": "LA", "unit": "dBA"}, "pm25_hour": {"code": "a34004", "cn": 2061,
                                                         "field": "Avg"},
}  # fmt: skip


@pytest.fixture
def pw(tmp_path: Path) -> str:
    path = tmp_path / "aq.pw"
    path.write_text("s3cret\n")
    return str(path)


def config(pw: str, mn: str = MN_A, **change: Any) -> DeviceConfig:
    table = {"driver": "hj212", "mode": "listen", "mn": mn, "password_file": pw,
             "listen_host": "127.0.0.1", "listen_port": 0, "points": POINTS,
             "timeout_s": 0.5, "backoff_max_s": 0.05} | change
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
async def station() -> AsyncIterator[Station]:
    s = Station(MN_A, "s3cret", interval_s=30.0, hour_every=0)
    yield s
    await s.close()


async def connected(driver: Driver, station: Station) -> None:
    assert driver.listener is not None
    station.connect("127.0.0.1", driver.listener.bound_port)
    await station.until(lambda: station.answers >= 1)


async def test_listen_takes_uploads_answers_9014_and_stamps_by_datatime(
        pw: str, station: Station) -> None:
    async with Driver("aq", config(pw)) as drv:
        before = drv.health()
        await connected(drv, station)
        await station.push(2061)
        await station.until(lambda: station.answers >= 2)
        got = by_name(await drv.read())
    assert before.state == "unknown"
    assert {n: r.value for n, r in got.items()} == {
        "pm25": 35.0, "pm10": 58.0, "noise": 56.2, "pm25_hour": 35.0}
    assert all(r.quality is Quality.GOOD for r in got.values())
    assert abs(got["pm25"].ts_ns - time.time_ns()) < 5e9  # DataTime has whole seconds
    assert drv.counts["packets"] == 2 and drv.health().state == "ok"


async def test_two_stations_share_a_port_and_a_dead_one_does_not_hold_the_other(
        pw: str, station: Station) -> None:
    async with Driver("a", config(pw)) as a, \
            Driver("b", config(pw, MN_B, listen_port=0)) as b:
        assert a.listener is b.listener  # same host and port 0: one shared listener
        await connected(a, station)
        ra, rb = await asyncio.gather(a.read(), b.read())  # b's station never connects
    assert all(r.quality is Quality.GOOD for r in ra if not r.point.endswith("hour"))
    assert all(r.quality is Quality.COMM and r.value is None for r in rb)


@pytest.mark.parametrize("fault", ["bad_crc", "garbage"])
async def test_bad_packets_are_counted_and_skipped(pw: str, station: Station, fault: str) -> None:
    async with Driver("aq", config(pw)) as drv:
        await connected(drv, station)
        station.fault = fault  # type: ignore[assignment]
        sent = station.sent
        await station.push()
        await station.push()
        station.fault = "none"
        await station.push()
        await station.until(lambda: station.answers >= 2)
        await drv.read()
    assert station.sent == sent + 3
    # bad CRC: the two bad uploads are lost; noise: counted, the packets behind it kept
    assert drv.counts["packets"] == (2 if fault == "bad_crc" else 4)
    assert drv.health().crc_errors >= 2


async def test_split_writes_and_split_packets_are_joined(pw: str, station: Station) -> None:
    station.fault, station.packet_limit = "split", 220
    station.values.update({f"a9{i:04d}": float(i) for i in range(30)})
    async with Driver("aq", config(pw)) as drv:
        await connected(drv, station)
        assert len(station.report()) > 1
        got = by_name(await drv.read())
    assert got["pm25"].value == 35.0 and got["noise"].value == 56.2


async def test_wrong_password_is_refused(pw: str, station: Station) -> None:
    station.fault = "wrong_password"
    async with Driver("aq", config(pw)) as drv:
        assert drv.listener is not None
        station.connect("127.0.0.1", drv.listener.bound_port)
        await station.until(lambda: station.sent >= 1)
        await until(lambda: drv.counts["refused"])  # the listener's own task takes it
        readings = await drv.read()
    assert drv.counts == drv.counts | {"refused": 1, "packets": 0}
    assert station.answers == 0 and all(r.quality is Quality.COMM for r in readings)
    assert "wrong PW" in drv.health().reason


async def test_clock_far_off_stamps_on_arrival_and_sets_the_station_clock(
        pw: str, station: Station) -> None:
    station.fault = "clock_off"
    async with Driver("aq", config(pw)) as drv:
        await connected(drv, station)
        await station.until(lambda: station.clock_sets >= 1)
        got = by_name(await drv.read())
        await station.push()
        await station.until(lambda: station.answers >= 2)
        after = by_name(await drv.read())
    assert abs(got["pm25"].ts_ns - time.time_ns()) < 5e9  # arrival, not a day ahead
    assert drv.counts["clock_off"] == 1 and drv.counts["clock_set"] == 1
    assert station.fault == "none" and abs(station.clock_offset_s) < 5
    assert after["pm25"].quality is Quality.GOOD


async def test_data_flags_set_quality(pw: str, station: Station) -> None:
    station.flags = {"a34004": "T", "a34002": "M", "LA": "D"}
    async with Driver("aq", config(pw)) as drv:
        await connected(drv, station)
        got = by_name(await drv.read())
    assert (got["pm25"].quality, got["pm10"].quality, got["noise"].quality) == (
        Quality.RANGE, Quality.STALE, Quality.COMM)
    assert got["pm25"].value == 35.0  # the value is kept, its quality says what it is worth


async def test_poll_mode_asks_for_each_kind_of_data(pw: str) -> None:
    station = Station(MN_A, "s3cret")
    port = await station.serve()
    try:
        async with Driver("aq", config(pw, mode="poll", host="127.0.0.1", port=port)) as drv:
            got = by_name(await drv.read())
            health = drv.health()
    finally:
        await station.close()
    assert station.requests == 2  # 2011, then 2061 with BeginTime/EndTime
    assert {n: r.value for n, r in got.items()} == {
        "pm25": 35.0, "pm10": 58.0, "noise": 56.2, "pm25_hour": 35.0}
    assert health.state == "ok"


async def test_poll_mode_silent_station_times_out_backs_off_and_can_be_cancelled(
        pw: str) -> None:
    station = Station(MN_A, "s3cret", fault="silent")
    port = await station.serve()
    try:
        async with Driver("aq", config(pw, mode="poll", host="127.0.0.1", port=port,
                                       timeout_s=0.2, backoff_max_s=30.0)) as drv:
            first = await drv.read()
            second = await drv.read()  # inside the backoff window: no I/O
            assert station.requests == 1
            assert all(r.quality is Quality.COMM for r in first + second)
            assert drv.health().timeouts == 1
            drv.silence.tries = 0
            task = asyncio.create_task(drv.read())
            await station.until(lambda: station.requests >= 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await station.close()


async def test_poll_mode_wrong_password_is_a_device_exception(pw: str) -> None:
    station = Station(MN_A, "other")
    port = await station.serve()
    try:
        async with Driver("aq", config(pw, mode="poll", host="127.0.0.1", port=port)) as drv:
            await drv.read()
            health = drv.health()
    finally:
        await station.close()
    assert health.exceptions == 1 and "QnRtn=3" in health.reason


async def test_unreadable_password_file_fails_this_device_only_until_fixed(
        tmp_path: Path, station: Station) -> None:
    path = tmp_path / "late.pw"
    async with Driver("aq", config(str(path))) as drv:
        readings = await drv.read()
        assert drv.listener is None and all(r.quality is Quality.COMM for r in readings)
        assert "cannot read the HJ 212 password file" in drv.health().reason
        path.write_text("s3cret")
        await drv.read()  # the next poll reads the file and starts listening
        await connected(drv, station)
        assert by_name(await drv.read())["pm25"].value == 35.0


async def test_a_flood_of_connections_is_bounded(pw: str) -> None:
    async with Driver("aq", config(pw, max_connections=2)) as drv:
        assert drv.listener is not None
        port = drv.listener.bound_port
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        for reader, _ in conns[2:]:
            assert await reader.read() == b""  # closed at accept
        assert drv.listener.stats.refused == 2
        for _, writer in conns:
            writer.close()
