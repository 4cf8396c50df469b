"""The control side inside the real daemon: pumps cycle with no broker; commands come over MQTT."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.drivers.modbus import tcp
from cimedge.edge import commands, config, sites
from cimedge.edge.daemon import Gateway
from cimedge.provisioning.identity import ensure_identity
from cimedge.tools.broker import free_port
from cimedge.tools.sim import pump_pair
from tests.same_step import SameStep, stop


async def until(cond: Callable[[], object], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


def pump_site(tmp, pp: pump_pair.PumpPair, broker: str, extra: str = "") -> config.Site:
    assert pp.station is not None
    text = sites.render("pump_station", {
        "device_id": "ps-test-01", "broker": broker, "poll_s": 0.2,
        "ps1_host": "127.0.0.1", "ps1_port": pp.station.port, "ps2_host": "127.0.0.1",
        "ps2_port": pp.standby.port, "pump_min_run_s": 1, "pump_min_rest_s": 1,
        "pump_max_starts": 100})
    (tmp / "site.toml").write_text(text + extra)
    return config.load(tmp / "site.toml")


async def test_gateway_drives_the_pumps_with_the_broker_down_from_start_to_end(tmp_path):
    pp = await pump_pair.serve(speed=20, seed=2)
    site = pump_site(tmp_path, pp, f"mqtt://127.0.0.1:{free_port()}")  # nobody listens
    key, _ = ensure_identity(tmp_path, "ps-test-01", "pump_station")
    gw = Gateway(site, key)
    task = asyncio.create_task(gw.run())
    try:
        # the well cycles about every 2 s at speed 20: one start of each pump, one stop
        await until(lambda: pp.standby.starts >= 1 and pp.state.pump_starts >= 1
                    and not pp.standby.coil["pump_cmd"], timeout=30)
        assert pp.state.manual
        assert gw.transport is not None and not gw.transport.up.is_set()
        d = await gw.store.depth() if gw.store else None
        assert d is not None and d.events >= 4  # the actions, stored for when the link returns
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pp.close()


async def test_signed_commands_over_mqtt_apply_once(tmp_path, broker):
    backend = Ed25519PrivateKey.generate()
    (tmp_path / "backend.pub").write_bytes(backend.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    pp = await pump_pair.serve(speed=0, seed=2)
    site = pump_site(tmp_path, pp, broker.url,
                     '\n[commands]\nbackend_key_file = "backend.pub"\n')
    key, _ = ensure_identity(tmp_path, "ps-test-01", "pump_station")
    gw = Gateway(site, key)
    task = asyncio.create_task(gw.run())
    try:
        await until(lambda: gw.transport is not None and gw.transport.up.is_set())
        await asyncio.sleep(0.2)  # the cmd subscription follows the connect
        ctl = gw.control
        assert ctl is not None
        good = commands.make(backend, "ps-test-01", "set", "pump_demand", exp=time.time() + 60,
                             nonce=os.urandom(16), set_key="off", value=1.5)
        expired = commands.make(backend, "ps-test-01", "set", "pump_demand",
                                exp=time.time() - 1, nonce=os.urandom(16), set_key="off",
                                value=1.6)
        async with aiomqtt.Client("127.0.0.1", broker.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as backend_link:
            topic = "cim/v1/ps-test-01/cmd"
            await backend_link.publish(topic, good, qos=1)
            await until(lambda: ctl.rules.conds["pump_demand"].rule.off == 1.5)
            await backend_link.publish(topic, good, qos=1)  # a replay
            await backend_link.publish(topic, expired, qos=1)
            await until(lambda: sum(ctl.refused.values()) == 2)
        assert ctl.refused == {"replayed": 1, "expired": 1}
        assert ctl.rules.conds["pump_demand"].rule.off == 1.5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pp.close()


@pytest.mark.parametrize("driver_checks", [True, False], ids=["driver", "poller"])
async def test_a_stop_that_lands_with_a_modbus_answer_stops_the_daemon(
        tmp_path, monkeypatch, driver_checks):
    """SIGTERM in the loop step of a Modbus answer: 3.11's wait_for would swallow it and the
    TaskGroup would wait for that poll task forever (cimedge/stop.py). The driver puts the
    cancellation back; should a driver not, the poller does."""
    if not driver_checks:
        monkeypatch.setattr(tcp, "reraise_cancelled", lambda: None)
    race = SameStep().modbus(monkeypatch)
    pp = await pump_pair.serve(speed=0, seed=2)
    site = pump_site(tmp_path, pp, f"mqtt://127.0.0.1:{free_port()}")
    key, _ = ensure_identity(tmp_path, "ps-test-01", "pump_station")
    gw = Gateway(site, key)
    task = asyncio.create_task(gw.run(), name="gateway")
    try:
        await until(lambda: gw.poll_stats.ticks >= 4)
        race.arm(task)  # the stop comes with the next answer, as a SIGTERM can
        done, _ = await asyncio.wait({task}, timeout=30)
        assert race.fired == 1
        assert task in done and task.cancelled()
    finally:
        await stop(task)
        await pp.close()
