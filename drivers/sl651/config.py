"""One [devices.NAME] table of an SL 651-2014 telemetry station: msgspec Structs; no I/O."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

import msgspec

from cimedge.drivers.base import scale_offset_rule
from cimedge.drivers.sl651.frame import ELEMENTS, ID_STATUS
from cimedge.edge.errors import ConfigError

PointName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
_HEX_ID = re.compile(r"^(0x)?[0-9A-Fa-f]{2}$")


class PointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME.points.POINT]`` table; ``sample.toml`` explains every key."""

    element: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    bit: Annotated[int, msgspec.Meta(ge=0, le=31)] | None = None
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        """Give ``unit`` the catalogue's unit when the table leaves it out."""
        if self.unit is None:
            known = ELEMENTS.get(self.element)
            unit = "" if self.bit is not None else known[1] if known else ""
            msgspec.structs.force_setattr(self, "unit", unit)

    def identifier(self) -> int:
        """The element identifier byte."""
        known = ELEMENTS.get(self.element)
        return known[0] if known else int(self.element.removeprefix("0x"), 16)

    def problem(self) -> tuple[str, str] | None:
        """The first rule this point breaks, as (key, reason), or None."""
        if self.element not in ELEMENTS and not _HEX_ID.match(self.element):
            names = ", ".join(sorted(ELEMENTS))
            return "element", f"{self.element!r} is neither a hex identifier nor one of: {names}"
        if (self.bit is not None) != (self.identifier() == ID_STATUS):
            return "bit", "bit goes with the status element (45), and it needs one"
        return scale_offset_rule(self.scale, self.offset)


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME]`` table with ``driver = "sl651"``; sample.toml explains each key."""

    driver: Literal["sl651"]
    station: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{10}$")]
    password_file: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    listen_host: Annotated[str, msgspec.Meta(min_length=1)]
    points: Annotated[dict[PointName, PointConfig], msgspec.Meta(min_length=1)]
    listen_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    centre: Annotated[int, msgspec.Meta(ge=1, le=255)] = 1
    timezone: str = "Asia/Shanghai"
    query: bool = False
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 60.0
    stale_after_s: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] = 3900.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    max_clock_skew_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    set_clock: bool = True
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 900.0
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    mode: Literal["listen"] = "listen"

    def check(self) -> None:
        """Raise ConfigError("", "KEY" or "points.NAME.KEY", reason) for the first problem."""
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError("", "timezone", f"{self.timezone!r} is not a time zone") from None
        for name, point in self.points.items():
            if found := point.problem():
                key, reason = found
                raise ConfigError("", f"points.{name}.{key}", reason)


def read_password(path: str) -> str:
    """The station's password from its file: 4 hex digits (2 bytes on the wire)."""
    try:
        text = open(path, encoding="ascii").read().strip().upper()  # noqa: PTH123, SIM115
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read the SL 651 password file {path}: {getattr(exc, 'strerror', exc)}"
        raise ValueError(msg) from None
    if not re.fullmatch(r"[0-9A-F]{4}", text):
        msg = f"{path}: the password must be 4 hex digits"
        raise ValueError(msg)
    return text
