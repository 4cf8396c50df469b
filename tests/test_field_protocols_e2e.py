"""HJ 212, SL 651, IEC 104 and CJ/T 188 devices through `cimedge run` to the receiver.

Simulators run in this process; the gateway is a real `cimedge run` process with a real
mosquitto and the receiver. Each simulator serves a counting value (1, 2, 3 ...), the
next one only once the receiver has stored the last, so "every value served is stored,
and nothing else" is checked exactly, per protocol, end to end. (A pushed value is read
again at every poll until the next one comes, as a BLE value is: report-by-exception in the
site templates keeps only its changes.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cimedge.cloud_sync.receiver.ingest import IngestKey, IngestKeys
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.provisioning.backend import ensure_demo_keys
from cimedge.provisioning.identity import ensure_identity
from cimedge.tools.sim import field_sims
from cimedge.drivers.hj212 import frame as hj
from cimedge.tools.sim.cjt188_meter import Meter, MeterLine
from cimedge.tools.sim.hj212_platform import Platform
from cimedge.tools.sim.hj212_station import Station as AirStation
from cimedge.tools.sim.iec104_rtu import LiteRtu
from cimedge.tools.sim.sl651_station import Station as HydroStation

DEVICE_ID = "ps-proto-01"
N = 5  # values served per protocol

SITE = """\
[gateway]
device_id = "{dev}"
site_type = "pump_station"
key_file = "device.key"

[store]
path = "buffer.sqlite"

[sync]
broker = "{broker}"
flush_interval_s = 0.2
ack_timeout_s = 2.0

[devices.aq1]
driver = "hj212"
mode = "listen"
mn = "LP0001AQ01"
password_file = "{tmp}/aq1.pw"
listen_host = "127.0.0.1"
listen_port = {aq_port}
poll_interval_s = 0.1
points.pm25 = {{ code = "a34004", unit = "ug/m3" }}

[devices.hs1]
driver = "sl651"
station = "0012345678"
password_file = "{tmp}/hs1.pw"
listen_host = "127.0.0.1"
listen_port = {hs_port}
poll_interval_s = 0.1
points.level = {{ element = "water_level" }}

[devices.plc1]
driver = "iec104"
host = "127.0.0.1"
port = {plc_port}
poll_interval_s = 0.1
t1_s = 5.0
t2_s = 1.0
points.outlet_level = {{ ioa = 1001, unit = "m" }}

[devices.wm1]
driver = "cjt188"
port = "{pty}"
address = "00201510270588"
poll_interval_s = 0.1
points.volume = {{ field = "flow_total" }}

[north.env]
protocol = "hj212"
host = "127.0.0.1"
port = {platform_port}
mn = "LP0001GW01"
password_file = "{tmp}/north.pw"
interval_s = 0.2
points = {{ "aq1.pm25" = "a34004", "hs1.level" = "w01001" }}
"""


class Rig:
    """Broker, receiver and simulators here; the gateway as a `cimedge run` process."""

    def __init__(self, tmp: Path, broker: Any) -> None:
        self.tmp, self.broker = tmp, broker
        self.gateway: subprocess.Popen[bytes] | None = None
        self.stored: dict[str, list[float]] = {}

    async def start(self) -> None:
        tmp = self.tmp
        (tmp / "aq1.pw").write_text("aq1pw")
        (tmp / "hs1.pw").write_text("5A17")
        (tmp / "north.pw").write_text("gwpw")
        self.platform = Platform("LP0001GW01", "gwpw")
        platform_port = await self.platform.serve()
        aq_port, hs_port = field_sims.free_port(), field_sims.free_port()
        self.air = AirStation("LP0001AQ01", "aq1pw", interval_s=3600, hour_every=0,
                              values={"a34004": 0.0})
        self.air.connect("127.0.0.1", aq_port)
        self.hydro = HydroStation("0012345678", "5A17", interval_s=3600, values={0x39: 0.0})
        self.hydro.connect("127.0.0.1", hs_port)
        self.rtu = LiteRtu(cyclic_s=3600)
        await self.rtu.start()
        self.rtu.set(1001, 0.0)
        self.meter = Meter("00201510270588", volume_m3=0.0)
        self.line = await MeterLine([self.meter], baudrate=2400).start()
        _, enrollment = ensure_identity(tmp, DEVICE_ID, "pump_station")
        registry = Registry(tmp / "registry.sqlite")
        registry.load_enrollment_file(enrollment)
        ingest = IngestKeys([IngestKey(ensure_demo_keys(tmp))])  # v2 acks are signed
        self.receiver = Receiver("127.0.0.1", self.broker.port, tmp / "receiver.sqlite", registry,
                                 ingest=ingest)
        self.rx_task = asyncio.create_task(self.receiver.run())
        async with asyncio.timeout(30):  # its store opens inside run(): query only after
            await self.receiver.ready.wait()
        (tmp / "site.toml").write_text(SITE.format(
            dev=DEVICE_ID, broker=self.broker.url, tmp=tmp, aq_port=aq_port, hs_port=hs_port,
            plc_port=self.rtu.port, pty=self.line.path, platform_port=platform_port))
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "cimedge.provisioning.cli", "run", "--config",
             str(tmp / "site.toml")], stdin=subprocess.DEVNULL, env=dict(os.environ),
            stderr=open(tmp / "gateway.log", "ab"))  # noqa: SIM115

    async def refresh(self) -> None:
        rows = await self.receiver.query(lambda s: s.readings(DEVICE_ID))
        self.stored = {}
        for r in rows:
            if r.value is not None:
                self.stored.setdefault(r.name.split(":", 1)[1], []).append(float(r.value))

    async def stored_value(self, point: str, value: float, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while value not in self.stored.get(point, []):
                assert self.gateway is not None and self.gateway.poll() is None, \
                    (self.tmp / "gateway.log").read_text()
                await asyncio.sleep(0.05)
                await self.refresh()

    async def close(self) -> None:
        if self.gateway is not None:
            self.gateway.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(self.gateway.wait, 20)
            assert rc == 0, (self.tmp / "gateway.log").read_text()
        self.rx_task.cancel()
        await asyncio.gather(self.rx_task, return_exceptions=True)
        await self.air.close()
        await self.hydro.close()
        await self.rtu.close()
        await self.line.close()
        await self.platform.close()


@pytest.fixture
async def rig(tmp_path: Path, broker: Any) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, broker)
    await r.start()
    try:
        yield r
    finally:
        await r.close()


async def serve_air(rig: Rig, i: int) -> None:
    rig.air.values["a34004"] = float(i)
    await rig.air.push()


async def serve_hydro(rig: Rig, i: int) -> None:
    rig.hydro.values[0x39] = float(i)
    await rig.hydro.report()


async def serve_plc(rig: Rig, i: int) -> None:
    rig.rtu.set(1001, float(i))


async def serve_meter(rig: Rig, i: int) -> None:
    rig.meter.volume_m3 = float(i)


async def test_every_value_served_by_each_protocol_is_stored_and_nothing_else(rig: Rig) -> None:
    protocols: dict[str, Callable[[Rig, int], Awaitable[None]]] = {
        "aq1.pm25": serve_air, "hs1.level": serve_hydro, "plc1.outlet_level": serve_plc,
        "wm1.volume": serve_meter}
    await rig.air.until(lambda: rig.air._writer is not None, timeout=30)  # noqa: SLF001
    await rig.hydro.until(lambda: rig.hydro._writer is not None, timeout=30)  # noqa: SLF001

    async def one(point: str, serve: Callable[[Rig, int], Awaitable[None]]) -> None:
        for i in range(1, N + 1):
            await serve(rig, i)
            await rig.stored_value(point, float(i))

    await asyncio.gather(*(one(p, s) for p, s in protocols.items()))
    await rig.refresh()
    for point in protocols:
        served = {0.0, *map(float, range(1, N + 1))}
        assert set(rig.stored[point]) <= served, point  # nothing but what was served
        assert set(range(1, N + 1)) <= set(rig.stored[point]), point  # all of it
    assert sum(rig.receiver.rejects.values()) == 0
    # the gateway's north side reports the same values on to an environmental platform
    def reported(code: str) -> set[float]:
        cps = [hj.parse_cp(m.cp) for m in rig.platform.of(hj.CN_RTD)]
        return {float(v.text) for cp in cps if (v := cp.value(code, "Rtd")) is not None}

    await rig.platform.until(lambda: float(N) in reported("a34004") & reported("w01001"))
