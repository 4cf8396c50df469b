"""The gateway's MQTT connection sends small packets at once (TCP_NODELAY) on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from cimedge.cloud_sync.transport import Transport


async def _ignore(_: bytes) -> None:
    return None


async def test_the_broker_connection_has_nagle_off(broker) -> None:  # noqa: ANN001
    transport = Transport(broker.url, "nodelay-test-01", _ignore)
    task = asyncio.create_task(transport.run())
    try:
        async with asyncio.timeout(20):
            await transport.up.wait()
        # aiomqtt keeps paho's client; its socket is the one connected to the broker.
        sock = transport._client._client.socket()  # type: ignore[union-attr]  # noqa: SLF001
        assert sock.getpeername()[1] == broker.port
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
