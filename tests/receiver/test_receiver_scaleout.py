"""Scale-out with real processes: `cimedge receiver run` subprocesses sharing one group.

Two receivers on one PostgreSQL store each (dev, seq) once whichever gets it; a receiver
killed with SIGKILL mid-stream loses nothing, because the publisher resends what was not
acked (as a gateway does) and the store refuses to keep anything twice.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rxkit import gateway

from cimedge.cloud_sync.receiver.store import open_store
from cimedge.tools.broker import Mosquitto
from cimedge.tools.fleet import Fleet, Publisher

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"stopped: received (\d+), stored (\d+), duplicates (\d+), rejects (\d+), "
                     r"errors (\d+)")


class ReceiverProcess:
    """One `cimedge receiver run` child; start() returns once it printed its ready line."""

    def __init__(self, broker: Mosquitto, db: str, registry: str, log: Path,
                 *extra: str) -> None:
        self.cmd = [sys.executable, "-m", "cimedge.provisioning.cli", "receiver", "run",
                    "--broker", broker.url, "--db", db, "--registry", registry, *extra]
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.out: list[str] = []

    async def start(self, timeout: float = 15.0) -> None:
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = "{"
        while line.startswith("{"):  # metrics lines may come first
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        assert " ready: " in line, f"receiver did not start: {line!r} {self.log.read_text()}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    async def stop(self) -> tuple[int, ...]:
        """SIGTERM, wait, and return (received, stored, duplicates, rejects, errors)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(self.proc.communicate, None, 20)
        self.out = out.splitlines()
        assert self.proc.returncode == 0, self.log.read_text()
        m = SUMMARY.search(out)
        assert m, out
        return tuple(int(x) for x in m.groups())

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def children() -> Iterator[list[ReceiverProcess]]:
    started: list[ReceiverProcess] = []
    yield started
    for child in started:
        child.close()


def enrolled(tmp_path: Path, n: int, registry: str) -> Fleet:
    """n simulated gateways, enrolled in the registry (a file, or the PostgreSQL store's)."""
    fleet = Fleet(n, seed=tmp_path.name)
    fleet.enroll(registry)
    return fleet


def assert_all_stored_once(db: str, fleet: Fleet, batches: int, readings: int) -> None:
    store = open_store(db, readonly=True)
    try:
        stats = store.stats()
        assert store.message_count() == len(fleet.gateways) * batches
        assert len(store.readings()) == len(fleet.gateways) * batches * readings
        assert store.conflicts() == []
    finally:
        store.close()
    for g in fleet.gateways:  # nothing missing on any device: no gap, the last seq there
        assert (stats[g.dev].last_seq, stats[g.dev].gaps) == (batches, []), g.dev


async def test_two_receivers_on_postgresql_store_each_batch_once(
        broker: Mosquitto, tmp_path: Path, pg_url: str,
        children: list[ReceiverProcess]) -> None:
    registry = pg_url  # the city's layout: registry and readings in one PostgreSQL database
    fleet = enrolled(tmp_path, 10, registry)
    messages = fleet.build(batches=10, readings=10)
    for i in range(2):
        children.append(ReceiverProcess(broker, pg_url, registry, tmp_path / f"rx{i}.log",
                                        "--metrics-every", "0.2"))
    await asyncio.gather(*(c.start() for c in children))
    async with gateway(broker) as gw:
        for m in messages + messages:  # every batch twice, as resends after a lost ack
            await gw.publish(m.dev, "batch", m.payload)
        acks = [await gw.next_ack() for _ in range(2 * len(messages))]
    assert all(a.ok for _, a in acks)
    assert sorted((d, a.seq) for d, a in acks) == sorted(
        [(m.dev, m.seq) for m in messages] * 2)
    (r1, s1, d1, j1, e1), (r2, s2, d2, j2, e2) = [await c.stop() for c in children]
    assert r1 > 0 and r2 > 0, "the broker should deal the shared subscription to both"
    assert (r1 + r2, s1 + s2, d1 + d2) == (2 * len(messages), len(messages), len(messages))
    assert (j1, j2, e1, e2) == (0, 0, 0, 0)
    assert_all_stored_once(pg_url, fleet, 10, 10)
    metrics = [json.loads(line) for c in children for line in c.out if line.startswith("{")]
    assert metrics, "--metrics-every prints JSON lines, and a last one at stop"
    assert set(metrics[-1]) >= {"t", "received", "stored", "duplicates", "rejects", "commits"}
    finals = [[json.loads(line) for line in c.out if line.startswith("{")][-1] for c in children]
    assert sum(m["stored"] for m in finals) == len(messages)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_a_receiver_killed_mid_stream_loses_nothing(
        broker: Mosquitto, tmp_path: Path, store: str, request: pytest.FixtureRequest,
        children: list[ReceiverProcess]) -> None:
    """SQLite: its one receiver is killed and restarted with the same client id (the broker
    hands back its unacked messages). PostgreSQL: one of two is killed; the other carries on
    and the publisher's resends cover what the dead one held."""
    if store == "sqlite":
        db, registry = str(tmp_path / "rx.sqlite"), str(tmp_path / "registry.sqlite")
    else:
        db = registry = str(request.getfixturevalue("pg_url"))
    fleet = enrolled(tmp_path, 20, registry)
    batches, readings = 15, 20
    messages = fleet.build(batches, readings)
    if store == "sqlite":
        children.append(ReceiverProcess(broker, db, registry, tmp_path / "rx0.log",
                                        "--client-id", "rx-a"))
    else:
        children += [ReceiverProcess(broker, db, registry, tmp_path / f"rx{i}.log")
                     for i in range(2)]
    await asyncio.gather(*(c.start() for c in children))
    publisher = Publisher("127.0.0.1", broker.port, ack_timeout=1.0, rate=150)
    run = asyncio.create_task(publisher.run(messages, timeout=60))
    try:
        await asyncio.wait_for(publisher.wait_acked(len(messages) // 3), 30)
        children[0].kill()
        if store == "sqlite":
            restarted = ReceiverProcess(broker, db, registry, tmp_path / "rx0.log",
                                        "--client-id", "rx-a")
            children.append(restarted)
            await restarted.start()
        report = await run
    finally:
        run.cancel()
    assert report.acked == len(messages)
    assert report.nacks == {}
    for child in children[1:]:
        assert (await child.stop())[4] == 0  # no store errors
    assert_all_stored_once(db, fleet, batches, readings)
