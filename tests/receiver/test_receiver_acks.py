"""The receiver's acks per contract (DESIGN 4a): signed with the ingest key for v2, plain for v1.

v1 and v2 devices in one registry, a real Mosquitto; each ack is checked the way a v2
gateway checks it (AckCheck against a backend.json), so the two sides agree byte for byte.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rxkit import Device, new_device, running

from cimedge.cloud_sync import backend_keys as bk
from cimedge.cloud_sync.ack import Ack, decode_ack, encode_ack
from cimedge.cloud_sync.ackcheck import AckCheck, AckRefused
from cimedge.cloud_sync.cose import parse_sign1
from cimedge.cloud_sync.receiver.ingest import IngestKey, IngestKeys
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.tools.broker import Mosquitto


def prefix(message: bytes) -> bytes:
    return parse_sign1(message).signature[:8]


class Acks:
    """Every ack on the broker, as raw bytes, per device."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client, self._it = client, aiter(client.messages)

    async def next(self, timeout: float = 10.0) -> tuple[str, bytes]:
        async with asyncio.timeout(timeout):
            m = await anext(self._it)
        return m.topic.value.split("/")[2], bytes(m.payload)  # type: ignore[arg-type]


@pytest.fixture
def ingest(tmp_path: Path) -> Ed25519PrivateKey:
    key = bk.write_private_key(tmp_path / "ingest.key")
    bk.write(tmp_path / "backend.json", bk.BackendKeys((bk.entry_for(key, "ingest"),)))
    return key


async def test_v2_acks_are_signed_and_v1_acks_are_not(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device,
        ingest: Ed25519PrivateKey) -> None:
    v2 = new_device("ps-0002")
    registry.add_enrollment(v2.enrollment())
    keys = IngestKeys.load([tmp_path / "ingest.key"], tmp_path / "backend.json")
    check = AckCheck(v2.dev, bk.BackendFile(tmp_path / "backend.json"))
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry, ingest=keys)
    async with running(rx), aiomqtt.Client("127.0.0.1", broker.port,
                                           protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe("cim/v1/+/ack", qos=1)
        acks = Acks(c)
        first = v2.batch2(1)
        await c.publish(f"cim/v1/{v2.dev}/batch", first, qos=1)
        dev, data = await acks.next()
        ack = check.check(data)
        assert (dev, ack.seq, ack.ok, ack.prefix, ack.err) == (v2.dev, 1, True, prefix(first),
                                                               None)
        await c.publish(f"cim/v1/{device.dev}/batch", device.batch(1), qos=1)  # a v1 device
        assert (await acks.next()) == (device.dev, encode_ack(1, True))
        await c.publish(f"cim/v1/{v2.dev}/batch", first, qos=1)  # a resend: acked again, signed
        ack = check.check((await acks.next())[1])
        assert (ack.seq, ack.ok, ack.prefix) == (1, True, prefix(first))
        # refused, but readable: a signed nack naming the message
        forged = v2.sign2({0: 2, 1: 2, 2: "not a pack"})
        await c.publish(f"cim/v1/{v2.dev}/batch", forged, qos=1)
        ack = check.check((await acks.next())[1])
        assert (ack.seq, ack.ok, ack.prefix, ack.err) == (2, False, prefix(forged),
                                                          "bad_field")
        # not even COSE: the device spoke v2 before, so its nack is signed too, naming nothing
        await c.publish(f"cim/v1/{v2.dev}/batch", b"\x01", qos=1)
        ack = check.check((await acks.next())[1])
        assert (ack.seq, ack.ok, ack.prefix, ack.err) == (0, False, b"", "malformed_cose")
        # and a signed v2 ack is no good to the v1 device, nor to another v2 device
        with pytest.raises(AckRefused) as e:
            AckCheck("ps-0003", check.keys).check(data)
        assert e.value.kind == "bad_signature"
    assert rx.metrics["unsigned_v2_acks"] == 0


async def test_without_an_ingest_key_v2_acks_go_unsigned_and_are_counted(
        broker: Mosquitto, tmp_path: Path, registry: Registry, ingest: Ed25519PrivateKey) -> None:
    v2 = new_device("ps-0002")
    registry.add_enrollment(v2.enrollment())
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry)
    async with running(rx), aiomqtt.Client("127.0.0.1", broker.port,
                                           protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(f"cim/v1/{v2.dev}/ack", qos=1)
        await c.publish(f"cim/v1/{v2.dev}/batch", v2.batch2(1), qos=1)
        _, data = await Acks(c).next()
    assert decode_ack(data) == Ack(seq=1, ok=True)
    with pytest.raises(AckRefused) as e:  # which a v2 gateway ignores, keeping its data
        AckCheck(v2.dev, bk.BackendFile(tmp_path / "backend.json")).check(data)
    assert e.value.kind == "unsigned"
    assert rx.metrics["unsigned_v2_acks"] == 1


def test_a_receiver_signs_with_the_first_key_still_valid(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    now = [1000.0]
    keys = IngestKeys([IngestKey(old, not_after=1500.0), IngestKey(new)], clock=lambda: now[0])
    assert keys.current().key is old
    now[0] = 1501.0
    assert keys.current().key is new
    ended = IngestKeys([IngestKey(old, not_after=1500.0)], clock=lambda: now[0])
    assert ended.current().key is old  # nothing better: gateways refuse it, keeping their data


def test_an_ingest_key_must_be_listed_in_backend_json(tmp_path: Path,
                                                      ingest: Ed25519PrivateKey) -> None:
    bk.write_private_key(tmp_path / "other.key")
    with pytest.raises(bk.BackendFileError) as e:
        IngestKeys.load([tmp_path / "other.key"], tmp_path / "backend.json")
    kid = bk.entry_for(bk.load_private_key(tmp_path / "other.key"), "ingest").kid.hex()
    assert str(e.value) == (f"{tmp_path}/other.key: its kid {kid} is not an ingest key of "
                            f"{tmp_path}/backend.json: gateways would drop every ack")
    bk.write(tmp_path / "backend.json", bk.BackendKeys((
        bk.entry_for(ingest, "ingest", not_after=time.time() + 60),)))
    loaded = IngestKeys.load([tmp_path / "ingest.key"], tmp_path / "backend.json")
    assert loaded.current().not_after is not None
