"""SL 651 centre end against tools.sim.sl651_station over loopback TCP."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cimedge.drivers.sl651 import DeviceConfig, Driver
from cimedge.edge.errors import DriverError
from cimedge.edge.model import Quality, Reading
from cimedge.tools.sim.sl651_station import TZ, Station

ADDR = "0012345678"
POINTS = {"level": {"element": "water_level"}, "rain": {"element": "rainfall_now"},
          "total": {"element": "rainfall_total"}, "battery": {"element": "voltage"},
          "door": {"element": "status", "bit": 7}}


@pytest.fixture
def pw(tmp_path: Path) -> str:
    path = tmp_path / "hs.pw"
    path.write_text("1234\n")
    return str(path)


def config(pw: str, **change: Any) -> DeviceConfig:
    table = {"driver": "sl651", "station": ADDR, "password_file": pw, "listen_host": "127.0.0.1",
             "points": POINTS, "timeout_s": 1.0} | change
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
    s = Station(ADDR, "1234", interval_s=30.0)
    yield s
    await s.close()


async def connected(drv: Driver, station: Station, confirmations: int = 1) -> None:
    assert drv.listener is not None
    station.connect("127.0.0.1", drv.listener.bound_port)
    await station.until(lambda: station.confirmations >= confirmations)


async def test_reports_are_confirmed_and_read(pw: str, station: Station) -> None:
    station.status = 1 << 7
    async with Driver("hs", config(pw)) as drv:
        await connected(drv, station)
        got = by_name(await drv.read())
        health = drv.health()
    assert {n: r.value for n, r in got.items()} == {
        "level": 1.25, "rain": 0.5, "total": 120.5, "battery": 12.6, "door": True}
    assert all(r.quality is Quality.GOOD for r in got.values())
    now = time.time_ns()
    assert now - 5e9 < got["level"].ts_ns <= now  # the report's send time, whole seconds
    assert health.state == "ok" and drv.counts["confirmed"] == 1


async def test_missing_value_is_comm(pw: str, station: Station) -> None:
    station.values[0x39] = None
    async with Driver("hs", config(pw)) as drv:
        await connected(drv, station)
        got = by_name(await drv.read())
    assert (got["level"].value, got["level"].quality) == (None, Quality.COMM)
    assert got["rain"].quality is Quality.GOOD


@pytest.mark.parametrize("fault", ["bad_crc", "garbage", "split"])
async def test_bad_messages_counted_and_skipped(pw: str, station: Station, fault: str) -> None:
    async with Driver("hs", config(pw)) as drv:
        await connected(drv, station)
        station.fault = fault  # type: ignore[assignment]
        await station.report()
        station.fault = "none"
        await station.report()
        await station.until(lambda: station.confirmations >= (2 if fault == "bad_crc" else 3))
        got = by_name(await drv.read())
    assert got["level"].value == 1.25
    if fault == "split":
        assert drv.counts["messages"] == 3 and drv.health().crc_errors == 0
    else:
        assert drv.health().crc_errors >= 1
        assert drv.counts["messages"] == (2 if fault == "bad_crc" else 3)


async def test_multi_packet_reports_are_acknowledged_and_joined(pw: str, station: Station) -> None:
    station.packet_limit = 9
    async with Driver("hs", config(pw)) as drv:
        await connected(drv, station, confirmations=3)
        packets = len(station.messages(0x32, station.body()))
        await station.until(lambda: station.confirmations >= packets)
        got = by_name(await drv.read())
    assert packets > 3 and got["level"].value == 1.25 and got["door"].value is False


async def test_wrong_password_is_refused(pw: str, station: Station) -> None:
    station.fault = "wrong_password"
    async with Driver("hs", config(pw)) as drv:
        assert drv.listener is not None
        station.connect("127.0.0.1", drv.listener.bound_port)
        await until(lambda: drv.counts["refused"])
        readings = await drv.read()
    assert station.confirmations == 0 and all(r.quality is Quality.COMM for r in readings)
    assert "wrong password" in drv.health().reason


async def test_clock_far_off_stamps_on_arrival_and_sets_the_clock(
        pw: str, station: Station) -> None:
    station.fault = "clock_off"
    async with Driver("hs", config(pw)) as drv:
        await connected(drv, station)
        await station.until(lambda: station.clock_sets >= 1)
        got = by_name(await drv.read())
    assert abs(got["level"].ts_ns - time.time_ns()) < 5e9
    assert drv.counts["clock_off"] == 1 and drv.counts["clock_set"] == 1
    assert station.fault == "none" and abs(station.clock_offset_s) < 5


async def test_query_history_and_clock(pw: str, station: Station) -> None:
    async with Driver("hs", config(pw, query=True)) as drv:
        await connected(drv, station)
        station.values[0x39] = 2.5
        got = by_name(await drv.read())  # asks 0x37: the station's current values
        start = dt.datetime(2026, 7, 1, 8, tzinfo=TZ)
        series = await drv.history(0x39, (4 << 3) | 3, start, start + dt.timedelta(hours=2), 3600)
        await drv.set_clock()
    assert got["level"].value == 2.5 and station.queries == 3
    assert [v for _, v in series] == [2.5, 2.51, 2.52]
    assert [t for t, _ in series] == [int((start + dt.timedelta(hours=h)).timestamp() * 1e9)
                                      for h in range(3)]
    assert station.clock_sets == 1


async def test_silent_station_times_out_and_is_not_waited_for(pw: str, station: Station) -> None:
    async with Driver("hs", config(pw, query=True, timeout_s=0.2)) as drv:
        await connected(drv, station)
        station.fault = "silent"
        readings = await drv.read()
        assert drv.health().timeouts == 1
        assert all(r.quality is Quality.GOOD for r in readings)  # the report heard before
        with pytest.raises(DriverError, match="no answer"):
            await drv.history(0x39, 0x23, dt.datetime(2026, 1, 1, tzinfo=TZ),
                              dt.datetime(2026, 1, 1, 1, tzinfo=TZ), 3600)


async def test_not_connected_reads_comm_at_once(pw: str) -> None:
    async with Driver("hs", config(pw, query=True)) as drv:
        readings = await drv.read()  # no station: no query waits for one
    assert all(r.quality is Quality.COMM for r in readings)
    assert "not connected" in drv.health().reason


async def test_bad_password_file_fails_this_device_only(tmp_path: Path) -> None:
    bad = tmp_path / "pw"
    bad.write_text("12G4")
    async with Driver("hs", config(str(bad))) as drv:
        readings = await drv.read()
    assert drv.listener is None and all(r.quality is Quality.COMM for r in readings)
    assert "4 hex digits" in drv.health().reason
