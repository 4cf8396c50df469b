"""One [devices.NAME] table of a CJ/T 188-2004 meter: msgspec Structs and checks; no I/O."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cimedge.drivers.base import scale_offset_rule
from cimedge.drivers.cjt188.frame import ADDRESS, UNITS, fields_of
from cimedge.edge.errors import ConfigError

PointName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
METER_TYPES = {"water": 0x10, "hot_water": 0x11, "heat": 0x20, "cooling": 0x21, "gas": 0x30}


class PointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME.points.POINT]`` table; ``sample.toml`` explains every key."""

    field: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        """Give ``unit`` the field's unit when the table leaves it out."""
        if self.unit is None:
            msgspec.structs.force_setattr(self, "unit", UNITS.get(self.field, ""))


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME]`` table with ``driver = "cjt188"``; sample.toml explains each key."""

    driver: Literal["cjt188"]
    port: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    address: Annotated[str, msgspec.Meta(min_length=14, max_length=14)]
    points: Annotated[dict[PointName, PointConfig], msgspec.Meta(min_length=1)]
    meter_type: Literal["water", "hot_water", "heat", "cooling", "gas"] = "water"
    baudrate: Annotated[int, msgspec.Meta(ge=300, le=115200)] = 2400
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[8] = 8
    preamble: Annotated[int, msgspec.Meta(ge=0, le=8)] = 3
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 60.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    probe_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    valve_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0

    @property
    def type_code(self) -> int:
        """The meter type byte T."""
        return METER_TYPES[self.meter_type]

    def check(self) -> None:
        """Raise ConfigError("", "KEY" or "points.NAME.KEY", reason) for the first problem."""
        if not ADDRESS.match(self.address):
            raise ConfigError("", "address",
                              f"{self.address!r} is not 14 digits (AA pairs as wildcards)")
        fields = fields_of(self.type_code)
        for name, point in self.points.items():
            if point.field not in fields:
                raise ConfigError("", f"points.{name}.field", f"{point.field!r} is not a field "
                                  f"of a {self.meter_type} meter (one of {', '.join(fields)})")
            if found := scale_offset_rule(point.scale, point.offset):
                key, reason = found
                raise ConfigError("", f"points.{name}.{key}", reason)
