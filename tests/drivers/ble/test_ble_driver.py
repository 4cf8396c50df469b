"""BLE driver with only bleak's boundary replaced: scanner by the replay tool, client by a fake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from bleak.exc import BleakError

from cimedge.drivers.ble import DeviceConfig, Driver, bthome
from cimedge.drivers.ble import driver as ble_driver
from cimedge.edge.errors import ConfigError
from cimedge.edge.model import Quality, Reading
from cimedge.tools.sim.bthome_replay import Advert, ReplayScanner, make_capture, replaying

MAC, OTHER = "A4:C1:38:8D:18:B2", "A4:C1:38:00:00:01"
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
POINTS = {
    "temperature": {"object": "temperature"}, "humidity": {"object": "humidity"},
    "battery": {"object": "battery"}, "lux": {"object": "illuminance", "scale": 0.001},
}  # fmt: skip


def config(**change: Any) -> DeviceConfig:
    table = {"driver": "ble", "address": MAC, "points": POINTS} | change
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


def values(readings: list[Reading]) -> dict[str, Any]:
    return {r.point.split(".", 1)[1]: r.value for r in readings}


def advert(objects: list[tuple[int, bthome.Value]], address: str = MAC, *,
           key: bytes | None = None, counter: int = 1) -> Advert:
    data = bthome.encrypt(objects, address, key, counter) if key else bthome.encode(objects)
    return Advert(0.0, address, data.hex())


@pytest.fixture
def radio() -> Iterator[type[ReplayScanner]]:
    with replaying([]) as replay:
        yield replay


async def test_reads_the_last_values_heard(radio: type[ReplayScanner]) -> None:
    async with Driver("env", config()) as env:
        before = await env.read()
        (scan,) = radio.instances
        scan.emit(advert([(0x01, 97), (0x02, 21.37), (0x03, 55.5), (0x05, 12345.67)]))
        scan.emit(advert([(0x02, 99.0)], OTHER))  # another sensor: not ours
        after = await env.read()
        health = env.health()
    assert {r.quality for r in before} == {Quality.COMM}
    assert all(r.quality is Quality.GOOD for r in after)
    assert values(after) == {"temperature": 21.37, "humidity": 55.5, "battery": 97,
                             "lux": pytest.approx(12.34567)}
    assert (health.state, health.crc_errors) == ("ok", 0)
    assert scan.scanning_mode == "passive"
    assert scan.kwargs["bluez"]["adapter"] == "hci0" and scan.kwargs["bluez"]["or_patterns"]


async def test_values_go_stale_then_fresh_again(radio: type[ReplayScanner]) -> None:
    async with Driver("env", config(stale_after_s=0.05, offline_after=2)) as env:
        radio.instances[0].emit(advert([(0x02, 20.0)]))
        assert (await env.read())[0].quality is Quality.GOOD
        await asyncio.sleep(0.06)  # let the value age past stale_after_s: the thing under test
        stale = await env.read()
        assert (stale[0].quality, stale[0].value) == (Quality.STALE, 20.0)
        assert stale[1].quality is Quality.COMM  # humidity: never heard
        assert env.health().state == "degraded"
        radio.instances[0].emit(advert([(0x02, 20.5)]))
        assert values(await env.read())["temperature"] == 20.5


async def test_encrypted_sensor_with_its_bind_key(
    radio: type[ReplayScanner], tmp_path: Path
) -> None:
    key_file = tmp_path / "env.key"
    key_file.write_text(KEY.hex() + "\n")
    async with Driver("env", config(bind_key_file=str(key_file))) as env:
        scan = radio.instances[0]
        scan.emit(advert([(0x02, 19.5)], key=KEY, counter=10))
        scan.emit(advert([(0x02, 88.0)]))  # plaintext while a key is set: dropped
        scan.emit(advert([(0x02, 77.0)], key=bytes(16), counter=11))  # wrong key: dropped
        scan.emit(advert([(0x02, 66.0)], key=KEY, counter=9))  # an old counter: a replay
        readings = await env.read()
        health = env.health()
        assert env.replays == 1
    assert values(readings)["temperature"] == 19.5
    assert health.crc_errors == 2


async def test_bind_key_file_problems_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    for path, reason in ((bad, "does not hold a bind key"), (tmp_path / "none", "cannot read")):
        with pytest.raises(ConfigError) as err:
            Driver("env", config(bind_key_file=str(path)))
        assert err.value.key == "devices.env.bind_key_file" and reason in err.value.reason


async def test_devices_on_one_adapter_share_one_scanner(radio: type[ReplayScanner]) -> None:
    two = config(address=OTHER, points={"t": {"object": "temperature"}})
    async with Driver("a", config()) as a, Driver("b", two) as b:
        assert len(radio.instances) == 1
        radio.instances[0].emit(advert([(0x02, 1.0)]))
        radio.instances[0].emit(advert([(0x02, 2.0)], OTHER))
        assert (values(await a.read())["temperature"], values(await b.read())["t"]) == (1.0, 2.0)


async def test_a_replayed_capture_reaches_the_readings(tmp_path: Path) -> None:
    capture = make_capture(MAC, count=20, period_s=0.01, key=KEY)
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex())
    with replaying(capture, speed=1.0) as replay:
        async with Driver("env", config(bind_key_file=str(key_file))) as env:
            async with asyncio.timeout(5):
                await replay.instances[0].done.wait()
            readings = await env.read()
    assert all(r.quality is Quality.GOOD for r in readings)
    last = bthome.parse(bytes.fromhex(capture[-1].data), MAC, KEY).measurements
    assert values(readings)["temperature"] == next(m.value for m in last if m.name == "temperature")


async def test_scanner_that_will_not_start_shows_in_health() -> None:
    class Broken(ReplayScanner):
        async def start(self) -> None:
            raise BleakError("org.bluez.Error.NotReady")

    with replaying([]) as replay:
        replay.start = Broken.start  # type: ignore[method-assign]
        async with Driver("env", config()) as env:
            readings = await env.read()
            health = env.health()
    assert {r.quality for r in readings} == {Quality.COMM}
    assert "cannot scan on hci0: org.bluez.Error.NotReady" in health.reason


class FakeClient:
    """Stands in for bleak.BleakClient: a peripheral with characteristics, and faults."""

    chars: dict[str, bytearray] = {}  # noqa: RUF012
    fail_connect = False
    hang_reads = False
    connects = 0
    notify: dict[str, Callable[[object, bytearray], None]] = {}  # noqa: RUF012

    def __init__(self, address: str, **kwargs: Any) -> None:  # noqa: ANN401
        self.address, self.kwargs, self.is_connected = address, kwargs, False

    async def connect(self) -> None:
        type(self).connects += 1
        if self.fail_connect:
            raise BleakError(f"Device with address {self.address} was not found")
        self.is_connected = True

    async def disconnect(self) -> None:
        self.is_connected = False

    async def read_gatt_char(self, uuid: str) -> bytearray:
        if self.hang_reads:
            await asyncio.Event().wait()
        return self.chars[uuid]

    async def write_gatt_char(self, uuid: str, data: bytes, *, response: bool) -> None:
        assert response
        self.chars[uuid] = bytearray(data)

    async def start_notify(self, uuid: str, callback: Callable[[object, bytearray], None]) -> None:
        self.notify[uuid] = callback


@pytest.fixture
def peripheral(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    fake = type("Peripheral", (FakeClient,), {
        "chars": {"2a6e": bytearray((0x3C, 0xF6)), "2a19": bytearray((87,)),
                  "ff01": bytearray(b"\x00\x00\x10\x41")},
        "notify": {}, "connects": 0,
    })  # fmt: skip
    monkeypatch.setattr(ble_driver, "BleakClient", fake)
    return fake


GATT = {
    "angle": {"characteristic": "2a6e", "dtype": "int16", "scale": 0.01},
    "battery": {"characteristic": "2a19", "dtype": "uint8"},
    "tilt": {"characteristic": "ff01", "dtype": "float32", "notify": True},
    "flags": {"characteristic": "ff01", "dtype": "uint16", "byte_offset": 0, "notify": True},
}  # fmt: skip


def gatt(**change: Any) -> DeviceConfig:
    return config(mode="gatt", points=GATT, timeout_s=0.2, backoff_max_s=0.05, **change)


async def test_gatt_reads_and_notifications(peripheral: type[FakeClient]) -> None:
    async with Driver("tilt", gatt()) as tilt:
        first = await tilt.read()
        peripheral.notify["ff01"](None, bytearray(b"\x07\x00\x20\x41"))
        second = await tilt.read()
    assert values(first)["angle"] == pytest.approx(-25.0) and values(first)["battery"] == 87
    assert [r.quality for r in first[2:]] == [Quality.COMM, Quality.COMM]  # nothing notified yet
    assert values(second)["tilt"] == pytest.approx(10.0000067) and values(second)["flags"] == 7
    assert all(r.quality is Quality.GOOD for r in second)


async def test_gatt_write_is_read_back(peripheral: type[FakeClient]) -> None:
    async with Driver("tilt", gatt()) as tilt:
        await tilt.write("battery", 42)
        assert peripheral.chars["2a19"] == bytearray((42,))
        with pytest.raises(ValueError, match="not a writable GATT point"):
            await tilt.write("tilt", 1.0)


async def test_gatt_device_away_backs_off_and_comes_back(peripheral: type[FakeClient]) -> None:
    peripheral.fail_connect = True
    async with Driver("tilt", gatt(offline_after=2)) as tilt:
        for _ in range(5):
            readings = await tilt.read()
        assert {r.quality for r in readings} == {Quality.COMM}
        assert tilt.health().state == "offline"
        assert peripheral.connects < 6  # backoff: not one connect per poll
        peripheral.fail_connect = False
        async with asyncio.timeout(5):
            while values(readings := await tilt.read())["battery"] is None:
                await asyncio.sleep(0.01)  # the poll period
        assert tilt.health().state in ("ok", "degraded")


async def test_gatt_read_that_hangs_times_out_and_drops_the_link(
    peripheral: type[FakeClient],
) -> None:
    async with Driver("tilt", gatt()) as tilt:
        peripheral.hang_reads = True
        readings = await tilt.read()
        health = tilt.health()
    assert values(readings)["angle"] is None and values(readings)["battery"] is None
    assert health.timeouts == 1 and "read angle: no answer in time" in health.reason


def test_gatt_and_bthome_keys_do_not_mix() -> None:
    with pytest.raises(ConfigError) as err:
        msgspec.convert({"driver": "ble", "address": MAC, "mode": "gatt",
                         "points": {"t": {"object": "temperature"}}}, DeviceConfig).check()
    assert err.value.key == "points.t.object"
    with pytest.raises(ConfigError) as err:
        config(points={"t": {"object": "warp_speed"}}).check()
    assert "no BTHome object" in err.value.reason
