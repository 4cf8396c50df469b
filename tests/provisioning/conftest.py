"""Fixtures for the technician CLI: a test CA, a Mosquitto with mutual TLS, simulators, a gateway.

Session-scoped: the broker, the simulators and one provisioned gateway are made once, and each
test that breaks something works on its own copy of the gateway's state dir.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from provkit import TEMPLATE, Process, cimedge, pump_station, rtu_bus

from cimedge.provisioning import ca
from cimedge.tools.broker import Mosquitto, free_port, mosquitto_binary

DEV = "ps-0042"
BACKEND_CN = "backend.ingest-1"  # the receiver's certificate CN, the ACL's backend user


@dataclass
class TlsBroker:
    """Mosquitto: a plain loopback listener for the backend, a mutual-TLS one for gateways."""

    mosquitto: Mosquitto
    tls_port: int
    ca_dir: Path

    @property
    def url(self) -> str:
        return self.mosquitto.url

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    ca.init(d)
    return d


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, ca_dir: Path) -> Iterator[TlsBroker]:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (.ci/run installs it with apt-get)")
    work = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    conf = ca.mosquitto_conf(ca_dir, work / "tls", port=port, anonymous_backend=True,
                             backend_user=BACKEND_CN)
    m = Mosquitto(workdir=work, extra_conf=conf)
    m.start()
    try:
        yield TlsBroker(m, port, ca_dir)
    finally:
        m.close()


@dataclass
class Sims:
    pump: Process
    pump_port: int
    rtu: Process
    rtu_port: str


@pytest.fixture(scope="session")
def sims() -> Iterator[Sims]:
    pump, port = pump_station()
    bus, path = rtu_bus("1,2")
    try:
        yield Sims(pump, port, bus, path)
    finally:
        pump.stop()
        bus.stop()


@pytest.fixture(scope="session")
def ingest_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The backend's ingest key (receivers sign v2 acks with it), listed in backend.json
    beside it, which the installed gateway holds."""
    from cimedge.cloud_sync import backend_keys as bk

    d = tmp_path_factory.mktemp("backend")
    key = bk.write_private_key(d / "ingest.key")
    bk.write(d / "backend.json", bk.BackendKeys((bk.entry_for(key, "ingest"),)))
    return d / "ingest.key"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, sims: Sims, tls_broker: TlsBroker,
              ca_dir: Path, ingest_key: Path) -> Path:
    """A gateway provisioned with `cimedge provision` from the test template, CA-signed."""
    base = tmp_path_factory.mktemp("installed")
    template = base / "template.toml"
    template.write_text(TEMPLATE)
    out = cimedge("provision", "--site-type", "pump_station", "--device-id", DEV,
                  "--state-dir", base / "gw", "--template", template,
                  "--broker", tls_broker.tls_url, "--ca-dir", ca_dir,
                  "--backend", ingest_key.with_name("backend.json"),
                  "--set", f"ps1_port={sims.pump_port}", "--set", f"rtu_port={sims.rtu_port}")
    assert out.returncode == 0, out.stderr
    return base / "gw"


@pytest.fixture
def gw(installed: Path, tmp_path: Path) -> Path:
    """This test's own copy of the provisioned state dir (modes kept)."""
    dst = tmp_path / "gw"
    shutil.copytree(installed, dst)
    return dst
