"""The site config: TOML parsed once at load into typed structs, errors naming file, key and line."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from cimedge import drivers
from cimedge.edge import control_config
from cimedge.edge.actions import ActionConfig
from cimedge.edge.commands import CommandsConfig
from cimedge.edge.errors import ConfigError
from cimedge.edge.rbe import ReportConfig
from cimedge.edge.rules.kinds import Rule, ThresholdHigh, ThresholdLow  # noqa: F401 - re-exported
from cimedge.edge.sun import Location

DeviceId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{3,64}$")]
Positive = Annotated[float, msgspec.Meta(gt=0)]


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Who this gateway is; key_file is resolved against the config file's folder."""

    device_id: DeviceId
    site_type: str = "pump_station"
    key_file: str = "device.key"
    location: str = ""
    # the backend's public keys (DESIGN §4a): ingest keys sign acks, operations keys commands
    backend_file: str = "backend.json"


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Where the SQLite buffer lives and how large it may grow (0 = no quota)."""

    path: str = "buffer.sqlite"
    quota_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0


class SyncConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The uplink: broker URL, batching and acknowledgement timing."""

    broker: Annotated[str, msgspec.Meta(pattern=r"^mqtts?://[^/:]+(:\d+)?/?$")]
    contract: Literal[1, 2] = 1  # the batch contract sent (DESIGN.md 4, 4a); no key: v1
    batch_max_readings: Annotated[int, msgspec.Meta(ge=1, le=20000)] = 1000
    flush_interval_s: Positive = 1.0
    ack_timeout_s: Positive = 10.0
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    # "5" is the contract (DESIGN.md section 4); "3.1.1" only for brokers without MQTT 5,
    # such as the demo's in-process fallback broker (no shared subscriptions there).
    mqtt_version: Literal["5", "3.1.1"] = "5"
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # MQTT 5 Maximum Packet Size the gateway accepts (acks and commands are far smaller;
    # the default is the contract's 1 MiB message plus headers)
    max_packet_size: Annotated[int, msgspec.Meta(ge=4096, le=268435460)] = 1052672


# The rule structs live with the rules engine (edge/rules/kinds.py); re-exported here.


class Device(msgspec.Struct):
    """One configured field device: its driver kind and the driver's own parsed config."""

    name: str
    driver: str
    config: Any


class Site(msgspec.Struct):
    """A whole gateway config, paths resolved to absolute ones."""

    file: str
    gateway: GatewayConfig
    store: StoreConfig
    sync: SyncConfig
    devices: dict[str, Device]
    rules: dict[str, Rule]
    units: dict[str, str]
    where: Location = Location()  # [site]: lat/lon, time zone, sun table
    report: ReportConfig = ReportConfig()
    actions: dict[str, ActionConfig] = {}
    commands: CommandsConfig | None = None
    north: dict[str, Any] = {}  # [north.NAME]: uplinks in a field protocol (HJ 212)

    @property
    def base(self) -> Path:
        return Path(self.file).parent

    def path(self, p: str) -> Path:
        """A config path made absolute against the config file's folder."""
        return (self.base / p) if p and not Path(p).is_absolute() else Path(p)


_SECTIONS = {"gateway", "store", "sync", "devices", "north"} | control_config.SECTIONS


def load(file: str | Path) -> Site:
    """Read and validate a site TOML file; raise ConfigError naming file, key and line."""
    file = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(file, "", f"cannot read: {e.strerror or e}") from None
    return loads(text, file)


def loads(text: str, file: str = "<config>") -> Site:
    """Validate site TOML text; ``file`` is used in error messages and to resolve paths."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(file, "", f"not valid TOML: {e}",
                          int(m.group(1)) if m else None) from None
    loc = _Locator(file, text)
    for key in raw:
        if key not in _SECTIONS:
            raise loc.error(key, f"unknown section (expected one of {', '.join(sorted(_SECTIONS))})")
    for key in ("gateway", "sync"):
        if key not in raw:
            raise loc.error(key, "missing section")
    gateway = _convert(raw["gateway"], GatewayConfig, "gateway", loc)
    store = _convert(raw.get("store", {}), StoreConfig, "store", loc)
    sync = _convert(raw["sync"], SyncConfig, "sync", loc)
    devices, units = _devices(raw.get("devices", {}), loc)
    ctl = control_config.load(raw, units, devices,
                              lambda t, typ, path: _convert(t, typ, path, loc),
                              lambda t, path: _tables(t, path, loc), loc.error)
    north = _north(raw.get("north", {}), units, loc)
    return Site(file, gateway, store, sync, devices, ctl.rules, units, ctl.where, ctl.report,
                ctl.actions, ctl.commands, north)


def _north(raw: Any, units: dict[str, str], loc: _Locator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, table in _tables(raw, "north", loc).items():
        protocol = table.get("protocol")
        if protocol not in drivers.NORTH:
            raise loc.error(f"north.{name}.protocol", f"{protocol!r} is not a north protocol "
                            f"(one of {', '.join(sorted(drivers.NORTH))})")
        cfg = _convert(table, drivers.load_north(protocol).NorthConfig, f"north.{name}", loc)
        if (found := cfg.problem(units)) is not None:
            raise loc.error(f"north.{name}.{found[0]}", found[1])
        out[name] = cfg
    return out


def _devices(raw: Any, loc: _Locator) -> tuple[dict[str, Device], dict[str, str]]:
    devices: dict[str, Device] = {}
    units: dict[str, str] = {}
    for name, table in _tables(raw, "devices", loc).items():
        path = f"devices.{name}"
        if not re.fullmatch(r"[a-z0-9_-]{1,32}", name):
            raise loc.error(path, "device names are 1-32 of a-z, 0-9, _ and -")
        kind = table.get("driver")
        if kind not in drivers.DRIVERS:
            raise loc.error(f"{path}.driver",
                            f"{kind!r} is not a driver (one of {', '.join(sorted(drivers.DRIVERS))})")
        module = drivers.load(kind)
        cfg = _convert(table, module.DeviceConfig, path, loc)
        check = getattr(cfg, "check", None)
        if check is not None:
            try:
                check()
            except ConfigError as e:
                raise loc.error(f"{path}.{e.key}", e.reason) from None
        for point, pcfg in cfg.points.items():
            units[f"{name}.{point}"] = getattr(pcfg, "unit", "")
        devices[name] = Device(name, kind, cfg)
    return devices, units


def _tables(raw: Any, path: str, loc: _Locator) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise loc.error(path, "must be a table")
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise loc.error(f"{path}.{name}", "must be a table")
    return raw


def _convert(raw: Any, typ: Any, path: str, loc: _Locator) -> Any:
    """msgspec.convert with the error's path made whole: msgspec writes dict keys as [...]."""
    try:
        return msgspec.convert(raw, typ)
    except msgspec.ValidationError as e:
        reason, _, where = str(e).partition(" - at `$")
        where = where.rstrip("`")
        head, sep, tail = where.partition("[...]")
        if sep:  # find which entry of the dict field failed, and recurse into it
            field = head.lstrip(".")
            value_type = _dict_value_type(typ, field)
            for key, item in (raw.get(field) or {}).items():
                try:
                    msgspec.convert(item, value_type)
                except msgspec.ValidationError:
                    return _convert(item, value_type, f"{path}.{field}.{key}", loc)
        raise loc.error(path + where.replace("[...]", ""), _plain(reason)) from None


def _dict_value_type(typ: Any, field: str) -> Any:
    hints = typing.get_type_hints(typ, include_extras=False)
    return typing.get_args(hints[field])[1]


def _plain(reason: str) -> str:
    """msgspec's wording, made readable for a technician."""
    reason = reason.replace("`", "")
    m = re.fullmatch(r"Object contains unknown field (\S+)", reason)
    if m:
        return f"unknown key {m.group(1)}"
    m = re.fullmatch(r"Object missing required field (\S+)", reason)
    if m:
        return f"missing required key {m.group(1)}"
    return reason


class _Locator:
    """Finds the line of a dotted key path in TOML text (tomllib keeps no positions)."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = text.splitlines()

    def error(self, key: str, reason: str) -> ConfigError:
        # A "missing key" error points at its table; name the table as well as the key.
        m = re.fullmatch(r"missing required key (\S+)", reason)
        if m and not key.endswith(m.group(1)):
            key = f"{key}.{m.group(1)}" if key else m.group(1)
            return ConfigError(self.file, key, "missing required key",
                               self.line(key.rsplit(".", 1)[0]))
        m = re.fullmatch(r"unknown key (\S+)", reason)
        if m:
            key = f"{key}.{m.group(1)}" if key else m.group(1)
            return ConfigError(self.file, key, "unknown key", self.line(key))
        return ConfigError(self.file, key, reason, self.line(key))

    def line(self, key: str) -> int | None:
        """Line of ``a.b.c``: the ``c =`` line under table [a.b], else the table header."""
        parts = key.split(".")
        table: list[str] = []
        best: tuple[int, int] | None = None  # (depth, line) of the deepest enclosing table
        for no, raw in enumerate(self.lines, 1):
            s = raw.split("#", 1)[0].strip()
            if s.startswith("["):
                table = [p.strip().strip('"') for p in s.strip("[]").split(".")]
                if table == parts:
                    return no
                if table and parts[: len(table)] == table and (best is None or len(table) > best[0]):
                    best = (len(table), no)
                continue
            m = re.match(r'^("?[\w-]+"?(?:\s*\.\s*"?[\w-]+"?)*)\s*=', s)
            if m:
                k = [p.strip().strip('"') for p in m.group(1).split(".")]
                if table + k == parts:
                    return no
        return best[1] if best else None

