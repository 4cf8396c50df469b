"""One [devices.NAME] table of a DL/T 645-2007 meter: msgspec Structs and checks; no I/O."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from cimedge.drivers.base import scale_offset_rule
from cimedge.drivers.dlt645.frame import ADDRESS, Format
from cimedge.drivers.dlt645.identifiers import CATALOGUE
from cimedge.edge.errors import ConfigError

PointName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
HEX_DI = re.compile(r"^[0-9A-Fa-f]{8}$")


class PointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME.points.POINT]`` table; ``sample.toml`` explains every key."""

    di: Annotated[str, msgspec.Meta(min_length=1)]
    unit: str | None = None  # filled from the catalogue when not given (the loader reads .unit)
    length: Annotated[int, msgspec.Meta(ge=1, le=8)] | None = None
    decimals: Annotated[int, msgspec.Meta(ge=0, le=8)] | None = None
    signed: bool | None = None
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        """Give ``unit`` the catalogue's unit when the table leaves it out."""
        if self.unit is None:
            known = CATALOGUE.get(self.di)
            msgspec.structs.force_setattr(self, "unit", known.unit if known else "")

    def identifier(self) -> int:
        """The data identifier as DI3 DI2 DI1 DI0."""
        known = CATALOGUE.get(self.di)
        return known.di if known else int(self.di, 16)

    def format(self) -> Format:
        """The BCD format: the catalogue's, with any key given here taking precedence."""
        known = CATALOGUE.get(self.di)
        base = known.format if known else Format(0, 0)
        return Format(
            self.length or base.length,
            base.decimals if self.decimals is None else self.decimals,
            base.signed if self.signed is None else self.signed,
        )

    def problem(self) -> tuple[str, str] | None:
        """The first cross-field rule this point breaks, as (key, reason), or None."""
        if self.di not in CATALOGUE:
            if not HEX_DI.match(self.di):
                names = ", ".join(sorted(CATALOGUE))
                return "di", f"{self.di!r} is neither 8 hex digits nor one of: {names}"
            if self.length is None or self.decimals is None:
                return "length", "a data identifier outside the catalogue needs length and decimals"
        return scale_offset_rule(self.scale, self.offset)


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME]`` table with ``driver = "dlt645"``; sample.toml explains each key."""

    driver: Literal["dlt645"]
    port: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    address: Annotated[str, msgspec.Meta(min_length=4, max_length=12)]
    points: Annotated[dict[PointName, PointConfig], msgspec.Meta(min_length=1)]
    baudrate: Annotated[int, msgspec.Meta(ge=300, le=115200)] = 2400
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[8] = 8
    preamble: Annotated[int, msgspec.Meta(ge=0, le=4)] = 4
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 5.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    probe_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0

    def check(self) -> None:
        """Raise ConfigError("", "KEY" or "points.NAME.KEY", reason) for the first problem."""
        if self.address != "auto" and not ADDRESS.match(self.address):
            raise ConfigError(
                "", "address",
                f"{self.address!r} is not 12 digits (AA pairs as wildcards) or \"auto\"",
            )  # fmt: skip
        for name, point in self.points.items():
            if found := point.problem():
                key, reason = found
                raise ConfigError("", f"points.{name}.{key}", reason)
