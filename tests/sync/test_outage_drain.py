"""After an outage the backlog drains in order and the newest data is not starved behind it.

Real parts: mosquitto, the store on disk, the uplink and transport. The far end is a slow
test receiver that acks each message 150 ms after it arrives, so draining the backlog
takes seconds while new readings keep arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync.ack import encode_ack
from cimedge.cloud_sync.cose import parse_sign1
from cimedge.cloud_sync.senml import decode_payload
from cimedge.cloud_sync.transport import Transport
from cimedge.cloud_sync.uplink import Uplink
from cimedge.edge.model import Reading
from cimedge.edge.store import Store

DEV = "outage-test-01"


async def slow_receiver(port: int, arrivals: list, stop: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(f"cim/v1/{DEV}/batch", qos=1)
        stop.set()  # subscribed
        async for m in c.messages:
            p = decode_payload(parse_sign1(bytes(m.payload)).payload, "batch")
            ts = [r.t for r in p.records]
            arrivals.append((p.seq, min(ts), max(ts)))
            await asyncio.sleep(0.15)
            await c.publish(f"cim/v1/{DEV}/ack", encode_ack(p.seq, True), qos=1)


async def test_backlog_drains_in_order_and_live_data_gets_through(tmp_path, broker):
    t0 = time.time_ns() - 3600 * 10**9
    async with Store(tmp_path / "b.sqlite") as store:
        for t in range(300):  # an hour-old backlog: 300 ticks of 20 points
            await store.append([Reading(f"d.p{i}", t0 + t * 10**9, float(t)) for i in range(20)])
        arrivals: list = []
        subscribed = asyncio.Event()
        rx = asyncio.create_task(slow_receiver(broker.port, arrivals, subscribed))
        await subscribed.wait()
        uplink = Uplink(store, DEV, Ed25519PrivateKey.generate(), {}, batch_max=200,
                        flush_interval=0.2, ack_timeout=30, max_inflight=2)
        transport = Transport(broker.url, DEV, uplink.on_ack)
        tasks = [asyncio.create_task(transport.run()), asyncio.create_task(uplink.run(transport))]
        live_from = time.time()
        try:
            for t in range(60):  # live data: a tick every 50 ms while the backlog drains
                await store.append([Reading(f"d.p{i}", time.time_ns(), float(t))
                                    for i in range(20)])
                await asyncio.sleep(0.05)
            async with asyncio.timeout(60):
                while (await store.depth()).readings:
                    await asyncio.sleep(0.05)
        finally:
            for task in (*tasks, rx):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, rx, return_exceptions=True)
    backlog = [a for a in arrivals if a[2] < live_from]
    live = [a for a in arrivals if a[1] >= live_from]
    assert sum(1 for _ in backlog) == 300 * 20 // 200, "the backlog went in full batches"
    assert [a[1] for a in backlog] == sorted(a[1] for a in backlog), "backlog oldest first"
    last_backlog = max(i for i, a in enumerate(arrivals) if a[2] < live_from)
    first_live = min(i for i, a in enumerate(arrivals) if a[1] >= live_from)
    assert first_live < last_backlog, "live data arrived while the backlog was still draining"
    assert uplink.counters["live"] >= 1
    assert live, "live readings were delivered"
