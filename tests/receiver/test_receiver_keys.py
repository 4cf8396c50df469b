"""Key rotation, revocation and expiry, done with the CLI while a receiver runs on a real broker.

Rotation and revocation run over both registries: a SQLite file, and PostgreSQL (where the
receiver caches keys and drops its cache on the registry's NOTIFY).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rxkit import Device, gateway, new_device, running

from cimedge.cloud_sync.ack import Ack
from cimedge.cloud_sync.receiver.registry import Registry, open_registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.provisioning.cli import main as cimedge
from cimedge.tools.broker import Mosquitto


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_file(request: pytest.FixtureRequest, tmp_path: Path, device: Device) -> str:
    """A registry holding `device`, made with the CLI: a SQLite file or a PostgreSQL URL."""
    if request.param == "sqlite":
        target = str(tmp_path / "registry.sqlite")
    else:
        target = str(request.getfixturevalue("pg_url"))
    enrollment = tmp_path / "enrollment.json"
    enrollment.write_text(json.dumps(device.enrollment()))
    assert cimedge(["registry", "add", str(enrollment), "--registry", target]) == 0
    return target


def ok(dev: Device, seq: int) -> tuple[str, Ack]:
    return dev.dev, Ack(seq=seq, ok=True, err=None)


def refused(dev: Device, seq: int, reason: str) -> tuple[str, Ack]:
    return dev.dev, Ack(seq=seq, ok=False, err=reason)


async def test_rotation_window_two_keys_are_valid_then_only_the_new_one(
        broker: Mosquitto, tmp_path: Path, registry_file: str, device: Device,
        capsys: pytest.CaptureFixture[str]) -> None:
    new = Device(device.dev, new_device().key)  # the same gateway's next key
    (tmp_path / "new.json").write_text(json.dumps(new.enrollment()))
    registry = open_registry(registry_file, readonly=True)  # as `cimedge receiver run` opens it
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry)
    async with running(rx), gateway(broker) as gw:
        for seq in (1, 2):
            await gw.publish(device.dev, "batch", device.batch(seq))
            assert await gw.next_ack() == ok(device, seq)
        capsys.readouterr()
        # The gateway switched keys after signing seq 4; seq 3 and 4 are still in its buffer.
        assert cimedge(["registry", "rotate", str(tmp_path / "new.json"), "--after-seq", "4",
                        "--registry", str(registry_file)]) == 0
        assert capsys.readouterr().out == (f"{device.dev}: new key {new.kid.hex()} active; "
                                           f"retired {device.kid.hex()} after seq 4\n")
        await gw.publish(device.dev, "batch", new.batch(5))   # the new key, before the backlog
        assert await gw.next_ack() == ok(device, 5)
        for seq in (3, 4):                                     # the old key's backlog lands
            await gw.publish(device.dev, "batch", device.batch(seq))
            assert await gw.next_ack() == ok(device, seq)
        await gw.publish(device.dev, "batch", device.batch(6))  # old key past its seq
        assert await gw.next_ack() == refused(device, 6, "retired_kid")
        await gw.publish(device.dev, "batch", new.batch(6))
        assert await gw.next_ack() == ok(device, 6)
        stats = await rx.query(lambda s: s.stats())
    assert (stats[device.dev].last_seq, stats[device.dev].gaps) == (6, [])
    assert stats[device.dev].rejects == {"retired_kid": 1}
    registry.close()
    assert cimedge(["registry", "list", "--json", "--registry", str(registry_file)]) == 0
    keys = {k["kid"]: k for k in json.loads(capsys.readouterr().out)}
    assert keys[device.kid.hex()]["state"] == "retired"
    assert keys[device.kid.hex()]["retired_after_seq"] == 4
    assert keys[new.kid.hex()]["state"] == "active"


async def test_revocation_refuses_from_that_instant(
        broker: Mosquitto, tmp_path: Path, registry_file: str, device: Device,
        capsys: pytest.CaptureFixture[str]) -> None:
    registry = open_registry(registry_file, readonly=True)
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry)
    async with running(rx), gateway(broker) as gw:
        await gw.publish(device.dev, "batch", device.batch(1))
        assert await gw.next_ack() == ok(device, 1)
        assert cimedge(["registry", "revoke", device.kid.hex(),
                        "--registry", str(registry_file)]) == 0
        assert capsys.readouterr().out == f"revoked 1 key of {device.kid.hex()}\n"
        # The very next message is refused, a resend of an already stored one included.
        await gw.publish(device.dev, "batch", device.batch(2))
        assert await gw.next_ack() == refused(device, 0, "revoked_kid")
        await gw.publish(device.dev, "batch", device.batch(1))
        assert await gw.next_ack() == refused(device, 0, "revoked_kid")
        assert await rx.query(lambda s: s.message_count()) == 1  # what was acked stays
    registry.close()
    assert cimedge(["registry", "revoke", device.dev, "--registry", str(registry_file)]) == 0
    assert capsys.readouterr().out == f"{device.dev}: already revoked\n"


async def test_an_expired_key_is_refused_from_not_after(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    short = Device(device.dev, new_device().key)
    registry.add_enrollment(short.enrollment() | {"not_after": "2030-01-01T00:00:00Z"})
    not_after = 1893456000.0
    now = [not_after - 1]
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry,
                  clock=lambda: now[0])
    async with running(rx), gateway(broker) as gw:
        await gw.publish(device.dev, "batch", short.batch(1))
        assert await gw.next_ack() == ok(device, 1)
        now[0] = not_after  # valid up to and including not_after
        await gw.publish(device.dev, "batch", short.batch(2))
        assert await gw.next_ack() == ok(device, 2)
        now[0] = not_after + 0.001
        await gw.publish(device.dev, "batch", short.batch(3))
        assert await gw.next_ack() == refused(device, 0, "expired_kid")
        await gw.publish(device.dev, "batch", device.batch(3))  # its other key still works
        assert await gw.next_ack() == ok(device, 3)
