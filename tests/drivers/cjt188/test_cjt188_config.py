"""CJ/T 188 config: sample.toml parses and documents every key; bad tables name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from cimedge.drivers import DRIVERS, load
from cimedge.drivers.cjt188 import DeviceConfig, PointConfig
from cimedge.edge import config as site_config
from cimedge.edge.errors import ConfigError

SAMPLE = Path(__file__).parents[3] / "drivers" / "cjt188" / "sample.toml"
HEAD = '[gateway]\ndevice_id = "ps-test-01"\n\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\n\n'


def test_sample_parses_and_documents_every_key() -> None:
    text = SAMPLE.read_text()
    cfg = msgspec.convert(tomllib.loads(text)["devices"]["wm1"], DeviceConfig)
    cfg.check()
    keys = set(re.findall(r"^(\w+) =", text, re.MULTILINE))
    assert set(DeviceConfig.__struct_fields__) <= keys | {"points"}
    assert set(PointConfig.__struct_fields__) <= keys
    assert cfg.type_code == 0x10


def test_registered_and_loaded_by_the_site_loader() -> None:
    assert DRIVERS["cjt188"] == "cimedge.drivers.cjt188"
    assert load("cjt188").DeviceConfig is DeviceConfig
    site = site_config.loads(HEAD + SAMPLE.read_text(), "site.toml")
    assert site.units["wm1.volume"] == "m3"


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ('field = "battery_low"', 'field = "heat_total"', "devices.wm1.points.battery_low.field",
     "not a field of a water meter"),
    ('address = "00201510270588"', 'address = "0020151027058X"', "devices.wm1.address",
     "not 14 digits"),
    ('meter_type = "water"', 'meter_type = "steam"', "devices.wm1.meter_type", "Invalid enum value 'steam'"),
])
def test_bad_tables_name_the_key(old: str, new: str, key: str, reason: str) -> None:
    text = SAMPLE.read_text()
    assert old in text
    with pytest.raises(ConfigError) as err:
        site_config.loads(HEAD + text.replace(old, new), "site.toml")
    assert err.value.key == key and reason in err.value.reason
