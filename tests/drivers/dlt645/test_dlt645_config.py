"""DL/T 645 config: sample.toml parses and documents every key; bad tables name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cimedge.drivers import DRIVERS, load
from cimedge.drivers.dlt645 import DeviceConfig, PointConfig
from cimedge.edge import config as site_config
from cimedge.edge.errors import ConfigError

SAMPLE = Path(__file__).parents[3] / "drivers" / "dlt645" / "sample.toml"


def device(**change: Any) -> dict[str, Any]:
    table = {"driver": "dlt645", "port": "/dev/ttyUSB1", "address": "000012345678",
             "points": {"v": {"di": "voltage_a"}}}
    return table | change


def test_sample_parses_and_documents_every_key() -> None:
    text = SAMPLE.read_text()
    cfg = msgspec.convert(tomllib.loads(text)["devices"]["lp_meter"], DeviceConfig)
    cfg.check()
    keys = set(re.findall(r"^(\w+) =", text, re.MULTILINE))
    assert set(DeviceConfig.__struct_fields__) <= keys | {"points"}
    assert set(PointConfig.__struct_fields__) <= keys
    assert cfg.points["battery"].identifier() == 0x02800008
    assert (cfg.baudrate, cfg.parity, cfg.preamble) == (2400, "E", 4)


def test_registered_and_loaded_by_the_site_loader() -> None:
    assert DRIVERS["dlt645"] == "cimedge.drivers.dlt645"
    assert load("dlt645").DeviceConfig is DeviceConfig
    head = '[gateway]\ndevice_id = "lp-test-01"\n\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\n\n'
    site = site_config.loads(head + SAMPLE.read_text(), "site.toml")
    assert site.units["lp_meter.voltage"] == "V"  # from the catalogue
    assert site.units["lp_meter.energy"] == "kWh"
    bad = (head + SAMPLE.read_text()).replace('di = "frequency"', 'di = "freqency"')
    with pytest.raises(ConfigError) as err:
        site_config.loads(bad, "site.toml")
    assert err.value.key == "devices.lp_meter.points.frequency.di"
    assert "neither 8 hex digits nor one of" in err.value.reason
    assert bad.splitlines()[(err.value.line or 0) - 1] == 'di = "freqency"'


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        (device(address="12345678901"), "address", "not 12 digits"),
        (device(address="0000123456BB"), "address", "not 12 digits"),
        (device(points={"x": {"di": "02800008"}}), "points.x.length", "needs length and decimals"),
        (device(points={"x": {"di": "voltage_a", "scale": 0.0}}), "points.x.scale", "non-zero"),
    ],
)
def test_cross_field_problems_name_the_key(table: dict[str, Any], key: str, reason: str) -> None:
    cfg = msgspec.convert(table, DeviceConfig)
    with pytest.raises(ConfigError) as err:
        cfg.check()
    assert (err.value.key, err.value.file) == (key, "")
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"parity": "M"}, "$.parity"), ({"preamble": 5}, "$.preamble"),
        ({"bytesize": 7}, "$.bytesize"), ({"host": "x"}, "unknown field `host`"),
    ],
)
def test_schema_problems(change: dict[str, Any], where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as err:
        msgspec.convert(device(**change), DeviceConfig)
    message = str(err.value)
    assert message.endswith(where if where.endswith("`") else f"`{where}`")
