"""CJ/T 188 driver against tools.sim.cjt188_meter over a real pseudo-terminal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from cimedge.drivers import dlt645
from cimedge.drivers.cjt188 import DeviceConfig, Driver
from cimedge.drivers.cjt188 import frame as cj
from cimedge.drivers.dlt645 import frame as dl
from cimedge.edge.errors import BadFrame, DriverError
from cimedge.edge.model import Quality, Reading
from cimedge.tools.sim.cjt188_meter import Meter, MeterLine
from cimedge.tools.sim.dlt645_meter import demo_meter

A, B, HEAT = "00201510270588", "00201510270589", "00000000003001"
POINTS = {"volume": {"field": "flow_total"}, "settled": {"field": "flow_settlement"},
          "valve": {"field": "valve_open"}, "battery_low": {"field": "battery_low"}}


@pytest.fixture
async def line() -> AsyncIterator[MeterLine]:
    meters = [Meter(A), Meter(B), Meter(HEAT, meter_type=0x20)]
    async with MeterLine(meters, baudrate=115200, seed=4) as sim:
        yield sim


def config(port: str, address: str = A, **change: Any) -> DeviceConfig:
    table = {"driver": "cjt188", "port": port, "address": address, "baudrate": 115200,
             "points": POINTS, "timeout_s": 0.1, "probe_timeout_s": 0.02,
             "valve_timeout_s": 0.2, "backoff_max_s": 0.05} | change
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


def values(readings: list[Reading]) -> dict[str, Any]:
    return {r.point.split(".", 1)[1]: r.value for r in readings}


async def test_one_exchange_reads_every_field(line: MeterLine) -> None:
    async with Driver("wm", config(line.path)) as meter:
        readings = await meter.read()
        health = meter.health()
    assert values(readings) == {"volume": 1234.56, "settled": 1200.0, "valve": True,
                                "battery_low": False}
    assert all(r.quality is Quality.GOOD for r in readings)
    assert line.meters[A].requests == 1 and line.meters[B].requests == 0
    assert health.state == "ok"


async def test_heat_meter_fields(line: MeterLine) -> None:
    points = {f: {"field": f} for f in ("heat_total", "heat_power", "flow_rate", "flow_total",
                                        "supply_temp", "return_temp", "working_hours")}
    async with Driver("hm", config(line.path, HEAT, meter_type="heat", points=points)) as m:
        got = values(await m.read())
    assert got == {"heat_total": 4567.8, "heat_power": 12.5, "flow_rate": 0.8123,
                   "flow_total": 1234.56, "supply_temp": 65.2, "return_temp": 45.1,
                   "working_hours": 8760}


async def test_valve_write_is_read_back(line: MeterLine) -> None:
    async with Driver("wm", config(line.path)) as meter:
        await meter.write("valve", False)
        closed = values(await meter.read())["valve"]
        await meter.write("valve", True)
        line.meters[A].stuck = True
        with pytest.raises(DriverError, match="valve commanded closed, reads open"):
            await meter.write("valve", False)
        with pytest.raises(ValueError, match="only the valve_open point"):
            await meter.write("volume", 1.0)
    assert closed is False and line.meters[A].valve_commands == 3


async def test_valve_fault_reads_range(line: MeterLine) -> None:
    line.meters[A].valve_fault = True
    async with Driver("wm", config(line.path)) as meter:
        got = {r.point: r for r in await meter.read()}
    assert got["wm.valve"].value is None and got["wm.valve"].quality is Quality.RANGE
    assert got["wm.volume"].quality is Quality.GOOD


@pytest.mark.parametrize("fault", ["bad_crc", "garbage", "silent"])
async def test_faulty_meter_fails_alone_and_is_counted(line: MeterLine, fault: str) -> None:
    line.meters[A].fault = fault  # type: ignore[assignment]
    async with Driver("a", config(line.path)) as a, Driver("b", config(line.path, B)) as b:
        ra, rb = await asyncio.gather(a.read(), b.read())
        ha = a.health()
    assert all(r.quality is Quality.COMM for r in ra)
    assert all(r.quality is Quality.GOOD for r in rb)
    assert (ha.timeouts if fault == "silent" else ha.crc_errors) == 1


async def test_silent_meter_backs_off_and_a_read_can_be_cancelled(line: MeterLine) -> None:
    line.meters[A].fault = "silent"
    async with Driver("a", config(line.path, backoff_max_s=30.0)) as a:
        await a.read()
        await a.read()  # inside the backoff window: no request
        assert line.meters[A].requests == 1
        a.silence.tries = 0
        task = asyncio.create_task(a.read())
        await line.until(lambda: line.meters[A].requests == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class MixedLine(MeterLine):
    """CJ/T 188 meters and a DL/T 645 meter on one simulated RS-485 line."""

    def __init__(self, meters: list[Meter], dlt: Any) -> None:
        super().__init__(meters, baudrate=115200)
        self.dlt = dlt

    def _take(self, rx: bytes) -> int:
        at = rx.find(b"\x68")
        if at >= 0 and len(rx) >= at + 10 and rx[at + 7] == 0x68:  # a DL/T 645 request
            end = at + 12 + rx[at + 9]
            if len(rx) < end:
                return at
            try:
                request = dl.parse(rx[at:end])
            except BadFrame:
                return at + 1
            self._request_seen()
            self.dlt.requests += 1
            self._answer(end, self.dlt.respond(request), "none", 0.0)
            return end
        return super()._take(rx)


async def test_shares_the_line_with_a_dlt645_meter() -> None:
    energy = demo_meter("000012345678")
    async with MixedLine([Meter(A)], energy) as line:
        dcfg = msgspec.convert({"driver": "dlt645", "port": line.path, "address": "000012345678",
                                "baudrate": 115200, "points": {"v": {"di": "voltage_a"}},
                                "timeout_s": 0.2}, dlt645.DeviceConfig)
        async with Driver("wm", config(line.path, timeout_s=0.2)) as wm, \
                dlt645.Driver("em", dcfg) as em:
            assert wm.bus is em.bus
            for _ in range(3):
                rw, re_ = await asyncio.gather(wm.read(), em.read())
                assert values(rw)["volume"] == 1234.56 and values(re_) == {"v": 229.8}
    assert line.meters[A].requests == 3 and energy.requests == 3
    assert cj.START == dl.START  # both start with 68: the finders tell them apart by layout


async def test_a_port_that_refuses_its_settings_fails_this_device_only(
        line: MeterLine, monkeypatch: pytest.MonkeyPatch) -> None:
    """tcsetattr's EINVAL (a Linux PTY reopened at 8E1 gives it) is termios.error, not OSError."""
    import termios

    import serial  # type: ignore[import-untyped]

    def refuse(*args: object, **kwargs: object) -> None:
        raise termios.error(22, "Invalid argument")

    monkeypatch.setattr(serial, "Serial", refuse)
    async with Driver("wm", config(line.path)) as meter:
        readings = await meter.read()
        health = meter.health()
    assert all(r.quality is Quality.COMM for r in readings)
    assert "refuses its settings (Invalid argument)" in health.reason
