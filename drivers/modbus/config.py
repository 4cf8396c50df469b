"""One [devices.NAME] table of a Modbus TCP or RTU device: msgspec Structs and checks; no I/O."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cimedge.drivers.base import scale_offset_rule
from cimedge.drivers.modbus import codec
from cimedge.drivers.modbus.codec import DType, Layout, Order
from cimedge.drivers.modbus.plan import BIT_TABLES, Request, Table, coalesce
from cimedge.edge.errors import ConfigError

PointName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
TcpPort = Annotated[int, msgspec.Meta(ge=1, le=65535)]
SerialPath = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
_SERIAL_KEYS = ("baudrate", "parity", "stopbits", "bytesize", "probe_timeout_s")


class PointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME.points.POINT]`` table; ``sample.toml`` explains every key."""

    table: Table
    address: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    dtype: DType
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    word_order: Order | None = None  # None: the device's word_order
    byte_order: Order | None = None  # None: the device's byte_order
    bit: Annotated[int, msgspec.Meta(ge=0, le=15)] | None = None
    length: Annotated[int, msgspec.Meta(ge=1, le=125)] | None = None

    @property
    def width(self) -> int:
        """Registers (or, on coil and discrete tables, bits) the point occupies."""
        return 1 if self.table in BIT_TABLES else codec.width(self.dtype, self.length)

    def problem(self) -> tuple[str, str] | None:
        """The first cross-field rule this point breaks, as (key, reason), or None."""
        for rule in (_bits_rule, _register_bool_rule, _string_rule, _number_rule, _range_rule):
            if found := rule(self):
                return found
        return None


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[devices.NAME]`` table with ``driver = "modbus"``; sample.toml explains each key.

    ``transport = "tcp"`` reaches the device at ``host``:``port`` (a number);
    ``transport = "rtu"`` reaches it on the serial line ``port`` (a device path), which the
    devices naming the same path share. Keys of the other transport must keep their default.
    """

    driver: Literal["modbus"]
    points: Annotated[dict[PointName, PointConfig], msgspec.Meta(min_length=1)]
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str = ""
    port: TcpPort | SerialPath = 502
    unit: Annotated[int, msgspec.Meta(ge=0, le=247)] = 1
    baudrate: Annotated[int, msgspec.Meta(ge=300, le=4_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 1.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    probe_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.1
    max_gap: Annotated[int, msgspec.Meta(ge=0, le=123)] = 8
    word_order: Order = "big"
    byte_order: Order = "big"
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0

    def check(self) -> None:
        """Raise ConfigError("", "KEY" or "points.NAME.KEY", reason) for the first problem."""
        rule = _tcp_rule if self.transport == "tcp" else _rtu_rule
        if found := rule(self):
            raise ConfigError("", *found)
        for name, point in self.points.items():
            if found := point.problem():
                key, reason = found
                raise ConfigError("", f"points.{name}.{key}", reason)

    def plan(self) -> tuple[Request, ...]:
        """The requests one poll makes; call once, after ``check()``."""
        return coalesce(self.points, max_gap=self.max_gap)

    def layout(self, name: str) -> Layout:
        """How point ``name`` is encoded, with the device's word and byte order filled in."""
        p = self.points[name]
        return Layout(
            dtype=p.dtype,
            word_order=p.word_order or self.word_order,
            byte_order=p.byte_order or self.byte_order,
            bit=p.bit,
            length=p.length,
            scale=p.scale,
            offset=p.offset,
        )


def _tcp_rule(d: DeviceConfig) -> tuple[str, str] | None:
    if not d.host:
        return "host", "missing: transport tcp needs the device's IP address or host name"
    if not isinstance(d.port, int):
        return "port", f"transport tcp needs a TCP port number 1-65535, not {d.port!r}"
    for key in _SERIAL_KEYS:
        if getattr(d, key) != DeviceConfig.__struct_defaults__[_field_index(key)]:
            return key, "applies to transport rtu only (this device uses tcp)"
    return None


def _rtu_rule(d: DeviceConfig) -> tuple[str, str] | None:
    if d.host:
        return "host", "applies to transport tcp only; an rtu device is reached on its port"
    if not isinstance(d.port, str):
        return "port", f"transport rtu needs a serial device path (/dev/ttyUSB0), not {d.port}"
    if d.unit == 0:
        return "unit", "0 is the broadcast address, which never answers; an rtu device is 1-247"
    if d.bytesize != 8:  # noqa: PLR2004  # Modbus RTU's byte size
        return "bytesize", "Modbus RTU sends 8-bit bytes (7 data bits is Modbus ASCII)"
    return None


def _field_index(key: str) -> int:
    """Index of ``key`` in ``__struct_defaults__`` (which covers the trailing fields)."""
    fields = DeviceConfig.__struct_fields__
    return fields.index(key) - (len(fields) - len(DeviceConfig.__struct_defaults__))


def _bits_rule(p: PointConfig) -> tuple[str, str] | None:
    if p.table not in BIT_TABLES:
        return None
    if p.dtype != "bool":
        return "dtype", f"a {p.table} is one bit: its dtype is bool, not {p.dtype}"
    if p.bit is not None:
        return "bit", f"bit selects a bit of a register; a {p.table} is already one bit"
    return None


def _register_bool_rule(p: PointConfig) -> tuple[str, str] | None:
    if p.table in BIT_TABLES:
        return None
    if p.bit is not None and p.dtype != "bool":
        return "bit", f"bit picks one bit of a 16-bit register and needs dtype bool, not {p.dtype}"
    if p.dtype == "bool" and p.bit is None:
        return "bit", f"a bool on a {p.table} register needs bit (0-15)"
    return None


def _string_rule(p: PointConfig) -> tuple[str, str] | None:
    if p.dtype == "string" and p.length is None:
        return "length", "a string needs length, in registers (2 bytes each)"
    if p.dtype != "string" and p.length is not None:
        return "length", f"length applies to dtype string only, not {p.dtype}"
    return None


def _number_rule(p: PointConfig) -> tuple[str, str] | None:
    if p.dtype in codec.NUMBERS:
        return scale_offset_rule(p.scale, p.offset)
    if p.scale != 1.0 or p.offset != 0.0:
        key = "scale" if p.scale != 1.0 else "offset"
        return key, f"{key} applies to numbers, not to dtype {p.dtype}"
    return None


def _range_rule(p: PointConfig) -> tuple[str, str] | None:
    last = p.address + p.width - 1
    if last > 65535:
        what = f"{p.dtype} at {p.address} ends at {last}"
        return "address", f"{what}, beyond the last address 65535"
    return None
