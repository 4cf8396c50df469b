"""Every DESIGN.md section 5 rejection over a real broker: counted reason, ok:false ack, no row."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cbor2
from rxkit import Device, gateway, new_device, running

from cimedge.cloud_sync.ack import Ack
from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.inflate import deflate
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.cloud_sync.reject import REASONS
from cimedge.tools.broker import Mosquitto

MAX_SIZE = 4096


def flipped(data: bytes) -> bytes:
    out = bytearray(data)
    out[-1] ^= 1  # the last byte of the signature
    return bytes(out)


def retag(data: bytes, unprotected: object = None, tag: bool = True) -> bytes:
    """The same COSE_Sign1 with another unprotected header, or without its tag."""
    protected, _, payload, signature = cbor2.loads(data).value
    msg = [protected, unprotected if unprotected is not None else {}, payload, signature]
    return dumps_det(cbor2.CBORTag(18, msg) if tag else msg)


def cases(dev: Device, revoked: Device, retired: Device, expired: Device,
          stranger: Device) -> list[tuple[str, bytes, str, int]]:
    """(what, message on dev's batch topic, reason, seq in the ack) for every reason."""
    return [
        ("over the size limit", dev.batch(20, n=300), "too_large", 0),
        ("not CBOR", b"\xff\x00garbage", "malformed_cbor", 0),
        ("trailing bytes", dev.batch(20) + b"\x00", "malformed_cbor", 0),
        ("nested COSE header", retag(dev.batch(20), {5: [[1]]}), "too_deep", 0),
        ("nested payload", dev.sign(dev.payload(20, recs=[{2: [[1]]}])), "too_deep", 0),
        ("COSE without tag 18", retag(dev.batch(20), tag=False), "malformed_cose", 0),
        ("key never enrolled", stranger.batch(20), "unknown_kid", 0),
        ("revoked key", revoked.batch(20), "revoked_kid", 0),
        ("expired key", expired.batch(20), "expired_kid", 0),
        ("retired key past its seq", retired.batch(11), "retired_kid", 11),
        ("tampered signature", flipped(dev.batch(20)), "bad_signature", 0),
        ("payload not a map", dev.sign([1, 2]), "malformed_payload", 0),
        ("v 2", dev.sign(dev.payload(21, v=2)), "bad_version", 21),
        ("dev not the topic's", dev.sign(dev.payload(22, dev="ps-0999")), "dev_mismatch", 22),
        ("unknown SenML label", dev.sign(dev.payload(23, recs=[{-2: f"{dev.dev}:x", -3: 2e9,
                                                                   2: 1, 5: 1}])),
         "bad_field", 23),
        ("relative time", dev.sign(dev.payload(24, recs=[{-2: f"{dev.dev}:x", -3: 10, 2: 1}])),
         "relative_time", 24),
        ("same seq, other bytes", dev.batch(3, base=0.5), "seq_conflict", 3),
        # Contract v2: about 2 KB of DEFLATE that would inflate to 2 MiB.
        ("v2 pack inflating past 1 MiB", dev.sign2({0: 2, 1: 25, 3: deflate(bytes(2 << 20))}),
         "inflate_limit", 25),
    ]


async def test_every_rejection_is_counted_acked_and_stores_nothing(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    revoked, retired, expired = (new_device(device.dev) for _ in range(3))
    registry.add_enrollments([(revoked.enrollment(), "t"), (retired.enrollment(), "t"),
                              (expired.enrollment() | {"not_after": "2020-01-01T00:00:00Z"},
                               "t")])
    registry.revoke(revoked.kid)
    registry.rotate(device.enrollment(), after_seq=10)  # retires `retired` (and `expired`)
    table = cases(device, revoked, retired, expired, new_device(device.dev))
    assert {reason for _, _, reason, _ in table} == set(REASONS), "a reason is not covered"
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry, max_size=MAX_SIZE)
    async with running(rx), gateway(broker) as gw:
        await gw.publish(device.dev, "batch", device.batch(3))
        assert await gw.next_ack() == (device.dev, Ack(seq=3, ok=True, err=None))
        await gw.publish(device.dev, "batch", retired.batch(10))  # its backlog still lands
        assert await gw.next_ack() == (device.dev, Ack(seq=10, ok=True, err=None))
        for what, data, reason, seq in table:
            await gw.publish(device.dev, "batch", data)
            assert await gw.next_ack() == (device.dev, Ack(seq, False, reason)), what
        assert await rx.query(lambda s: s.message_count()) == 2
        counted = await rx.query(lambda s: s.rejects())
        conflicts = await rx.query(lambda s: s.conflicts())
    expected = Counter(reason for _, _, reason, _ in table)
    assert rx.rejects == expected
    assert rx.metrics["rejects"] == expected
    assert counted == {(reason, device.dev): n for reason, n in expected.items()}
    assert conflicts == [(device.dev, 3)]
    assert (rx.metrics["stored"], rx.metrics["errors"]) == (2, 0)


async def test_an_unknown_device_is_counted_but_never_answered(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    stranger = new_device("ps-0404")
    async with running(Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry)) as rx, \
            gateway(broker) as gw:
        await gw.publish(stranger.dev, "batch", stranger.batch(1))
        await gw.publish(stranger.dev, "batch", b"\xff")
        await gw.publish(device.dev, "batch", device.batch(1))  # acks come in order
        assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
        assert await rx.query(lambda s: s.rejects()) == {("unknown_kid", ""): 1,
                                                         ("malformed_cbor", ""): 1}


async def test_a_replay_is_never_stored_twice_even_across_restarts(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    sent = {seq: device.batch(seq) for seq in range(1, 6)}
    db = tmp_path / "rx.db"
    async with running(Receiver("127.0.0.1", broker.port, db, registry)), \
            gateway(broker) as gw:
        for data in sent.values():
            await gw.publish(device.dev, "batch", data)
        assert sorted([(await gw.next_ack())[1].seq for _ in sent]) == list(sent)
    # A captured old batch, replayed later to a fresh receiver process on the same store.
    async with running(Receiver("127.0.0.1", broker.port, db, registry)) as rx, \
            gateway(broker) as gw:
        for seq in (2, 1, 5, 2):
            await gw.publish(device.dev, "batch", sent[seq])
            assert await gw.next_ack() == (device.dev, Ack(seq=seq, ok=True, err=None))
        assert await rx.query(lambda s: s.message_count()) == 5
        assert len(await rx.query(lambda s: s.readings())) == 25
        assert (rx.metrics["stored"], rx.metrics["duplicates"]) == (0, 4)


async def test_group_commit_acks_every_message_of_a_burst_after_one_commit(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    n = 60
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry, max_group=64)
    async with running(rx), gateway(broker) as gw:
        for seq in range(1, n + 1):
            await gw.publish(device.dev, "batch", device.batch(seq))
        await gw.publish(device.dev, "batch", b"junk")
        acks = [await gw.next_ack() for _ in range(n + 1)]
        assert sorted(a.seq for _, a in acks if a.ok) == list(range(1, n + 1))
        assert [a.err for _, a in acks if not a.ok] == ["malformed_cbor"]
        assert await rx.query(lambda s: s.message_count()) == n
    assert rx.metrics["commits"] < n, "a burst should share transactions"


async def test_a_byte_budget_holds_verification_back_until_commits_free_it(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    n = 12
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry, max_queued_bytes=1)
    async with running(rx), gateway(broker) as gw:
        for seq in range(1, n + 1):
            await gw.publish(device.dev, "batch", device.batch(seq))
        assert sorted([(await gw.next_ack())[1].seq for _ in range(n)]) == list(range(1, n + 1))
    assert rx.metrics["commits"] == n  # one verified message at a time: none waited queued
