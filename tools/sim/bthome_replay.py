"""BTHome advertisement replay: recorded advertisement bytes fed through bleak's scanner boundary.

A capture is JSON lines, one advertisement each: ``{"t": 0.0, "address": "A4:C1:38:8D:18:B2",
"data": "40020909...", "rssi": -61}`` (``t`` seconds from the start, ``data`` the service data
of UUID 0xFCD2 in hex, exactly as on the air). ``ReplayScanner`` stands in for
``bleak.BleakScanner`` (same constructor, ``start()``, ``stop()``): started, it calls the
detection callback with each advertisement at its time, divided by ``speed``. The gateway's
code above the bleak boundary runs unchanged::

    with replaying(load("lamp_pole.jsonl"), speed=10):
        async with Driver("env", cfg) as env: ...

``make_capture()`` writes a lamp-pole environment sensor's day in compressed time
(temperature, humidity, illuminance, battery, a packet id), encrypted when given a bind key.
As a program: ``python -m cimedge.tools.sim.bthome_replay show FILE`` decodes a capture;
``python -m cimedge.tools.sim.bthome_replay make FILE [--key HEX] [--count N]`` writes one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from cimedge.drivers.ble import bthome, scanner
from cimedge.edge.errors import BadFrame


class Advert(msgspec.Struct, frozen=True):
    """One recorded advertisement."""

    t: float
    address: str
    data: str  # hex service data of UUID 0xFCD2
    rssi: int = -60


def load(path: str | Path) -> list[Advert]:
    """The advertisements of a capture file, in time order."""
    lines = Path(path).read_text().splitlines()
    adverts = [msgspec.json.decode(line, type=Advert) for line in lines if line.strip()]
    return sorted(adverts, key=lambda a: a.t)


def save(path: str | Path, adverts: Sequence[Advert]) -> None:
    """Write ``adverts`` as a capture file."""
    Path(path).write_text("".join(msgspec.json.encode(a).decode() + "\n" for a in adverts))


def make_capture(
    address: str = "A4:C1:38:8D:18:B2", count: int = 60, period_s: float = 1.0,
    key: bytes | None = None,
) -> list[Advert]:  # fmt: skip
    """``count`` advertisements of a lamp pole's environment sensor, one per ``period_s``."""
    adverts = []
    for i in range(count):
        day = 2 * math.pi * i / max(count, 1)
        objects: list[tuple[int, bthome.Value]] = [
            (0x00, i % 256),  # packet id
            (0x01, max(0, 98 - i // 20)),  # battery, %
            (0x02, round(18 + 6 * math.sin(day), 2)),  # temperature, Cel
            (0x03, round(60 - 15 * math.sin(day), 2)),  # humidity, %RH
            (0x05, round(max(0.0, 40000 * math.sin(day)), 2)),  # illuminance, lx
        ]
        data = bthome.encrypt(objects, address, key, i + 1) if key else bthome.encode(objects)
        adverts.append(Advert(i * period_s, address, data.hex(), -60 - i % 7))
    return adverts


class ReplayScanner:
    """Stands in for ``bleak.BleakScanner``: replays ``adverts`` once started."""

    adverts: Sequence[Advert] = ()
    speed: float = 1.0
    instances: list[ReplayScanner] = []  # noqa: RUF012  # every scanner made, for tests

    def __init__(
        self, detection_callback: Callable[[BLEDevice, AdvertisementData], None] | None = None,
        service_uuids: list[str] | None = None, scanning_mode: str = "active", **kwargs: Any,  # noqa: ANN401
    ) -> None:  # fmt: skip
        """Take bleak's arguments; keep them for inspection."""
        self.callback = detection_callback
        self.service_uuids, self.scanning_mode, self.kwargs = service_uuids, scanning_mode, kwargs
        self.sent = 0
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        type(self).instances.append(self)

    async def start(self) -> None:
        """Begin the replay."""
        self._task = asyncio.create_task(self._replay(), name="bthome-replay")

    async def stop(self) -> None:
        """End the replay."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def emit(self, advert: Advert) -> None:
        """Deliver one advertisement now, as bleak's callback would get it."""
        if self.callback is None:
            return
        device = BLEDevice(advert.address, None, None)
        adv = AdvertisementData(
            local_name=None, manufacturer_data={},
            service_data={bthome.UUID: bytes.fromhex(advert.data)},
            service_uuids=[bthome.UUID], tx_power=None, rssi=advert.rssi, platform_data=(),
        )  # fmt: skip
        self.callback(device, adv)
        self.sent += 1

    async def _replay(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for advert in self.adverts:
            await asyncio.sleep(max(0.0, start + advert.t / self.speed - loop.time()))
            self.emit(advert)
        self.done.set()


@contextlib.contextmanager
def replaying(adverts: Sequence[Advert], speed: float = 1.0) -> Iterator[type[ReplayScanner]]:
    """Make the BLE driver's scanner a ``ReplayScanner`` of ``adverts`` inside the block."""
    replay = type("Replay", (ReplayScanner,), {"adverts": adverts, "speed": speed, "instances": []})
    real = scanner.__dict__["BleakScanner"]
    setattr(scanner, "BleakScanner", replay)  # noqa: B010  # bleak's boundary, swapped on purpose
    try:
        yield replay
    finally:
        setattr(scanner, "BleakScanner", real)  # noqa: B010


def main(argv: list[str] | None = None) -> None:
    """Show or make a capture; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m cimedge.tools.sim.bthome_replay", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="decode every advertisement of a capture")
    show.add_argument("file")
    show.add_argument("--key", help="bind key, 32 hex digits, for encrypted captures")
    make = sub.add_parser("make", help="write a lamp-pole environment sensor capture")
    make.add_argument("file")
    make.add_argument("--key", help="bind key, 32 hex digits: encrypt the advertisements")
    make.add_argument("--count", type=int, default=60)
    make.add_argument("--address", default="A4:C1:38:8D:18:B2")
    args = parser.parse_args(argv)
    key = bytes.fromhex(args.key) if args.key else None
    if args.command == "make":
        save(args.file, make_capture(args.address, args.count, key=key))
        return
    for advert in load(args.file):
        try:
            parsed = bthome.parse(bytes.fromhex(advert.data), advert.address, key)
            text = ", ".join(f"{m.name}={m.value}{m.unit}" for m in parsed.measurements)
        except BadFrame as exc:
            text = f"undecodable: {exc}"
        sys.stdout.write(f"{advert.t:8.2f} {advert.address} {text}\n")


if __name__ == "__main__":
    main()
