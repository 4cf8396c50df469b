"""One [devices.NAME] table of an IEC 60870-5-104 RTU or PLC: msgspec Structs; no I/O."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

import msgspec

from cimedge.drivers.base import scale_offset_rule
from cimedge.edge.errors import ConfigError

PointName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Ioa = Annotated[int, msgspec.Meta(ge=1, le=16777215)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=255)]


class PointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME.points.POINT]`` table; ``sample.toml`` explains every key."""

    ioa: Ioa
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    command: Literal["", "single", "double"] = ""
    command_ioa: Ioa | None = None
    select: bool = True
    counter: bool = False


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME]`` table with ``driver = "iec104"``; sample.toml explains each key."""

    driver: Literal["iec104"]
    host: Annotated[str, msgspec.Meta(min_length=1)]
    points: Annotated[dict[PointName, PointConfig], msgspec.Meta(min_length=1)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 2404
    common_address: Annotated[int, msgspec.Meta(ge=1, le=65534)] = 1
    originator: Annotated[int, msgspec.Meta(ge=0, le=255)] = 0
    timezone: str = "UTC"
    k: Annotated[int, msgspec.Meta(ge=1, le=32767)] = 12
    w: Annotated[int, msgspec.Meta(ge=1, le=32767)] = 8
    t0_s: Seconds = 30.0
    t1_s: Seconds = 15.0
    t2_s: Seconds = 10.0
    t3_s: Seconds = 20.0
    interrogation_interval_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 0.0
    clock_sync: bool = True
    clock_sync_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 3600.0
    command_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 1.0
    stale_after_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 30.0
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0

    def check(self) -> None:
        """Raise ConfigError("", "KEY" or "points.NAME.KEY", reason) for the first problem."""
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError("", "timezone", f"{self.timezone!r} is not a time zone") from None
        if self.w > self.k:
            raise ConfigError("", "w", f"w ({self.w}) must not exceed k ({self.k})")
        if not self.t2_s < self.t1_s:
            raise ConfigError("", "t2_s", "t2 must be shorter than t1")
        seen: dict[int, str] = {}
        for name, p in self.points.items():
            if p.ioa in seen:
                raise ConfigError("", f"points.{name}.ioa",
                                  f"IOA {p.ioa} is already point {seen[p.ioa]}")
            seen[p.ioa] = name
            if bool(p.command) != (p.command_ioa is not None):
                raise ConfigError("", f"points.{name}.command_ioa",
                                  "command and command_ioa go together")
            if found := scale_offset_rule(p.scale, p.offset):
                raise ConfigError("", f"points.{name}.{found[0]}", found[1])
