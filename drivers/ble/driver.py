"""BLE sensor driver: BTHome v2 advertisements (passive) or GATT reads and notifications (bleak).

BTHome: the shared ``scanner.Listener`` of the adapter hands this device its advertisements;
each updates the points it carries. ``read()`` returns, per point, the last value heard
(stamped when it was heard): GOOD while younger than ``stale_after_s``, then STALE with the
same value, COMM (no value) if none was ever heard. A bad advertisement (garbled, wrong key,
plaintext while a bind key is set, a replayed counter) is dropped and counted.

GATT: a connection (``BleakClient``) kept open between polls; read points are read at each
poll, notify points take the last notification. A failed connect or read drops the link and
backs off (``drivers.health.Silence``): polls in the backoff window fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any, Self

from bleak import BleakClient
from bleak.exc import BleakError

from cimedge.drivers.ble import bthome, scanner
from cimedge.drivers.ble.config import DeviceConfig, PointConfig, bind_key
from cimedge.drivers.health import HealthBook, Silence
from cimedge.edge.errors import BadFrame, ConfigError, DriverError, Timeout
from cimedge.edge.model import DeviceHealth, Quality, Reading, Value

_FORMATS = {
    "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "float32": "f", "float64": "d",
}  # fmt: skip
_LINK_ERRORS = (BleakError, OSError, EOFError, TimeoutError)


class Driver:
    """One BLE sensor (see ``drivers.base.Driver``)."""

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; reads the bind key file, if any; no radio work until ``__aenter__``."""
        config.check()
        self.device, self.config = device, config
        try:
            self.key = bind_key(config.bind_key_file) if config.bind_key_file else None
        except ValueError as exc:
            raise ConfigError("", f"devices.{device}.bind_key_file", str(exc)) from None
        self.address = config.address.upper()
        self.where = f"{device} ({self.address})"
        self.replays = 0  # encrypted advertisements dropped for an old counter
        self.silence = Silence(config.backoff_max_s)
        self._book = HealthBook(config.offline_after)
        self._lock = asyncio.Lock()
        self._latest: dict[str, tuple[Value, int]] = {}  # point: (value, wall time heard)
        self._heard_ns = 0
        self._counter: int | None = None
        self._listener: scanner.Listener | None = None
        self._client: BleakClient | None = None

    async def __aenter__(self) -> Self:
        """Start listening (BTHome) or connect (GATT); failures show in health, not here."""
        if self.config.mode == "bthome":
            self._listener = await scanner.listen(
                self.config.adapter, self.config.scanning_mode, self.address, self._advertised
            )
            self._book.health.reason = self._listener.error
        else:
            async with self._lock:
                try:
                    await self._connect()
                except DriverError as exc:
                    self._book.health.reason = str(exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening or disconnect, also when cancelled."""
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await scanner.unlisten(listener, self.address, self._advertised)
        await self._disconnect()

    def health(self) -> DeviceHealth:
        """A copy of what this driver knows of the sensor."""
        return self._book.copy()

    async def read(self) -> list[Reading]:
        """One Reading per configured point, in config order."""
        async with self._lock:
            if self.config.mode == "bthome":
                return await self._read_heard()
            return await self._read_gatt()

    async def write(self, point: str, value: Value) -> None:
        """Write a GATT characteristic (with response), then read it back to verify."""
        p = self.config.points.get(point)
        if p is None or self.config.mode != "gatt" or p.notify or p.byte_offset:
            msg = f"{self.device}.{point} is not a writable GATT point (read mode, byte_offset 0)"
            raise ValueError(msg)
        data = _encode(value, p)
        async with self._lock:
            client = await self._connect(now=True)
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    await client.write_gatt_char(p.characteristic or "", data, response=True)
                    back = bytes(await client.read_gatt_char(p.characteristic or ""))
            except _LINK_ERRORS as exc:
                await self._disconnect()
                raise _link_error(f"{self.where}: write {point}", exc) from exc
        if back[: len(data)] != data:
            msg = f"{self.where}: wrote {data.hex()} to {point}, read back {back.hex()}"
            raise DriverError(msg)

    # BTHome -----------------------------------------------------------------------------

    def _advertised(self, data: bytes, rssi: int) -> None:  # noqa: ARG002  # rssi: not a point
        try:
            advert = bthome.parse(data, self.address, self.key)
            if self.key is not None and not advert.encrypted:
                msg = "plaintext advertisement while a bind key is set (dropped)"
                raise BadFrame(msg)
        except BadFrame as exc:
            self._book.count(exc)
            self._book.health.reason = f"{self.where}: {exc}"
            return
        now = time.time_ns()
        if advert.counter is not None and self._counter is not None:
            quiet_s = (now - self._heard_ns) / 1e9
            if advert.counter < self._counter and quiet_s < self.config.stale_after_s:
                self.replays += 1  # an old advertisement again; a restart resets after silence
                return
        self._counter, self._heard_ns = advert.counter, now
        for name, p in self.config.points.items():
            ids = p.object_ids()
            found = [m.value for m in advert.measurements if m.object_id in ids]
            if len(found) > p.index:
                self._latest[name] = (_scaled(found[p.index], p), now)

    async def _read_heard(self) -> list[Reading]:
        listener = self._listener
        if listener is not None and not listener.running:
            await listener.start()
        now, fresh_s = time.time_ns(), self.config.stale_after_s
        readings, fresh = [], 0
        for name in self.config.points:
            point = f"{self.device}.{name}"
            if name not in self._latest:
                readings.append(Reading(point, now, None, Quality.COMM))
                continue
            value, heard = self._latest[name]
            good = (now - heard) / 1e9 <= fresh_s
            fresh += good
            readings.append(Reading(point, heard, value, Quality.GOOD if good else Quality.STALE))
        error = None
        if fresh < len(readings):
            why = listener.error if listener is not None and listener.error else ""
            since = f"{(now - self._heard_ns) / 1e9:.0f} s" if self._heard_ns else "start"
            error = DriverError(why or f"{self.where}: no fresh advertisement since {since}")
        self._book.settle(fresh, error)
        return readings

    # GATT -------------------------------------------------------------------------------

    async def _read_gatt(self) -> list[Reading]:
        readings: dict[str, Reading] = {}
        link_error: DriverError | None = None
        error: DriverError | None = None
        answered = 0
        try:
            client = await self._connect()
        except DriverError as exc:
            link_error, client = exc, None
        for name, p in self.config.points.items():
            point = f"{self.device}.{name}"
            if p.notify:
                heard = self._latest.get(name)
                if heard and (time.time_ns() - heard[1]) / 1e9 <= self.config.stale_after_s:
                    answered += 1
                    readings[name] = Reading(point, heard[1], heard[0])
                elif heard:
                    readings[name] = Reading(point, heard[1], heard[0], Quality.STALE)
                else:
                    readings[name] = Reading(point, time.time_ns(), None, Quality.COMM)
                continue
            if client is not None and link_error is None:
                try:
                    async with asyncio.timeout(self.config.timeout_s):
                        raw = bytes(await client.read_gatt_char(p.characteristic or ""))
                    readings[name] = Reading(point, time.time_ns(), _decode(raw, p))
                    answered += 1
                    continue
                except BadFrame as exc:
                    self._book.count(exc)
                    error = exc
                except _LINK_ERRORS as exc:
                    link_error = _link_error(f"{self.where}: read {name}", exc)
                    self._book.count(link_error)
                    await self._disconnect()
            readings[name] = Reading(point, time.time_ns(), None, Quality.COMM)
        self._book.settle(answered, link_error or error)
        return [readings[name] for name in self.config.points]

    async def _connect(self, *, now: bool = False) -> BleakClient:
        if self._client is not None and self._client.is_connected:
            return self._client
        await self._disconnect()
        wait = self.silence.wait_left()
        if wait > 0 and not now:
            msg = f"{self.where}: unreachable; next connect in {wait:.1f} s"
            raise DriverError(msg)
        client = BleakClient(
            self.address, timeout=self.config.timeout_s, bluez={"adapter": self.config.adapter}
        )
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await client.connect()
                for uuid in {p.characteristic for p in self.config.points.values() if p.notify}:
                    await client.start_notify(uuid or "", self._notified_from(uuid or ""))
        except _LINK_ERRORS as exc:
            self.silence.missed()
            await _quietly_disconnect(client)
            raise _link_error(f"{self.where}: connect", exc) from exc
        self.silence.heard()
        self._client = client
        return client

    def _notified_from(self, uuid: str) -> Any:  # noqa: ANN401  # bleak's callback type
        def notified(_char: object, data: bytearray) -> None:
            now = time.time_ns()
            for name, p in self.config.points.items():
                if p.notify and p.characteristic == uuid:
                    try:
                        self._latest[name] = (_decode(bytes(data), p), now)
                    except BadFrame as exc:
                        self._book.count(exc)

        return notified

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _quietly_disconnect(client)


async def _quietly_disconnect(client: BleakClient) -> None:
    with contextlib.suppress(*_LINK_ERRORS):  # already gone: nothing left to close
        await client.disconnect()


def _link_error(what: str, exc: BaseException) -> DriverError:
    if isinstance(exc, TimeoutError):
        return Timeout(f"{what}: no answer in time")
    return DriverError(f"{what}: {exc or type(exc).__name__}")


def _scaled(value: bthome.Value, p: PointConfig) -> Value:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if p.scale == 1.0 and p.offset == 0.0:
        return value
    return value * p.scale + p.offset


def _decode(raw: bytes, p: PointConfig) -> Value:
    """The value at ``byte_offset`` of characteristic bytes ``raw`` (little-endian, as GATT)."""
    if p.dtype == "string":
        return raw[p.byte_offset :].split(b"\0", 1)[0].decode("utf-8", errors="replace")
    if p.dtype == "raw":
        return raw[p.byte_offset :].hex()
    try:
        (value,) = struct.unpack_from("<" + _FORMATS[p.dtype], raw, p.byte_offset)
    except struct.error as exc:
        msg = f"{len(raw)} bytes hold no {p.dtype} at offset {p.byte_offset}"
        raise BadFrame(msg) from exc
    return _scaled(value, p)


def _encode(value: Value, p: PointConfig) -> bytes:
    if p.dtype == "string":
        return str(value).encode()
    if p.dtype == "raw":
        return bytes.fromhex(str(value))
    if value is None or isinstance(value, str):
        msg = f"a {p.dtype} point takes a number, not {value!r}"
        raise ValueError(msg)
    raw = (float(value) - p.offset) / p.scale
    fmt = _FORMATS[p.dtype]
    try:
        return struct.pack("<" + fmt, raw if fmt in "fd" else round(raw))
    except struct.error as exc:
        msg = f"{value!r} does not fit in {p.dtype}"
        raise ValueError(msg) from exc
