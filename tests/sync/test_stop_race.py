"""The MQTT links stop when a stop lands in the loop step of the broker's answer.

aiomqtt waits for CONNACK, SUBACK and PUBACK with ``asyncio.wait_for``, which on Python 3.11
hands back the answer instead of the cancellation when both arrive together
(cimedge/stop.py). ``tests/same_step.py`` makes them arrive together every time.
"""

from __future__ import annotations

import asyncio

import pytest

from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.cloud_sync.transport import Transport
from tests.same_step import SameStep, stop

ANSWERS = ["on_connect", "on_subscribe", "on_publish"]


async def _ignore(_: bytes) -> None:
    return None


@pytest.mark.parametrize("answer", ANSWERS)
async def test_the_gateway_link_stops_when_a_stop_lands_with_an_answer_while_connecting(
        broker, monkeypatch, answer) -> None:  # noqa: ANN001
    race = SameStep().mqtt(monkeypatch, answer)
    transport = Transport(broker.url, "race-test-01", _ignore)
    run = asyncio.create_task(transport.run(), name="mqtt")
    race.arm(run)
    try:
        done, _ = await asyncio.wait({run}, timeout=30)
        assert race.fired == 1
        assert run in done and run.cancelled()
        assert not transport.up.is_set()
    finally:
        await stop(run)


async def test_a_publish_cancelled_as_its_puback_arrives_ends_cancelled(
        broker, monkeypatch) -> None:  # noqa: ANN001
    race = SameStep().mqtt(monkeypatch, "on_publish")
    transport = Transport(broker.url, "race-test-02", _ignore)
    run = asyncio.create_task(transport.run(), name="mqtt")
    try:
        async with asyncio.timeout(30):
            await transport.up.wait()
        publish = asyncio.create_task(transport.publish("batch", b"\xa0"), name="publish")
        race.arm(publish)
        done, _ = await asyncio.wait({publish}, timeout=30)
        assert race.fired == 1
        assert publish in done and publish.cancelled()
        assert not run.done()  # the link itself goes on
    finally:
        await stop(run)


@pytest.mark.parametrize("answer", ANSWERS[:2])
async def test_the_receiver_stops_when_a_stop_lands_with_an_answer_while_connecting(
        broker, monkeypatch, tmp_path, answer) -> None:  # noqa: ANN001
    race = SameStep().mqtt(monkeypatch, answer)
    registry = Registry(tmp_path / "registry.db")
    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.sqlite", registry)
    run = asyncio.create_task(rx.run(), name="receiver")
    race.arm(run)
    try:
        done, _ = await asyncio.wait({run}, timeout=30)
        assert race.fired == 1
        assert run in done and run.cancelled()
        assert not rx.ready.is_set()
    finally:
        await stop(run)
        registry.close()
