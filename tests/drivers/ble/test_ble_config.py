"""BLE config: sample.toml parses, documents every key, and loads through the site loader."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec

from cimedge.drivers import DRIVERS, load
from cimedge.drivers.ble import DeviceConfig, PointConfig
from cimedge.edge import config as site_config

SAMPLE = Path(__file__).parents[3] / "drivers" / "ble" / "sample.toml"


def test_sample_parses_and_documents_every_key() -> None:
    text = SAMPLE.read_text()
    for table in tomllib.loads(text)["devices"].values():
        msgspec.convert(table, DeviceConfig).check()
    keys = set(re.findall(r"^(\w+) =", text, re.MULTILINE))
    assert set(DeviceConfig.__struct_fields__) <= keys | {"points"}
    assert set(PointConfig.__struct_fields__) <= keys


def test_registered_and_units_reach_the_site() -> None:
    assert DRIVERS["ble"] == "cimedge.drivers.ble" and load("ble").Driver.__name__ == "Driver"
    head = '[gateway]\ndevice_id = "lp-test-01"\n\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\n\n'
    site = site_config.loads(head + SAMPLE.read_text(), "site.toml")
    assert site.units["lp_env.humidity"] == "%RH"  # from the BTHome object table
    assert site.units["tilt.battery"] == "%"
    assert site.devices["tilt"].config.mode == "gatt"
