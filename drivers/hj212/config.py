"""One [devices.NAME] table of an HJ 212-2017 station: msgspec Structs and checks; no I/O."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

import msgspec

from cimedge.drivers.base import scale_offset_rule
from cimedge.drivers.hj212 import frame
from cimedge.edge.errors import ConfigError

PointName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Cn = Literal[2011, 2051, 2061, 2031]
# How long a value of each kind of data stays fresh when the point does not say.
STALE_DEFAULT_S = {2011: 0.0, 2051: 1800.0, 2061: 7200.0, 2031: 172800.0}
_CODE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_MN = re.compile(r"^[A-Za-z0-9]{1,24}$")


class PointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME.points.POINT]`` table; ``sample.toml`` explains every key."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=12)]
    cn: Cn = 2011
    field: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] = "Rtd"
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    stale_after_s: Annotated[float, msgspec.Meta(ge=0, le=7 * 86400)] = 0.0  # 0: by cn

    def problem(self) -> tuple[str, str] | None:
        """The first rule this point breaks, as (key, reason), or None."""
        if not _CODE.match(self.code):
            return "code", f"{self.code!r} is not a pollutant code (letters and digits)"
        if not frame.valid_field(self.field):
            return "field", f"{self.field!r} is not a field name (Rtd, Avg, Min, Max, Cou, ...)"
        return scale_offset_rule(self.scale, self.offset)


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME]`` table with ``driver = "hj212"``; sample.toml explains each key."""

    driver: Literal["hj212"]
    mode: Literal["listen", "poll"]
    mn: Annotated[str, msgspec.Meta(min_length=1, max_length=24)]
    password_file: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    points: Annotated[dict[PointName, PointConfig], msgspec.Meta(min_length=1)]
    st: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{2}$")] | None = None
    listen_host: str = ""
    listen_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    host: str = ""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    timezone: str = "Asia/Shanghai"
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 30.0
    stale_after_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 120.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    max_clock_skew_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    set_clock: bool = True
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 600.0
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0

    def check(self) -> None:
        """Raise ConfigError("", "KEY" or "points.NAME.KEY", reason) for the first problem."""
        if not _MN.match(self.mn):
            raise ConfigError("", "mn", f"{self.mn!r} is not an MN (1-24 letters and digits)")
        if self.mode == "listen" and not self.listen_host:
            raise ConfigError("", "listen_host", "mode \"listen\" needs the address to listen "
                              "on (the gateway listens on no port unless told to)")
        if self.mode == "poll" and not (self.host and self.port):
            raise ConfigError("", "host", "mode \"poll\" needs the station's host and port")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError("", "timezone", f"{self.timezone!r} is not a time zone") from None
        for name, point in self.points.items():
            if found := point.problem():
                key, reason = found
                raise ConfigError("", f"points.{name}.{key}", reason)

    def stale_s(self, point: PointConfig) -> float:
        """How long a value of ``point`` stays fresh."""
        return point.stale_after_s or STALE_DEFAULT_S[point.cn] or self.stale_after_s


def read_password(path: str) -> str:
    """The access password (PW) from its file: one line, at most 20 printable characters."""
    try:
        text = open(path, encoding="ascii").read().strip()  # noqa: PTH123, SIM115
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read the HJ 212 password file {path}: {getattr(exc, 'strerror', exc)}"
        raise ValueError(msg) from None
    if not re.fullmatch(r"[!-~]{1,20}", text) or ";" in text or "&" in text:
        msg = f"{path}: the password must be 1-20 printable characters without ';' or '&'"
        raise ValueError(msg)
    return text
