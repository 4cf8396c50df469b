"""Receiver against a real Mosquitto: verify, store once, ack after commit, survive anything."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import cbor2
from rxkit import Device, gateway, new_device, running

from cimedge.cloud_sync.ack import Ack
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.service import Receiver, topic_parts
from cimedge.cloud_sync.transport import backoff_delay
from cimedge.cloud_sync.reject import REASONS
from cimedge.tools.broker import Mosquitto


def receiver(broker: Mosquitto, path: Path, registry: Registry, **kw: object) -> Receiver:
    return Receiver("127.0.0.1", broker.port, path, registry, **kw)  # type: ignore[arg-type]


def test_topic_parts_and_backoff() -> None:
    assert topic_parts("cim/v1/ps-0001/batch") == ("ps-0001", "batch")
    assert topic_parts("cim/v1/ps-0001/event") == ("ps-0001", "event")
    for bad in ("cim/v1/PS_01/batch", "cim/v1/ab/batch", "cim/v2/ps-0001/batch",
                "cim/v1/ps-0001/ack", "cim/v1/ps-0001/batch/x", "cim/v1/" + "a" * 65 + "/batch"):
        assert topic_parts(bad) is None, bad
    assert all(0 <= backoff_delay(n) <= 1.5 ** min(10, n) for n in range(1, 30))
    assert all(backoff_delay(n, cap=2.0) <= 2.0 for n in range(1, 30))


async def test_batch_is_acked_only_after_commit(broker: Mosquitto, tmp_path: Path,
                                                registry: Registry, device: Device) -> None:
    db = tmp_path / "rx.db"
    async with running(receiver(broker, db, registry)) as rx, gateway(broker) as gw:
        await gw.publish(device.dev, "batch", device.batch(1))
        assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
        # Another connection sees the commit the moment the ack is out.
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as ro:
            assert ro.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 5
        await gw.publish(device.dev, "event", device.event(2))
        assert await gw.next_ack() == (device.dev, Ack(seq=2, ok=True, err=None))
        stats = await rx.query(lambda s: s.stats())
        assert (stats[device.dev].last_seq, stats[device.dev].gaps) == (2, [])
        assert rx.metrics["received"] == 2
        assert rx.metrics["stored"] == 2
        assert rx.metrics["acks_sent"] == 2


async def test_replayed_batch_is_stored_once_and_acked_again(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    data = device.batch(1)
    async with running(receiver(broker, tmp_path / "rx.db", registry)) as rx, \
            gateway(broker) as gw:
        for _ in range(3):
            await gw.publish(device.dev, "batch", data)
        for _ in range(3):
            assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
        assert await rx.query(lambda s: s.message_count()) == 1
        assert len(await rx.query(lambda s: s.readings())) == 5
        assert (rx.metrics["stored"], rx.metrics["duplicates"]) == (1, 2)


async def test_tampered_byte_is_bad_signature(broker: Mosquitto, tmp_path: Path,
                                              registry: Registry, device: Device) -> None:
    data = bytearray(device.batch(1))
    data[-1] ^= 0x01  # last byte of the signature
    async with running(receiver(broker, tmp_path / "rx.db", registry)) as rx, \
            gateway(broker) as gw:
        await gw.publish(device.dev, "batch", bytes(data))
        dev, ack = await gw.next_ack()
        assert (dev, ack.ok, ack.err) == (device.dev, False, "bad_signature")
        assert ack.seq in (0, 1)
        assert await rx.query(lambda s: s.message_count()) == 0
        assert await rx.query(lambda s: s.rejects()) == {("bad_signature", device.dev): 1}
        await gw.publish(device.dev, "batch", device.batch(1))  # the genuine one still lands
        assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
        assert rx.rejects == {"bad_signature": 1}


async def test_unknown_kid_stores_nothing(broker: Mosquitto, tmp_path: Path,
                                          registry: Registry, device: Device) -> None:
    impostor = new_device(device.dev)  # right device id, key never enrolled
    stranger = new_device("ps-0404")  # device never enrolled: gets no ack at all
    async with running(receiver(broker, tmp_path / "rx.db", registry)) as rx, \
            gateway(broker) as gw:
        await gw.publish(stranger.dev, "batch", stranger.batch(1))
        await gw.publish(device.dev, "batch", impostor.batch(1))
        dev, ack = await gw.next_ack()  # the stranger's would have come first
        assert (dev, ack.ok, ack.err) == (device.dev, False, "unknown_kid")
        await gw.publish(device.dev, "batch", device.batch(2))
        assert await gw.next_ack() == (device.dev, Ack(seq=2, ok=True, err=None))
        assert await rx.query(lambda s: {r.seq for r in s.readings()}) == {2}
        assert rx.rejects == {"unknown_kid": 2}
        assert await rx.query(lambda s: s.rejects()) == {
            ("unknown_kid", device.dev): 1, ("unknown_kid", ""): 1}


async def test_revoked_key_and_seq_conflict(broker: Mosquitto, tmp_path: Path,
                                            registry: Registry, device: Device) -> None:
    async with running(receiver(broker, tmp_path / "rx.db", registry)) as rx, \
            gateway(broker) as gw:
        await gw.publish(device.dev, "batch", device.batch(3))
        assert (await gw.next_ack())[1].ok
        await gw.publish(device.dev, "batch", device.batch(3, base=0.5))
        assert await gw.next_ack() == (device.dev, Ack(seq=3, ok=False, err="seq_conflict"))
        assert await rx.query(lambda s: s.conflicts()) == [(device.dev, 3)]
        registry.revoke(device.dev)
        await gw.publish(device.dev, "batch", device.batch(4))
        _, ack = await gw.next_ack()
        assert (ack.ok, ack.err) == (False, "revoked_kid")
        assert await rx.query(lambda s: s.message_count()) == 1


async def test_garbage_never_stops_the_receiver(broker: Mosquitto, tmp_path: Path,
                                                registry: Registry, device: Device) -> None:
    junk = [b"", b"\xff\x00garbage", b"\x81" * 200 + b"\x00", b"\x00" * 5000,
            cbor2.dumps({"a": 1}), cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])),
            cbor2.dumps(cbor2.CBORTag(18, "x")), b"\x9f\x01\xff"]
    async with running(receiver(broker, tmp_path / "rx.db", registry, max_size=4096)) as rx, \
            gateway(broker) as gw:
        await gw.publish("PS_01", "batch", device.batch(1))  # bad device id in the topic
        await gw.publish("ab", "event", device.batch(1))
        for data in junk:
            await gw.publish(device.dev, "batch", data)
        for _ in junk:
            dev, ack = await gw.next_ack()
            assert (dev, ack.seq, ack.ok) == (device.dev, 0, False)
            assert ack.err in REASONS
        await gw.publish(device.dev, "batch", device.batch(1))
        assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
        assert rx.rejects["bad_topic"] == 2
        assert rx.rejects["too_large"] == 1
        assert sum(rx.rejects.values()) == 2 + len(junk)
        assert rx.metrics["errors"] == 0


async def test_two_receivers_share_a_group_and_store_each_batch_once(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    n = 20
    rx1 = receiver(broker, tmp_path / "rx1.db", registry)
    rx2 = receiver(broker, tmp_path / "rx2.db", registry)
    async with running(rx1), running(rx2), gateway(broker) as gw:
        for seq in range(1, n + 1):
            await gw.publish(device.dev, "batch", device.batch(seq))
        acks = [await gw.next_ack() for _ in range(n)]
        assert sorted(a.seq for _, a in acks) == list(range(1, n + 1))
        assert all(a.ok for _, a in acks)
        seqs1 = await rx1.query(lambda s: {r.seq for r in s.readings()})
        seqs2 = await rx2.query(lambda s: {r.seq for r in s.readings()})
    assert seqs1.isdisjoint(seqs2)
    assert seqs1 | seqs2 == set(range(1, n + 1))
    assert seqs1 and seqs2, "the broker should split a shared subscription"
    assert rx1.metrics["stored"] + rx2.metrics["stored"] == n


async def test_a_receiver_without_client_id_leaves_no_session_behind(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    """Mosquitto would deal half of the group's messages to a resumable offline session."""
    async with running(receiver(broker, tmp_path / "gone.db", registry)):
        pass
    async with running(receiver(broker, tmp_path / "rx.db", registry)) as rx, \
            gateway(broker) as gw:
        for seq in range(1, 7):
            await gw.publish(device.dev, "batch", device.batch(seq))
        assert sorted([(await gw.next_ack())[1].seq for _ in range(6)]) == list(range(1, 7))
        assert rx.metrics["stored"] == 6


async def test_messages_queued_while_receiver_is_down_arrive_after_restart(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    db = tmp_path / "rx.db"
    async with running(receiver(broker, db, registry, client_id="rx-a")):
        pass
    async with gateway(broker) as gw:
        await gw.publish(device.dev, "batch", device.batch(1))
        await gw.publish(device.dev, "event", device.event(2))
        async with running(receiver(broker, db, registry, client_id="rx-a")) as rx:
            assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
            assert await gw.next_ack() == (device.dev, Ack(seq=2, ok=True, err=None))
            assert await rx.query(lambda s: s.message_count()) == 2


async def test_receiver_reconnects_after_broker_restart(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    async with running(receiver(broker, tmp_path / "rx.db", registry)) as rx:
        async with gateway(broker) as gw:
            await gw.publish(device.dev, "batch", device.batch(1))
            assert (await gw.next_ack())[1].ok
        broker.stop()  # sessions may not survive: mosquitto as root cannot write its store here
        broker.start()
        async with gateway(broker) as gw:
            # As a gateway does: resend the same bytes until acked, here once a second,
            # since the receiver subscribes again only after its backoff.
            data = device.batch(2)
            async with asyncio.timeout(15):
                while True:
                    await gw.publish(device.dev, "batch", data)
                    with contextlib.suppress(TimeoutError):
                        ack = await gw.next_ack(timeout=1.0)
                        break
            assert ack == (device.dev, Ack(seq=2, ok=True, err=None))
        assert rx.metrics["reconnects"] >= 1
        assert await rx.query(lambda s: s.message_count()) == 2


class FlakyRegistry:
    """A registry whose database is down for one device: lookups raise."""

    path = None

    def __init__(self, inner: Registry, down: bytes) -> None:
        self.inner, self.down = inner, down

    def lookup(self, kid: bytes) -> object:
        if kid == self.down:
            raise ConnectionError("registry database is down")
        return self.inner.lookup(kid)

    def has_device(self, dev: str) -> bool:
        return self.inner.has_device(dev)

    def close(self) -> None:
        self.inner.close()


async def test_a_registry_outage_is_an_error_not_a_crash(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    other = new_device("ps-0002")
    registry.add_enrollment(other.enrollment())
    flaky = FlakyRegistry(registry, other.kid)
    async with running(Receiver("127.0.0.1", broker.port, tmp_path / "rx.db",
                                flaky)) as rx, gateway(broker) as gw:  # type: ignore[arg-type]
        await gw.publish(other.dev, "batch", other.batch(1))  # no ack: it will be resent
        await gw.publish(device.dev, "batch", device.batch(1))
        assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
        assert rx.metrics["errors"] == 1
        assert await rx.query(lambda s: s.message_count()) == 1


async def test_mqtt_3_1_1_for_the_demos_fallback_broker(
        broker: Mosquitto, tmp_path: Path, registry: Registry, device: Device) -> None:
    """No shared subscription there: one receiver on the plain topics, same checks."""
    rx = receiver(broker, tmp_path / "rx.db", registry, mqtt_version="3.1.1")
    async with running(rx), gateway(broker) as gw:
        await gw.publish(device.dev, "batch", device.batch(1))
        assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=True, err=None))
        await gw.publish(device.dev, "batch", device.batch(1, base=0.5))
        assert await gw.next_ack() == (device.dev, Ack(seq=1, ok=False, err="seq_conflict"))
    assert rx.metrics["stored"] == 1
