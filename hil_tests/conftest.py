"""The HIL suite's rig and gateway fixtures, and a report per run (JUnit XML + Markdown).

    pytest hil_tests --rig sim                      # hil_tests/rigs/sim.toml, built here
    pytest hil_tests --rig hil_tests/rigs/bench-01.toml --hil-report /srv/hil/reports

The rig is built once per run; one gateway is provisioned on it by the first scenario and
runs for the rest, so the scenarios follow a technician's day: provision, poll, faults.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests import report
from hil_tests.gateway import Gateway, until
from hil_tests.rig import Rig, cannot, load, open_rig

HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hil", "hardware-in-the-loop rig")
    g.addoption("--rig", default="sim", metavar="NAME|FILE",
                help="a rig file, or the name of one in hil_tests/rigs/ (default: sim)")
    g.addoption("--hil-report", default="", metavar="DIR",
                help="where junit.xml and summary.md go (default hil_tests/reports/RIG-TIME)")


def rig_file(value: str) -> Path:
    for candidate in (Path(value), HERE / value, HERE / "rigs" / value,
                      HERE / "rigs" / f"{value}.toml"):
        if candidate.is_file():
            return candidate
    raise pytest.UsageError(f"--rig {value}: no such rig file (see {HERE / 'rigs'})")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    spec = load(rig_file(config.getoption("--rig")))
    config.stash[report.SPEC] = spec
    out = config.getoption("--hil-report") or str(
        HERE / "reports" / f"{spec.name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
    config.stash[report.DIR] = Path(out)
    if not config.option.xmlpath:  # the junitxml plugin reads this in its own configure
        config.option.xmlpath = str(Path(out) / "junit.xml")
    config.pluginmanager.register(report.Summary(config), "hil-summary")
    config.addinivalue_line("markers", "rig_needs(need): skip, with the reason, on a rig that "
                                       "lacks it (hil_tests/rig.py cannot())")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a scenario the rig cannot run before any fixture builds or starts anything."""
    spec = item.config.stash[report.SPEC]
    for mark in item.iter_markers("rig_needs"):
        if why := cannot(spec, *mark.args):
            pytest.skip(why)


@pytest.fixture(scope="session")
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    built = open_rig(request.config.stash[report.SPEC], tmp_path_factory.mktemp("rig"))
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="session")
def provisioned(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A fresh gateway, provisioned with `cimedge provision` from the rig's site template."""
    gw = Gateway(rig, tmp_path_factory.mktemp("gateway") / "state")
    gw.provision()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def gateway(provisioned: Gateway) -> Gateway:
    """The provisioned gateway, running against its backend, every device answering."""
    out = provisioned.provisioning
    assert out is not None and out.returncode == 0, out and out.stderr
    if provisioned.daemon is None:
        provisioned.start_backend()
        provisioned.start()
        until(lambda: (d := provisioned.devices()) and set(d.values()) == {"ok"},
              30, "every device to answer the gateway")
    return provisioned

