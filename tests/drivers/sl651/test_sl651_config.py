"""SL 651 config: sample.toml parses and documents every key; bad tables name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from cimedge.drivers import DRIVERS, load
from cimedge.drivers.sl651 import DeviceConfig, PointConfig
from cimedge.edge import config as site_config
from cimedge.edge.errors import ConfigError

SAMPLE = Path(__file__).parents[3] / "drivers" / "sl651" / "sample.toml"
HEAD = '[gateway]\ndevice_id = "ps-test-01"\n\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\n\n'


def test_sample_parses_and_documents_every_key() -> None:
    text = SAMPLE.read_text()
    cfg = msgspec.convert(tomllib.loads(text)["devices"]["hs1"], DeviceConfig)
    cfg.check()
    keys = set(re.findall(r"^(\w+) =", text, re.MULTILINE))
    assert set(DeviceConfig.__struct_fields__) <= keys | {"points"}
    assert set(PointConfig.__struct_fields__) <= keys
    assert cfg.points["level"].identifier() == 0x39 and cfg.points["rain"].unit == "mm"


def test_registered_and_loaded_by_the_site_loader() -> None:
    assert DRIVERS["sl651"] == "cimedge.drivers.sl651" and load("sl651").DeviceConfig is DeviceConfig
    site = site_config.loads(HEAD + SAMPLE.read_text(), "site.toml")
    assert site.units["hs1.level"] == "m" and site.units["hs1.door_open"] == ""


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ('element = "rainfall_now"', 'element = "rainfal"', "devices.hs1.points.rain.element",
     "neither a hex identifier"),
    ("bit = 7 ", "# bit = 7", "devices.hs1.points.door_open.bit", "bit goes with"),
    ('station = "0012345678"', 'station = "00123"', "devices.hs1.station", "regex"),
])
def test_bad_tables_name_the_key(old: str, new: str, key: str, reason: str) -> None:
    text = SAMPLE.read_text()
    assert old in text
    with pytest.raises(ConfigError) as err:
        site_config.loads(HEAD + text.replace(old, new), "site.toml")
    assert err.value.key == key and reason in err.value.reason
