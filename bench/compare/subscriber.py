"""The counting subscriber at the broker, for either gateway, and the peer's session-limits answer.

Both gateways are counted the same way: for every PUBLISH the gateway sent (as the broker
hands it to this subscriber, QoS 1, one persistent session across broker restarts), the
payload bytes plus the topic bytes, and every value inside, decoded:

- ours: ``cim/v1/{dev}/batch|event|status``; batches are COSE_Sign1 over a SenML-CBOR
  payload, decoded with ``cloud_sync.cose.parse_sign1`` and ``cloud_sync.senml.decode_payload``
  (the signature is the receiver's business and is not checked here);
- the peer: everything under ``v1/``; values come from ``v1/gateway/telemetry``, JSON
  ``{"device": [{"ts": ms, "values": {"point": value}}]}``. The peer's ``getSessionLimits``
  request is answered here, "no rate limits", as a self-hosted ThingsBoard would; the answer
  is not counted (it is not the gateway's traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiomqtt

from bench.compare.peer import SESSION_LIMITS
from bench.compare.tally import Tally
from cimedge.cloud_sync.cose import parse_sign1
from cimedge.cloud_sync.senml import decode_payload

CLIENT_ID = "cmp-counter"


class Subscriber:
    """Counts one gateway's traffic into ``tally`` until cancelled; survives broker restarts."""

    def __init__(self, port: int, kind: str, dev: str, tally: Tally) -> None:
        self.port, self.kind, self.dev, self.tally = port, kind, dev, tally
        self.ready = asyncio.Event()
        self.errors = 0
        self.session_limit_answers = 0

    def topics(self) -> list[str]:
        return [f"cim/v1/{self.dev}/{k}" for k in ("batch", "event", "status")] \
            if self.kind == "ours" else ["v1/#"]

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=CLIENT_ID,
                                          clean_session=False, timeout=10,
                                          protocol=aiomqtt.ProtocolVersion.V311) as client:
                    for topic in self.topics():
                        await client.subscribe(topic, qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        await self._on_message(client, message)
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.2)

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            return
        if "/rpc/response/" in topic or message.retain:
            return  # our own answer to the peer; a retained copy replayed on (re)subscribe
        self.tally.publish(len(payload) + len(topic.encode()))
        now = time.time()
        try:
            if self.kind == "ours":
                if topic.endswith("/batch"):
                    self._ours(bytes(payload), now)
            elif topic == "v1/gateway/telemetry":
                self._peer(json.loads(payload), now)
            elif topic.startswith("v1/devices/me/rpc/request/"):
                await self._answer(client, topic, json.loads(payload))
        except Exception:  # noqa: BLE001 - a bad message is counted, never fatal to the count
            self.errors += 1

    def _ours(self, data: bytes, now: float) -> None:
        body = decode_payload(parse_sign1(data).payload, "batch")
        add = self.tally.add
        for r in body.records:
            add(r.name.partition(":")[2], r.value, r.t, now)

    def _peer(self, body: dict, now: float) -> None:
        add = self.tally.add
        for device, entries in body.items():
            for entry in entries if isinstance(entries, list) else [entries]:
                t = entry.get("ts", now * 1000) / 1000
                for point, value in entry.get("values", {}).items():
                    add(f"{device}.{point}", value, t, now)

    async def _answer(self, client: aiomqtt.Client, topic: str, request: dict) -> None:
        if request.get("method") != "getSessionLimits":
            return
        rid = topic.rsplit("/", 1)[1]
        await client.publish(f"v1/devices/me/rpc/response/{rid}", json.dumps(SESSION_LIMITS),
                             qos=1)
        self.session_limit_answers += 1


async def start(port: int, kind: str, dev: str, tally: Tally) -> tuple[Subscriber, asyncio.Task]:
    """Start a subscriber and wait until it is subscribed."""
    sub = Subscriber(port, kind, dev, tally)
    task = asyncio.create_task(sub.run(), name=f"subscriber[{kind}]")
    async with asyncio.timeout(15):
        await sub.ready.wait()
    return sub, task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
