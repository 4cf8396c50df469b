"""One BLE scanner per adapter, shared by the BTHome devices on it; the one user of bleak's scanner.

Passive scanning on BlueZ goes through an advertisement monitor, which needs a pattern: here
service data of UUID 0xFCD2, so the adapter wakes the host only for BTHome advertisements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bleak import BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from cimedge.drivers.ble.bthome import UUID

# A subscriber gets the BTHome service data and the RSSI of each advertisement of its address.
Subscriber = Callable[[bytes, int], None]
BTHOME_PATTERN = OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc")


class Listener:
    """A scanner on one adapter, running while at least one device listens."""

    def __init__(self, adapter: str, scanning_mode: str) -> None:
        """Prepare; the scanner starts with the first subscriber."""
        self.adapter, self.scanning_mode = adapter, scanning_mode
        self.error = ""  # why the scanner is not running, "" while it is
        self.seen = 0  # BTHome advertisements received, any address
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._scanner: BleakScanner | None = None

    @property
    def running(self) -> bool:
        """True while the scanner runs."""
        return self._scanner is not None

    def subscribe(self, address: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` for each BTHome advertisement from ``address``."""
        self._subscribers.setdefault(address.upper(), []).append(subscriber)

    def unsubscribe(self, address: str, subscriber: Subscriber) -> None:
        """Stop calling ``subscriber``."""
        subs = self._subscribers.get(address.upper(), [])
        if subscriber in subs:
            subs.remove(subscriber)
        if not subs:
            self._subscribers.pop(address.upper(), None)

    @property
    def users(self) -> int:
        """Subscribers, all addresses."""
        return sum(len(s) for s in self._subscribers.values())

    async def start(self) -> bool:
        """Start scanning unless running; False (and ``error``) when the adapter refuses."""
        if self._scanner is not None:
            return True
        bluez: dict[str, object] = {"adapter": self.adapter}
        if self.scanning_mode == "passive":
            bluez["or_patterns"] = [BTHOME_PATTERN]
        scanner = BleakScanner(
            detection_callback=self._advertised,
            scanning_mode=self.scanning_mode,  # type: ignore[arg-type]
            bluez=bluez,  # type: ignore[arg-type]
        )
        try:
            await scanner.start()
        except (BleakError, OSError, EOFError, TimeoutError) as exc:
            self.error = f"cannot scan on {self.adapter}: {exc or type(exc).__name__}"
            return False
        self._scanner, self.error = scanner, ""
        return True

    async def stop(self) -> None:
        """Stop scanning."""
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            try:
                await scanner.stop()
            except (BleakError, OSError, EOFError, TimeoutError) as exc:
                self.error = f"stopping the scan on {self.adapter}: {exc}"

    def _advertised(self, device: BLEDevice, adv: AdvertisementData) -> None:
        data = adv.service_data.get(UUID)
        if data is None:
            return
        self.seen += 1
        for subscriber in list(self._subscribers.get(device.address.upper(), ())):
            subscriber(bytes(data), adv.rssi)


_LISTENERS: dict[tuple[int, str], Listener] = {}


async def listen(
    adapter: str, scanning_mode: str, address: str, subscriber: Subscriber
) -> Listener:
    """Subscribe to ``address`` on the shared listener of ``adapter``, starting it if needed."""
    key = (id(asyncio.get_running_loop()), adapter)
    listener = _LISTENERS.get(key)
    if listener is None:
        listener = _LISTENERS[key] = Listener(adapter, scanning_mode)
    listener.subscribe(address, subscriber)
    await listener.start()
    return listener


async def unlisten(listener: Listener, address: str, subscriber: Subscriber) -> None:
    """Drop a subscription; the last one stops the scanner."""
    listener.unsubscribe(address, subscriber)
    if listener.users:
        return
    await listener.stop()
    for key, known in list(_LISTENERS.items()):
        if known is listener:
            del _LISTENERS[key]
