"""Site config: a good file loads; a bad one names the file, the key path, the reason and the line."""

from __future__ import annotations

import pytest

from cimedge.edge import config
from cimedge.edge.errors import ConfigError
from cimedge.provisioning.demo import site_toml

GOOD = site_toml("mqtt://127.0.0.1:1883", 5020)


def _err(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        config.loads(text, "site.toml")
    return e.value


def _line(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_demo_site_loads():
    site = config.loads(GOOD, "/etc/cimedge/site.toml")
    assert site.gateway.device_id == "ps-demo-01"
    assert site.units["ps1.level"] == "m"
    assert site.rules["wet_well_high"].on == 3.5
    assert str(site.path(site.store.path)) == "/etc/cimedge/buffer.sqlite"


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ('device_id = "ps-demo-01"', 'device_id = "PS 01"', "gateway.device_id",
     "Expected str matching regex"),
    ("ack_timeout_s = 5.0", "ack_timeout_s = -1", "sync.ack_timeout_s", "Expected float > 0"),
    ("ack_timeout_s = 5.0", "ack_timeout = 5.0", "sync.ack_timeout", "unknown key"),
    ('dtype = "uint32"', 'dtype = "uint33"', "devices.ps1.points.counter.dtype", "Invalid enum"),
    ("address = 20", "address = 70000", "devices.ps1.points.counter.address", "<= 65535"),
    ('point = "ps1.level"', 'point = "ps1.nope"', "rules.wet_well_high.point",
     "no configured point named 'ps1.nope'"),
    ('kind = "threshold_high"', 'kind = "threshold_sideways"', "rules.wet_well_high.kind",
     "Invalid value 'threshold_sideways'"),
])
def test_bad_value_names_key_and_line(old, new, key, reason):
    text = GOOD.replace(old, new, 1)
    e = _err(text)
    assert e.file == "site.toml"
    assert e.key == key
    assert reason in e.reason
    assert e.line == _line(text, new)


def test_missing_required_key_points_at_its_table():
    text = GOOD.replace('table = "input"\naddress = 20\n', 'address = 20\n')
    e = _err(text)
    assert (e.key, e.reason) == ("devices.ps1.points.counter.table", "missing required key")
    assert e.line == _line(text, "[devices.ps1.points.counter]")


def test_not_toml_gives_the_parser_line():
    e = _err(GOOD + "\n[broken\n")
    assert e.line == len(GOOD.splitlines()) + 2
    assert "not valid TOML" in e.reason


def test_unknown_section_and_driver():
    assert _err(GOOD + "\n[extra]\n").key == "extra"
    e = _err(GOOD.replace('driver = "modbus"', 'driver = "canbus"'))
    assert (e.key, e.line) == ("devices.ps1.driver", _line(GOOD, 'driver = "modbus"'))


def test_error_message_reads_as_one_line():
    e = _err(GOOD.replace("address = 20", "address = 70000"))
    assert str(e).startswith(f"site.toml:{e.line}: devices.ps1.points.counter.address: ")
    assert "\n" not in str(e)
