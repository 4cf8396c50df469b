"""IEC 104 config: sample.toml parses and documents every key; bad tables name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from cimedge.drivers import DRIVERS, load
from cimedge.drivers.iec104 import DeviceConfig, PointConfig
from cimedge.edge import config as site_config
from cimedge.edge.errors import ConfigError

SAMPLE = Path(__file__).parents[3] / "drivers" / "iec104" / "sample.toml"
HEAD = '[gateway]\ndevice_id = "ps-test-01"\n\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\n\n'


def test_sample_parses_and_documents_every_key() -> None:
    text = SAMPLE.read_text()
    cfg = msgspec.convert(tomllib.loads(text)["devices"]["plc1"], DeviceConfig)
    cfg.check()
    keys = set(re.findall(r"^(\w+) =", text, re.MULTILINE))
    assert set(DeviceConfig.__struct_fields__) <= keys | {"points"}
    assert set(PointConfig.__struct_fields__) <= keys


def test_registered_and_loaded_by_the_site_loader() -> None:
    assert DRIVERS["iec104"] == "cimedge.drivers.iec104"
    assert load("iec104").DeviceConfig is DeviceConfig
    assert site_config.loads(HEAD + SAMPLE.read_text()).units["plc1.level"] == "m"


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ("w = 8 ", "w = 13 ", "devices.plc1.w", "must not exceed k"),
    ("ioa = 4001", "ioa = 1001", "devices.plc1.points.energy.ioa", "already point level"),
    ("command_ioa = 3001", "# command_ioa = 3001",
     "devices.plc1.points.pump_running.command_ioa", "go together"),
    ("t2_s = 10.0", "t2_s = 20.0", "devices.plc1.t2_s", "shorter than t1"),
])
def test_bad_tables_name_the_key(old: str, new: str, key: str, reason: str) -> None:
    text = SAMPLE.read_text()
    assert old in text
    with pytest.raises(ConfigError) as err:
        site_config.loads(HEAD + text.replace(old, new), "site.toml")
    assert err.value.key == key and reason in err.value.reason
