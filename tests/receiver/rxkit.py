"""Receiver test kit: enrolled Ed25519 devices and signed messages made by the real codecs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiomqtt

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cimedge.cloud_sync.ack import Ack, decode_ack
from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync import payload2
from cimedge.cloud_sync.cose import aad, kid_for, sign1
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.cloud_sync.senml import batch_payload, encode_pack, event_payload
from cimedge.edge.model import Event, Quality, Reading
from cimedge.tools.broker import Mosquitto

T0 = time.time() - 600  # readings ten minutes old, as a backlog would be


@dataclass
class Device:
    """A gateway identity: device id and signing key, as provisioning would create it."""

    dev: str
    key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def kid(self) -> bytes:
        return kid_for(self.public_key)

    def enrollment(self) -> dict[str, object]:
        """The DESIGN.md section 5 enrollment record for this identity."""
        return {"v": 1, "device_id": self.dev, "site_type": "pump_station",
                "kid": self.kid.hex(), "public_key": base64.b64encode(self.public_key).decode(),
                "created": "2025-03-01T08:00:00Z", "location": "Pump station 1"}

    def batch(self, seq: int, n: int = 3, base: float = 0.0) -> bytes:
        """A signed batch of n readings: numbers, one bool, one comm failure."""
        t = T0 + seq + base
        readings = [Reading(f"ps01.level{i}", int((t + i / 10) * 1e9), 1.5 * i) for i in range(n)]
        readings += [Reading("ps01.pump", int(t * 1e9), True),
                     Reading("ps01.flow", int(t * 1e9), None, Quality.COMM)]
        recs = encode_pack(self.dev, readings, {"ps01.level0": "m"})
        return sign1(batch_payload(self.dev, seq, t + 1, recs), self.key)

    def sign(self, payload: object) -> bytes:
        """Any payload, deterministically encoded and signed with this device's key."""
        return sign1(dumps_det(payload), self.key)

    def batch2(self, seq: int, n: int = 3, base: float = 0.0) -> bytes:
        """batch() in contract v2: integer keys, "q_", packz when smaller, AAD-bound."""
        t = T0 + seq + base
        readings = [Reading(f"ps01.level{i}", int((t + i / 10) * 1e9), 1.5 * i) for i in range(n)]
        readings += [Reading("ps01.pump", int(t * 1e9), True),
                     Reading("ps01.flow", int(t * 1e9), None, Quality.COMM)]
        recs = encode_pack(self.dev, readings, {"ps01.level0": "m"}, contract=2)
        return sign1(payload2.batch_payload(seq, recs), self.key,
                     external_aad=aad("batch", self.dev))

    def event2(self, seq: int) -> bytes:
        """event() in contract v2."""
        t = T0 + seq
        evt = [Event(int(t * 1e9), "ps01.level0", "raise", "high_level", "level high", 4.2)]
        return sign1(payload2.event_payload(seq, evt), self.key,
                     external_aad=aad("event", self.dev))

    def sign2(self, payload: object, kind: str = "batch") -> bytes:
        """Any payload signed as a contract-v2 message of this device and kind."""
        return sign1(dumps_det(payload), self.key, external_aad=aad(kind, self.dev))

    def payload(self, seq: int, **changes: object) -> dict[str, object]:
        """A valid batch payload map, with changes, for crafting bad ones."""
        t = T0 + seq
        obj: dict[str, object] = {"v": 1, "dev": self.dev, "seq": seq, "ts": t,
                                  "recs": [{-2: f"{self.dev}:ps01.level0", -3: t, 2: 1.5}]}
        return obj | changes

    def event(self, seq: int) -> bytes:
        """A signed event message with one alarm raise."""
        t = T0 + seq
        evt = [Event(int(t * 1e9), "ps01.level0", "raise", "high_level", "level high", 4.2)]
        return sign1(event_payload(self.dev, seq, t + 1, evt), self.key)


def new_device(dev: str = "ps-0001") -> Device:
    return Device(dev, Ed25519PrivateKey.generate())


class Gateway:
    """A test gateway: publishes signed messages and reads every device's acks in order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self._messages = aiter(client.messages)

    async def publish(self, dev: str, kind: str, data: bytes) -> None:
        await self.client.publish(f"cim/v1/{dev}/{kind}", data, qos=1)

    async def next_ack(self, timeout: float = 10.0) -> tuple[str, Ack]:
        async with asyncio.timeout(timeout):
            msg = await anext(self._messages)
        return msg.topic.value.split("/")[2], decode_ack(msg.payload)


@contextlib.asynccontextmanager
async def gateway(broker: Mosquitto) -> AsyncIterator[Gateway]:
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("cim/v1/+/ack", qos=1)
        yield Gateway(client)


@contextlib.asynccontextmanager
async def running(rx: Receiver) -> AsyncIterator[Receiver]:
    """Run rx as a task until it is subscribed; cancel it and wait for it on the way out."""
    task = asyncio.create_task(rx.run(), name="receiver")
    ready = asyncio.create_task(rx.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=10,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # run() ended: show why
        assert ready in done, "receiver did not subscribe within 10 s"
        yield rx
    finally:
        ready.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
