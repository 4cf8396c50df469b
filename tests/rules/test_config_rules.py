"""The control sections of the site TOML: every template loads; a bad key names file, key, line."""

from __future__ import annotations

import pytest

from cimedge.edge import config, sites
from cimedge.edge.errors import ConfigError
from cimedge.tools.sim import lamp_pole, pump_pair, roadside, tunnel

PUMP = sites.render("pump_station")


def _err(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        config.loads(text, "site.toml")
    return e.value


def _line(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


@pytest.mark.parametrize("site_type", sites.TYPES)
def test_every_template_loads(site_type):
    site = config.loads(sites.render(site_type), "/etc/cimedge/site.toml")
    assert site.gateway.site_type == site_type
    assert site.rules and site.actions
    assert "$" not in sites.render(site_type)


@pytest.mark.parametrize(("site_type", "device", "plant"), [
    ("lamp_pole", "lp1", lamp_pole.LampPole),
    ("roadside_unit", "rsu1", roadside.Roadside),
    ("utility_tunnel", "ut1", tunnel.Tunnel),
    ("pump_station", "ps2", pump_pair.StandbyPump),
])
def test_template_points_match_their_simulator(site_type, device, plant):
    site = config.loads(sites.render(site_type), "site.toml")
    points = site.devices[device].config.points
    for name, want in plant.points().items():
        got = points[name]
        assert (got.table, got.address, got.dtype, got.bit) == \
            (want["table"], want["address"], want["dtype"], want.get("bit")), name


def test_pump_template_matches_the_pump_station_simulator():
    from cimedge.tools.sim import pump_station

    points = config.loads(PUMP, "site.toml").devices["ps1"].config.points
    for name, got in points.items():
        want = pump_station.demo_points()[name]
        assert (got.table, got.address, got.dtype) == (want["table"], want["address"],
                                                       want["dtype"]), name


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ('point = "ps1.level"\non = 3.5', 'point = "ps1.nope"\non = 3.5', "rules.pump_demand.point",
     "no configured point named 'ps1.nope'"),
    ("on = 3.5\noff = 1.2", "on = 3.5\noff = 3.9", "rules.pump_demand.off",
     "clears below where it raises"),
    ("on = 4.5\ndeadband = 0.3", "on = 4.5\ndeadband = 0.3\noff = 4.0", "rules.flood.deadband",
     "not both"),
    ("window_s = 60", "window_s = 0", "rules.level_rising_fast.window_s", "Expected float > 0"),
    ("after_s = 30", "after_s = 30\nbogus = 1", "rules.level_stale.bogus", "unknown key"),
    ('when = "pump_demand"', 'when = "pump_demandd"', "actions.pumps.when",
     "no rule named 'pump_demandd'"),
    ('inhibit = ["dry_run"]', 'inhibit = ["dry_rum"]', "actions.pumps.inhibit.0",
     "no rule named 'dry_rum'"),
    ('trips = ["pump1_overload", "pump2_overload"]', 'trips = ["pump1_overload"]',
     "actions.pumps.trips", "one trip rule per point"),
    ('points = ["ps1.mode"]', 'points = ["ps1.level"]', "actions.take_control.points.0",
     "read-only input table"),
    ('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"', "site.timezone",
     "not a time zone"),
    ("max_interval_s = 60.0\n", "max_interval_s = -1.0\n", "report.max_interval_s",
     "Expected float >= 0"),
])
def test_bad_control_keys_name_key_and_line(old, new, key, reason):
    text = PUMP.replace(old, new, 1)
    assert text != PUMP
    e = _err(text)
    assert (e.key, e.file) == (key, "site.toml")
    assert reason in e.reason
    field = next(k for k in reversed(key.split(".")) if not k.isdigit())
    wrong = next(ln for ln in new.splitlines() if ln.startswith(field))
    assert e.line in (_line(text, wrong), _line(text, "[" + key.rsplit(".", 2)[0]))


def test_combination_loops_and_unknown_names():
    text = PUMP + '\n[rules.a]\nkind = "all"\nof = ["b"]\n\n[rules.b]\nkind = "any"\nof = ["!a"]\n'
    e = _err(text)
    assert e.key == "rules.a.of" and "loop: a -> b -> a" in e.reason
    e = _err(PUMP + '\n[rules.c]\nkind = "all"\nof = ["nope"]\n')
    assert (e.key, e.reason) == ("rules.c.of.0", "no rule named 'nope'")


def test_schedule_needs_a_place_and_good_times():
    road = sites.render("roadside_unit")
    e = _err(road + '\n[rules.lamp]\nkind = "schedule"\nsteps = [{ at = "sunset", level = 1 }]\n')
    assert e.key == "rules.lamp.steps" and "lat and lon" in e.reason
    e = _err(road + '\n[rules.lamp]\nkind = "schedule"\nsteps = [{ at = "25:00", level = 1 }]\n')
    assert e.key == "rules.lamp.steps.0.at"


def test_report_points_must_exist():
    e = _err(PUMP.replace("[report.points.ps2]\n", "[report.points.ps2]\nnope = {}\n"))
    assert (e.key, e.reason) == ("report.points.ps2.nope", "no configured point named 'ps2.nope'")


def test_commands_section():
    site = config.loads(PUMP + '\n[commands]\nbackend_key_file = "backend.pub"\n', "/x/site.toml")
    assert site.commands is not None and site.commands.max_ttl_s == 3600
    assert site.commands.allow == ["set", "ack", "override"]
    e = _err(PUMP + '\n[commands]\nbackend_key_file = "b"\nallow = ["shell"]\n')
    assert e.key.startswith("commands.allow")
