"""The CJ/T 188 valve as a local action: the pump station's rule closes it, a signed override
opens it, a refused op changes nothing, a stuck valve raises the action's failure alarm."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.drivers import cjt188
from cimedge.edge import commands, config, sites
from cimedge.edge.clock import ManualClock
from cimedge.edge.control import Controller
from cimedge.edge.model import Reading
from cimedge.edge.store import Store
from cimedge.tools.sim.cjt188_meter import Meter, MeterLine

S = 1_000_000_000
T0 = 1_767_225_600 * S
DEV = "ps-0001"


@pytest.fixture
async def line() -> AsyncIterator[MeterLine]:
    async with MeterLine([Meter("00201510270588")], baudrate=9600) as sim:
        yield sim


async def gateway(tmp: Path, line: MeterLine, allow: str) -> tuple[Controller, Store, object,
                                                                    Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    (tmp / "backend.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    text = sites.render("pump_station", {"wm1_port": line.path, "wm1_parity": "E"}).replace(
        'meter_type = "water"', 'meter_type = "water"\nbaudrate = 9600')
    text += f'\n[commands]\nbackend_key_file = "backend.pub"\nallow = {allow}\n'
    (tmp / "site.toml").write_text(text)
    site = config.load(tmp / "site.toml")
    drv = await cjt188.Driver("wm1", site.devices["wm1"].config).__aenter__()
    store = await Store(tmp / "buffer.sqlite").__aenter__()
    ctl = await Controller.open(site, {"wm1": drv}, store, clock=ManualClock(T0))
    return ctl, store, drv, key


def override(key: Ed25519PrivateKey, value: str) -> bytes:
    return commands.make(key, DEV, "override", "supply_valve", exp=T0 / S + 60,
                         nonce=os.urandom(16), value=value)


async def test_flood_closes_override_opens_and_a_stuck_valve_alarms(tmp_path: Path,
                                                                   line: MeterLine) -> None:
    meter = line.meters["00201510270588"]
    ctl, store, drv, key = await gateway(tmp_path, line, '["override", "ack"]')
    try:
        await ctl.commit(ctl.tick([Reading("ps1.level", T0, 2.0)]))
        await ctl.commit(await ctl.step())
        assert meter.valve_open and meter.valve_commands == 1  # held open: no flood
        await ctl.commit(ctl.tick([Reading("ps1.level", T0, 4.8)]))
        await ctl.commit(await ctl.step())
        assert not meter.valve_open and "flood" in ctl.active()
        await ctl.on_cmd(override(key, "on"))  # the backend opens it again, signed
        await ctl.commit(await ctl.step())
        assert meter.valve_open
        meter.stuck = True
        await ctl.on_cmd(override(key, "off"))
        await ctl.commit(await ctl.step())
        assert meter.valve_open and "supply_valve:wm1.supply_valve" in ctl.active()
    finally:
        await drv.__aexit__(None, None, None)  # type: ignore[attr-defined]
        await store.__aexit__(None, None, None)
    with sqlite3.connect(tmp_path / "buffer.sqlite") as db:
        kinds = [(k, r) for k, r in db.execute("SELECT kind, rule FROM events ORDER BY id")]
    assert ("raise", "supply_valve:wm1.supply_valve") in kinds


async def test_override_outside_the_allowlist_changes_nothing(tmp_path: Path,
                                                             line: MeterLine) -> None:
    meter = line.meters["00201510270588"]
    ctl, store, drv, key = await gateway(tmp_path, line, '["set", "ack"]')
    try:
        await ctl.commit(ctl.tick([Reading("ps1.level", T0, 2.0)]))
        await ctl.commit(await ctl.step())
        await ctl.on_cmd(override(key, "off"))
        await ctl.commit(await ctl.step())
    finally:
        await drv.__aexit__(None, None, None)  # type: ignore[attr-defined]
        await store.__aexit__(None, None, None)
    assert meter.valve_open and ctl.actions.actions["supply_valve"].mode == "auto"
