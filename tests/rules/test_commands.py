"""Signed commands: applied once, validated first, refused when replayed, expired or forged."""

from __future__ import annotations

import os
import sqlite3

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync import backend_keys as bk
from cimedge.edge import commands, config, sites
from cimedge.edge.clock import ManualClock
from cimedge.edge.control import Controller
from cimedge.edge.store import Store

S = 1_000_000_000
T0 = 1_767_225_600 * S
DEV = "ps-0001"


@pytest.fixture
def backend(tmp_path):
    """An operations key in the gateway's backend.json, beside an ingest key (DESIGN 4a)."""
    key = Ed25519PrivateKey.generate()
    bk.write(tmp_path / "backend.json", bk.BackendKeys((
        bk.entry_for(Ed25519PrivateKey.generate(), "ingest"), bk.entry_for(key, "operations"))))
    text = sites.render("pump_station") + "\n[commands]\n"
    (tmp_path / "site.toml").write_text(text)
    return key, config.load(tmp_path / "site.toml")


class Gw:
    """A controller on a real store, no drivers: commands need neither devices nor a broker."""

    def __init__(self, tmp, site) -> None:
        self.tmp, self.site, self.clock = tmp, site, ManualClock(T0)
        # backend.json re-read on every command (the daemon's: at most once a second)
        self.backend = bk.BackendFile(tmp / "backend.json", min_interval=0)

    async def __aenter__(self) -> Controller:
        self.store = await Store(self.tmp / "buffer.sqlite").__aenter__()
        return await Controller.open(self.site, {}, self.store, clock=self.clock,
                                     backend=self.backend)

    async def __aexit__(self, *exc: object) -> None:
        await self.store.__aexit__(None, None, None)

    def events(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.tmp / "buffer.sqlite") as db:
            return list(db.execute("SELECT kind, rule, msg FROM events ORDER BY id"))


def cmd(key, op="set", target="pump_demand", *, ttl=60.0, nonce=None, dev=DEV, **kw) -> bytes:
    return commands.make(key, dev, op, target, exp=T0 / S + ttl, nonce=nonce or os.urandom(16),
                         **kw)


async def test_set_point_change_applies_is_reported_and_survives_restart(tmp_path, backend):
    key, site = backend
    gw = Gw(tmp_path, site)
    async with gw as ctl:
        await ctl.on_cmd(cmd(key, set_key="on", value=3.8))
        assert ctl.rules.conds["pump_demand"].rule.on == 3.8
    kind, rule, msg = gw.events()[-1]
    assert (kind, rule) == ("action", "pump_demand") and msg.startswith("pump_demand.on 3.5 -> 3.8")
    async with gw as ctl:
        assert ctl.rules.conds["pump_demand"].rule.on == 3.8


async def test_replay_is_refused_also_after_a_restart(tmp_path, backend):
    key, site = backend
    gw = Gw(tmp_path, site)
    first = cmd(key, set_key="on", value=3.6)
    async with gw as ctl:
        await ctl.on_cmd(first)
        await ctl.on_cmd(first)
        assert ctl.refused == {"replayed": 1}
    async with gw as ctl:
        gw.clock.advance(30)  # past the refusal-event rate limit
        await ctl.on_cmd(first)
        assert ctl.refused == {"replayed": 1}
    msgs = [m for _, rule, m in gw.events() if rule == "cmd"]
    assert len(msgs) == 2 and all("command refused: replayed" in m for m in msgs)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda k: cmd(k, ttl=-1, set_key="on", value=3.6), "expired"),
    (lambda k: cmd(k, ttl=86400, set_key="on", value=3.6), "too_far"),
    (lambda k: cmd(k, dev="ps-0002", set_key="on", value=3.6), "wrong_device"),
    (lambda k: cmd(Ed25519PrivateKey.generate(), set_key="on", value=3.6), "unknown_key"),
    (lambda k: cmd(k, set_key="on", value=1.0), "invalid"),  # below off: checked first
    (lambda k: cmd(k, set_key="point", value="ps1.inflow"), "invalid"),
    (lambda k: cmd(k, op="override", target="pumps", value="sideways"), "invalid"),
    (lambda k: cmd(k, op="ack", target="flood"), "invalid"),  # not raised
    (lambda k: b"\xd2\x84" + b"\x00" * 10, "malformed"),
])
async def test_refused_commands_change_nothing_and_are_reported(tmp_path, backend, make, reason):
    key, site = backend
    gw = Gw(tmp_path, site)
    async with gw as ctl:
        await ctl.on_cmd(make(key))
        assert ctl.refused == {reason: 1}
        assert ctl.rules.conds["pump_demand"].rule.on == 3.5
        assert ctl.actions.actions["pumps"].mode == "auto"
    (kind, rule, msg), = gw.events()
    assert (kind, rule) == ("action", "cmd") and msg.startswith(f"command refused: {reason}")


async def test_tampered_signature_is_refused(tmp_path, backend):
    key, site = backend
    data = bytearray(cmd(key, set_key="on", value=3.6))
    data[-1] ^= 1
    async with Gw(tmp_path, site) as ctl:
        await ctl.on_cmd(bytes(data))
        assert ctl.refused == {"bad_signature": 1}


async def test_refusals_are_rate_limited(tmp_path, backend):
    key, site = backend
    gw = Gw(tmp_path, site)
    async with gw as ctl:
        for _ in range(5):
            await ctl.on_cmd(cmd(key, ttl=-1, set_key="on", value=3.6))
        gw.clock.advance(11)
        await ctl.on_cmd(cmd(key, ttl=-1, set_key="on", value=3.6))
    msgs = [m for _, _, m in gw.events()]
    assert len(msgs) == 2 and msgs[1].endswith("(+4 more refused)")


async def test_override_and_ack(tmp_path, backend):
    key, site = backend
    gw = Gw(tmp_path, site)
    async with gw as ctl:
        await ctl.on_cmd(cmd(key, op="override", target="pumps", value="off"))
        assert ctl.actions.actions["pumps"].mode == "off"
        from cimedge.edge.model import Reading
        t = ctl.tick([Reading("ps1.level", T0, 4.8)])
        await ctl.commit(t)
        assert "flood" in ctl.active()
        await ctl.on_cmd(cmd(key, op="ack", target="flood"))
        assert ctl.rules.conds["flood"].acked
    async with gw as ctl:
        assert ctl.actions.actions["pumps"].mode == "off", "the override outlives a restart"
        assert ctl.rules.conds["flood"].acked and ctl.active() == ["flood"]
    kinds = [(k, r) for k, r, _ in gw.events()]
    assert kinds == [("action", "pumps"), ("raise", "flood"), ("action", "flood")]


def test_public_key_files(tmp_path):
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes_raw()
    import base64
    (tmp_path / "b64").write_text(base64.b64encode(raw).decode() + "\n")
    assert commands.load_public_key(tmp_path / "b64") == raw
    (tmp_path / "bad").write_text("hello")
    with pytest.raises(config.ConfigError, match="not a PEM public key"):
        commands.load_public_key(tmp_path / "bad")


async def test_operations_keys_roll_over_and_end(tmp_path, backend):
    """Two operations keys are trusted side by side; one past its not_after is refused, as
    are the ingest key (another role) and a key dropped from a replaced backend.json."""
    key, site = backend
    doc = bk.load(tmp_path / "backend.json")
    new, old_end = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ingest = Ed25519PrivateKey.generate()
    bk.write(tmp_path / "backend.json", bk.BackendKeys((
        *doc.keys, bk.entry_for(new, "operations"), bk.entry_for(ingest, "ingest"),
        bk.entry_for(old_end, "operations", not_after=T0 / S - 1))))
    gw = Gw(tmp_path, site)
    async with gw as ctl:
        await ctl.on_cmd(cmd(key, set_key="on", value=3.6))
        await ctl.on_cmd(cmd(new, set_key="on", value=3.7))
        assert ctl.rules.conds["pump_demand"].rule.on == 3.7
        await ctl.on_cmd(cmd(old_end, set_key="on", value=3.8))
        gw.clock.advance(11)
        await ctl.on_cmd(cmd(ingest, set_key="on", value=3.8))
        assert ctl.refused == {"expired_key": 1, "unknown_key": 1}
        bk.write(tmp_path / "backend.json", bk.BackendKeys((bk.entry_for(new, "operations"),)))
        gw.clock.advance(11)
        await ctl.on_cmd(cmd(key, set_key="on", value=3.9))  # dropped: no longer trusted
        await ctl.on_cmd(cmd(new, set_key="on", value=3.9))
        assert ctl.rules.conds["pump_demand"].rule.on == 3.9
    assert ctl.refused == {"expired_key": 1, "unknown_key": 2}


async def test_the_old_backend_key_file_is_still_read_with_a_warning(tmp_path, caplog):
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "backend.pub").write_bytes(pem)
    text = sites.render("pump_station") + '\n[commands]\nbackend_key_file = "backend.pub"\n'
    (tmp_path / "site.toml").write_text(text)
    site = config.load(tmp_path / "site.toml")  # and no backend.json at all
    async with Gw(tmp_path, site) as ctl:
        await ctl.on_cmd(cmd(key, set_key="on", value=3.6))
        assert ctl.rules.conds["pump_demand"].rule.on == 3.6
    assert any("[commands] backend_key_file is deprecated: list the key in "
               f"{tmp_path}/backend.json as an operations key" in r.message
               for r in caplog.records)
