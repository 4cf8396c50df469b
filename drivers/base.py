"""The one small interface every driver follows; the poll scheduler in edge/ drives it."""

from __future__ import annotations

import math
from typing import Protocol, Self

from cimedge.edge.model import DeviceHealth, Reading, Value


class Driver(Protocol):
    """An open link to one field device.

    ``read()`` returns one Reading per configured point, named "{device}.{point}", stamped
    with the wall-clock time of the answer. A failed poll gives readings with
    ``Quality.COMM`` and value None and updates health; only a bug escapes ``read()``.
    ``write()`` raises ``edge.errors.DriverError`` when the device refuses or the read-back
    differs. ``CancelledError`` is never converted into anything else.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def read(self) -> list[Reading]: ...

    async def write(self, point: str, value: Value) -> None: ...

    def health(self) -> DeviceHealth: ...


def scale_offset_rule(scale: float, offset: float) -> tuple[str, str] | None:
    """Every driver's point rule for ``value * scale + offset``: (key, why) when unusable."""
    if not math.isfinite(scale) or scale == 0:
        return "scale", f"{scale} is not a finite, non-zero factor"
    if not math.isfinite(offset):
        return "offset", f"{offset} is not a finite number"
    return None
