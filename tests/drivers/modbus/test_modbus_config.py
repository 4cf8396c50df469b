"""Config: sample.toml and the demo parse; bad tables fail naming the key that is wrong."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cimedge.drivers import load
from cimedge.drivers.modbus import DeviceConfig, PointConfig
from cimedge.edge.errors import ConfigError
from cimedge.tools.sim.pump_station import demo_toml

SAMPLE = Path(__file__).parents[3] / "drivers" / "modbus" / "sample.toml"


def convert(table: dict[str, Any]) -> DeviceConfig:
    cfg = msgspec.convert(table, DeviceConfig)
    cfg.check()
    return cfg


def device(**points: dict[str, Any]) -> dict[str, Any]:
    return {"driver": "modbus", "host": "127.0.0.1", "points": points}


def test_sample_toml_parses_and_documents_every_key() -> None:
    text = SAMPLE.read_text()
    devices = tomllib.loads(text)["devices"]
    tcp, rtu = convert(devices["ps1"]), convert(devices["node1"])
    assert tcp.plan() and rtu.plan()
    assert (tcp.transport, rtu.transport) == ("tcp", "rtu")
    assert (rtu.port, rtu.baudrate) == ("/dev/ttyUSB0", 9600)
    keys = set(re.findall(r"^(\w+) =", text, re.MULTILINE))
    assert set(DeviceConfig.__struct_fields__) <= keys | {"points"}
    assert set(PointConfig.__struct_fields__) <= keys


def test_demo_toml_of_the_simulator_parses() -> None:
    cfg = convert(tomllib.loads(demo_toml("ps1", "192.0.2.1", 1502))["devices"]["ps1"])
    assert (cfg.host, cfg.port, len(cfg.points)) == ("192.0.2.1", 1502, 12)


def test_registry_finds_the_package() -> None:
    module = load("modbus")
    assert module.DeviceConfig is DeviceConfig
    assert {"DeviceConfig", "Driver"} <= set(module.__all__)


def test_defaults_live_in_the_schema() -> None:
    cfg = convert(device(level={"table": "input", "address": 0, "dtype": "float32"}))
    assert (cfg.transport, cfg.port, cfg.unit, cfg.timeout_s, cfg.max_gap) == (
        "tcp",
        502,
        1,
        1.0,
        8,
    )
    assert (cfg.word_order, cfg.byte_order, cfg.offline_after) == ("big", "big", 3)
    level = cfg.points["level"]
    assert (level.unit, level.scale, level.offset, level.word_order, level.bit) == (
        "",
        1.0,
        0.0,
        None,
        None,
    )
    assert cfg.layout("level").word_order == "big"


def test_point_order_overrides_device_order() -> None:
    table = device(x={"table": "holding", "address": 0, "dtype": "uint32", "word_order": "little"})
    table["byte_order"] = "little"
    layout = convert(table).layout("x")
    assert (layout.word_order, layout.byte_order) == ("little", "little")


def test_integers_are_accepted_for_floats() -> None:
    cfg = convert(
        device(x={"table": "holding", "address": 0, "dtype": "int16", "scale": 2})
        | {"timeout_s": 3}
    )
    assert cfg.points["x"].scale == 2.0
    assert cfg.timeout_s == 3.0


@pytest.mark.parametrize(
    ("point", "key", "reason"),
    [
        (
            {"table": "input", "address": 65535, "dtype": "float32"},
            "address",
            "ends at 65536, beyond the last address 65535",
        ),
        (
            {"table": "input", "address": 65530, "dtype": "string", "length": 8},
            "address",
            "beyond the last address",
        ),
        (
            {"table": "input", "address": 0, "dtype": "float32", "bit": 3},
            "bit",
            "needs dtype bool, not float32",
        ),
        ({"table": "holding", "address": 0, "dtype": "bool"}, "bit", "needs bit (0-15)"),
        ({"table": "coil", "address": 0, "dtype": "uint16"}, "dtype", "dtype is bool, not uint16"),
        ({"table": "discrete", "address": 0, "dtype": "bool", "bit": 1}, "bit", "already one bit"),
        ({"table": "input", "address": 0, "dtype": "string"}, "length", "a string needs length"),
        ({"table": "input", "address": 0, "dtype": "int16", "length": 2}, "length", "string only"),
        (
            {"table": "input", "address": 0, "dtype": "int16", "scale": 0.0},
            "scale",
            "finite, non-zero",
        ),
        (
            {"table": "input", "address": 0, "dtype": "int16", "offset": float("inf")},
            "offset",
            "finite",
        ),
        (
            {"table": "coil", "address": 0, "dtype": "bool", "scale": 2.0},
            "scale",
            "applies to numbers",
        ),
        (
            {"table": "input", "address": 0, "dtype": "string", "length": 2, "offset": 1.0},
            "offset",
            "numbers",
        ),
    ],
)
def test_cross_field_problems_name_the_key(point: dict[str, Any], key: str, reason: str) -> None:
    cfg = msgspec.convert(device(level=point), DeviceConfig)
    with pytest.raises(ConfigError) as err:
        cfg.check()
    assert err.value.key == f"points.level.{key}"
    assert reason in err.value.reason
    assert err.value.file == ""


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"colour": "red"}, "unknown field `colour`"),
        ({"unit": 248}, "$.unit"),
        ({"port": 0}, "$.port"),
        ({"timeout_s": 0}, "$.timeout_s"),
        ({"transport": "udp"}, "$.transport"),
        ({"word_order": "middle"}, "$.word_order"),
        ({"driver": "dlt645"}, "$.driver"),
        ({"points": {}}, "$.points"),
        (
            {"points": {"a.b": {"table": "input", "address": 0, "dtype": "int16"}}},
            "`key` in `$.points`",
        ),
        (
            {"points": {"x": {"table": "input", "address": 70000, "dtype": "int16"}}},
            "$.points[...].address",
        ),
        (
            {"points": {"x": {"table": "register", "address": 0, "dtype": "int16"}}},
            "$.points[...].table",
        ),
        (
            {"points": {"x": {"table": "input", "address": 0, "dtype": "float16"}}},
            "$.points[...].dtype",
        ),
        (
            {"points": {"x": {"table": "input", "address": 0, "dtype": "bool", "bit": 16}}},
            "$.points[...].bit",
        ),
        (
            {"points": {"x": {"table": "input", "address": 0, "dtype": "int16", "units": "m"}}},
            "$.points[...]",
        ),
        ({"points": {"x": {"table": "input", "dtype": "int16"}}}, "$.points[...]"),
    ],
)
def test_schema_problems_are_validation_errors_with_a_path(
    change: dict[str, Any], where: str
) -> None:
    """msgspec shows a dict key as [...]: the site loader adds the device and point names."""
    table = device(level={"table": "input", "address": 0, "dtype": "float32"}) | change
    with pytest.raises(msgspec.ValidationError) as err:
        msgspec.convert(table, DeviceConfig)
    message = str(err.value)
    assert message.endswith(where if where.endswith("`") else f"`{where}`")


def rtu_device(**change: Any) -> dict[str, Any]:
    points = {"level": {"table": "input", "address": 0, "dtype": "float32"}}
    table = {"driver": "modbus", "transport": "rtu", "port": "/dev/ttyUSB0", "points": points}
    return table | change


def test_rtu_defaults_are_9600_8n1() -> None:
    cfg = convert(rtu_device())
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits, cfg.unit) == (9600, 8, "N", 1, 1)
    assert cfg.probe_timeout_s == 0.1


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        (rtu_device(host="10.0.0.1"), "host", "applies to transport tcp only"),
        (rtu_device(port=502), "port", "needs a serial device path"),
        (rtu_device(unit=0), "unit", "broadcast address"),
        (rtu_device(bytesize=7), "bytesize", "8-bit bytes"),
        (device(level={"table": "input", "address": 0, "dtype": "int16"}) | {"host": ""}, "host",
         "needs the device's IP address"),
        (device(level={"table": "input", "address": 0, "dtype": "int16"}) | {"port": "COM1"},
         "port", "needs a TCP port number"),
        (device(level={"table": "input", "address": 0, "dtype": "int16"}) | {"parity": "E"},
         "parity", "applies to transport rtu only"),
        (device(level={"table": "input", "address": 0, "dtype": "int16"})
         | {"probe_timeout_s": 1.0}, "probe_timeout_s", "applies to transport rtu only"),
    ],
)
def test_transport_rules_name_the_key(table: dict[str, Any], key: str, reason: str) -> None:
    cfg = msgspec.convert(table, DeviceConfig)
    with pytest.raises(ConfigError) as err:
        cfg.check()
    assert err.value.key == key
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"parity": "X"}, "$.parity"), ({"stopbits": 3}, "$.stopbits"),
        ({"baudrate": 10}, "$.baudrate"),
    ],
)
def test_rtu_schema_problems(change: dict[str, Any], where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as err:
        msgspec.convert(rtu_device(**change), DeviceConfig)
    assert str(err.value).endswith(f"`{where}`")


SITE_HEAD = """[gateway]
device_id = "tn-test-01"

[sync]
broker = "mqtt://127.0.0.1:1883"

"""


def test_site_with_the_sample_devices_loads_and_rtu_errors_name_the_line() -> None:
    from cimedge.edge import config as site_config

    text = SITE_HEAD + SAMPLE.read_text()
    site = site_config.loads(text, "site.toml")
    assert site.devices["node1"].config.port == "/dev/ttyUSB0"
    bad = text.replace('parity = "N"', 'parity = "N"\nhost = "10.0.0.9"', 1)
    with pytest.raises(ConfigError) as err:
        site_config.loads(bad, "site.toml")
    assert err.value.key == "devices.node1.host"
    assert bad.splitlines()[(err.value.line or 0) - 1].startswith('host = "10.0.0.9"')
