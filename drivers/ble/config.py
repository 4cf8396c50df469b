"""One [devices.NAME] table of a BLE sensor (BTHome or GATT): msgspec Structs and checks; no I/O."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from cimedge.drivers.base import scale_offset_rule
from cimedge.drivers.ble.bthome import OBJECTS
from cimedge.edge.errors import ConfigError

PointName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Mac = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
GattType = Literal[
    "int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64", "string", "raw"
]
OBJECT_NAMES = frozenset(kind.name for kind in OBJECTS.values())
UUID = re.compile(r"^([0-9A-Fa-f]{4}|[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12})$")


class PointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME.points.POINT]`` table; ``sample.toml`` explains every key."""

    object: str | None = None  # bthome: an object name ("temperature") or id ("0x45")
    index: Annotated[int, msgspec.Meta(ge=0, le=15)] = 0
    characteristic: str | None = None  # gatt: the characteristic's UUID
    notify: bool = False
    dtype: GattType = "uint8"
    byte_offset: Annotated[int, msgspec.Meta(ge=0, le=511)] = 0
    unit: str | None = None  # filled from the BTHome object table when not given
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        """Give ``unit`` the BTHome object's unit when the table leaves it out."""
        if self.unit is None:
            kinds = [OBJECTS[i] for i in self.object_ids()] if self.object else []
            msgspec.structs.force_setattr(self, "unit", kinds[0].unit if kinds else "")

    def object_ids(self) -> tuple[int, ...]:
        """The BTHome object ids this point takes its value from (any of them, in order)."""
        name = self.object or ""
        if name.lower().startswith("0x"):
            oid = int(name, 16) if re.fullmatch(r"0[xX][0-9A-Fa-f]{1,2}", name) else -1
            return (oid,) if oid in OBJECTS else ()
        return tuple(oid for oid, kind in OBJECTS.items() if kind.name == name)

    def problem(self, mode: str) -> tuple[str, str] | None:
        """The first cross-field rule this point breaks, as (key, reason), or None."""
        if mode == "bthome":
            if self.characteristic is not None:
                return "characteristic", "applies to mode gatt only"
            if not self.object or not self.object_ids():
                return "object", f"{self.object!r} is no BTHome object name or id (see sample.toml)"
        else:
            if self.object is not None:
                return "object", "applies to mode bthome only"
            if not self.characteristic or not UUID.match(self.characteristic):
                return "characteristic", f"{self.characteristic!r} is no 16-bit or 128-bit UUID"
        return scale_offset_rule(self.scale, self.offset)


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME]`` table with ``driver = "ble"``; sample.toml explains each key."""

    driver: Literal["ble"]
    address: Mac
    points: Annotated[dict[PointName, PointConfig], msgspec.Meta(min_length=1)]
    mode: Literal["bthome", "gatt"] = "bthome"
    bind_key_file: str = ""
    adapter: Annotated[str, msgspec.Meta(pattern=r"^hci[0-9]{1,2}$")] = "hci0"
    scanning_mode: Literal["passive", "active"] = "passive"
    stale_after_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 10.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 120.0

    def check(self) -> None:
        """Raise ConfigError("", "KEY" or "points.NAME.KEY", reason) for the first problem."""
        if self.bind_key_file and self.mode != "bthome":
            raise ConfigError("", "bind_key_file", "applies to mode bthome only")
        for name, point in self.points.items():
            if found := point.problem(self.mode):
                key, reason = found
                raise ConfigError("", f"points.{name}.{key}", reason)


def bind_key(path: str) -> bytes:
    """The 16-byte BTHome bind key in ``path`` (32 hex digits); ValueError naming the problem.

    The driver reads it when it is built (config files hold paths to secrets, never secrets).
    """
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        raise ValueError(msg) from None
    if not re.fullmatch(r"[0-9A-Fa-f]{32}", text):
        msg = f"{path} does not hold a bind key (32 hex digits)"
        raise ValueError(msg)
    return bytes.fromhex(text)
