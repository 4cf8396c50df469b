"""The rig files parse, describe a valid site, and say why a rig cannot run a scenario."""

from __future__ import annotations

import string
from pathlib import Path

import msgspec
import pytest

from cimedge.edge import config as site_config
from cimedge.edge import sites
from cimedge.edge.errors import ConfigError
from hil_tests.rig import BenchRig, load

RIGS = Path(__file__).parents[2] / "hil_tests" / "rigs"


@pytest.mark.parametrize("name", ["sim", "bench-01"])
def test_rig_file_describes_a_valid_site(name, tmp_path):
    spec = load(RIGS / f"{name}.toml")
    rig = BenchRig(spec)  # the description only: nothing is opened
    values = {**sites.COMMON, **sites.DEFAULTS[spec.site.type], **rig.template_values(),
              "device_id": spec.device_id}
    text = string.Template(rig.site_template()).substitute(values)
    site = site_config.loads(text, str(tmp_path / "site.toml"))
    for dev in [*spec.meters, *spec.nodes]:
        assert site.devices[dev].config.transport == "rtu"
    assert {f"n1.{p}" for p in ("fw_major", "uptime", "ch0", "ch1")} <= set(site.units)


def test_bench_rig_says_what_it_cannot_do():
    rig = BenchRig(load(RIGS / "bench-01.toml"))
    assert rig.cannot("uplink") == ("rig bench-01 has no way to cut the uplink (add it to "
                                    f"{RIGS / 'bench-01.toml'})")
    assert rig.cannot("power", "n1") is None and rig.cannot("switch", "n1") is None
    assert rig.cannot_update_firmware("n1") is None
    assert rig.cannot("power", "n9") == "rig bench-01 has no node 'n9'"
    bare = BenchRig(msgspec.structs.replace(rig.spec, nodes={
        "n1": msgspec.structs.replace(rig.spec.nodes["n1"], power=None, usb="")}))
    assert bare.cannot_update_firmware("n1") == "rig bench-01: node n1 needs usb to be flashed"
    assert bare.cannot("power", "n1").startswith("rig bench-01 has no power relay for node n1 ")


def test_a_rig_file_with_a_mistake_names_it(tmp_path):
    (tmp_path / "r.toml").write_text('[rig]\nname = "x"\nkind = "sim"\ndevice_id = "x-1"\n'
                                     '[nodes.n1]\nbus = "nope"\nunit = 3\n')
    with pytest.raises(ConfigError, match="n1.bus: no bus named 'nope'"):
        load(tmp_path / "r.toml")
