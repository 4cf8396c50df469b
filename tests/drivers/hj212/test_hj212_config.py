"""HJ 212 config: sample.toml parses and documents every key; bad tables name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cimedge.drivers import DRIVERS, load
from cimedge.drivers.hj212 import DeviceConfig, PointConfig
from cimedge.edge import config as site_config
from cimedge.edge.errors import ConfigError

SAMPLE = Path(__file__).parents[3] / "drivers" / "hj212" / "sample.toml"
HEAD = '[gateway]\ndevice_id = "lp-test-01"\n\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\n\n'


def test_sample_parses_and_documents_every_key() -> None:
    text = SAMPLE.read_text()
    cfg = msgspec.convert(tomllib.loads(text)["devices"]["aq1"], DeviceConfig)
    cfg.check()
    keys = set(re.findall(r"^(\w+) =", text, re.MULTILINE))
    assert set(DeviceConfig.__struct_fields__) <= keys | {"points"}
    assert set(PointConfig.__struct_fields__) <= keys
    assert cfg.stale_s(cfg.points["pm25"]) == 120.0
    assert cfg.stale_s(cfg.points["pm25_hour"]) == 7200.0


def test_registered_and_loaded_by_the_site_loader() -> None:
    assert DRIVERS["hj212"] == "cimedge.drivers.hj212"
    assert load("hj212").DeviceConfig is DeviceConfig
    site = site_config.loads(HEAD + SAMPLE.read_text(), "site.toml")
    assert site.units["aq1.pm25"] == "ug/m3"


@pytest.mark.parametrize(("change", "key", "reason"), [
    ({"listen_host": ""}, "devices.aq1.listen_host", "listens on no port unless told"),
    ({"mode": "poll"}, "devices.aq1.host", "needs the station's host and port"),
    ({"mn": "LP 01"}, "devices.aq1.mn", "is not an MN"),
    ({"timezone": "Mars/Olympus"}, "devices.aq1.timezone", "is not a time zone"),
    ({"st": "2"}, "devices.aq1.st", "matching regex"),
])
def test_bad_device_tables_name_the_key(change: dict[str, Any], key: str, reason: str) -> None:
    text = SAMPLE.read_text()
    for k, v in change.items():
        text = re.sub(rf"^{k} = .*$", f"{k} = {v!r}".replace("'", '"'), text, count=1,
                      flags=re.MULTILINE)
    with pytest.raises(ConfigError) as err:
        site_config.loads(HEAD + text, "site.toml")
    assert err.value.key == key and reason in err.value.reason


def test_bad_point_names_its_key() -> None:
    bad = SAMPLE.read_text().replace('code = "LA"', 'code = "L A"')
    with pytest.raises(ConfigError) as err:
        site_config.loads(HEAD + bad, "site.toml")
    assert err.value.key == "devices.aq1.points.noise.code"
