"""A fleet of simulated gateways: own keys and seqs, realistic signed batches, gateway-like resends.

Each gateway has a site type from DESIGN.md section 7 with that site's points, an Ed25519
key derived from the fleet's seed (simulator keys, never for real devices), and a seq that
starts at `first_seq`. Batches are made with the gateway's own encoder and signer
(cloud_sync.senml and cloud_sync.cose), so the receiver sees what real gateways send.

The Publisher sends them as gateways do: QoS 1, at most `window` unacked batches per device,
each unacked batch resent byte for byte after `ack_timeout`, until every one is acked.

    python -m cimedge.tools.fleet --broker mqtt://127.0.0.1:1883 --registry registry.sqlite \\
        --gateways 1000 --readings 100 --batches 5 --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import random
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync.ack import decode_ack
from cimedge.cloud_sync.cose import kid_for, sign1
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.senml import batch_payload, encode_pack
from cimedge.edge.model import Quality, Reading

# (point, unit, kind, low, high): kind "f" float in [low, high] as a random walk, "b" bool
SITES: dict[str, tuple[str, list[tuple[str, str, str, float, float]]]] = {
    "lamp_pole": ("lp", [
        ("lamp.on", "", "b", 0, 1), ("lamp.dim", "%", "f", 0, 100),
        ("lamp.current", "A", "f", 0, 2.5), ("lamp.power", "W", "f", 0, 250),
        ("pole.tilt", "deg", "f", 0, 3), ("cabinet.door", "", "b", 0, 1),
        ("env.pm25", "ug/m3", "f", 2, 180), ("env.noise", "dB", "f", 35, 90),
        ("env.temp", "Cel", "f", -10, 40), ("env.rh", "%RH", "f", 10, 100)]),
    "roadside_unit": ("ru", [
        ("cab.temp", "Cel", "f", -10, 65), ("cab.rh", "%RH", "f", 10, 95),
        ("power.voltage", "V", "f", 210, 240), ("power.current", "A", "f", 0.2, 6),
        ("unit.cpu", "%", "f", 1, 100), ("link.up", "", "b", 0, 1), ("fan.on", "", "b", 0, 1)]),
    "pump_station": ("ps", [
        ("well.level", "m", "f", 0.3, 4.5), ("flow", "m3/h", "f", 0, 400),
        ("pressure", "bar", "f", 0, 6), ("pump1.run", "", "b", 0, 1),
        ("pump1.current", "A", "f", 0, 45), ("pump2.run", "", "b", 0, 1),
        ("pump2.current", "A", "f", 0, 45), ("wq.ph", "pH", "f", 6, 9),
        ("wq.turbidity", "NTU", "f", 0, 50), ("flood.level", "m", "f", 0, 0.6),
        ("manhole.disp", "mm", "f", 0, 20), ("gas.h2s", "ppm", "f", 0, 15)]),
    "utility_tunnel": ("ut", [
        ("settlement", "mm", "f", 0, 12), ("temp", "Cel", "f", 5, 35),
        ("rh", "%RH", "f", 30, 100), ("gas.ch4", "%LEL", "f", 0, 25),
        ("gas.o2", "%", "f", 18, 21), ("gas.h2s", "ppm", "f", 0, 15),
        ("water.ingress", "", "b", 0, 1), ("vent.on", "", "b", 0, 1),
        ("sump.run", "", "b", 0, 1)]),
}


@dataclass(frozen=True)
class Message:
    """One signed batch as a gateway would publish it."""

    dev: str
    seq: int
    payload: bytes
    readings: int

    @property
    def topic(self) -> str:
        return f"cim/v1/{self.dev}/batch"


@dataclass
class SimGateway:
    """One simulated gateway: identity, key, points, their last values, and its seq."""

    dev: str
    site_type: str
    key: Ed25519PrivateKey
    seq: int
    rng: random.Random
    values: dict[str, float] = field(default_factory=dict)

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    def enrollment(self) -> dict[str, object]:
        """The enrollment record (DESIGN.md section 5) `cimedge keygen` would write."""
        return {"v": 1, "device_id": self.dev, "site_type": self.site_type,
                "kid": kid_for(self.public_key).hex(),
                "public_key": base64.b64encode(self.public_key).decode(),
                "created": "2025-03-01T08:00:00Z", "location": f"simulated {self.site_type}"}

    def _reading(self, point: tuple[str, str, str, float, float], ts_ns: int) -> Reading:
        name, _unit, kind, low, high = point
        roll = self.rng.random()
        if roll < 0.004:  # noqa: PLR2004 - a failed poll now and then, as the field has
            return Reading(name, ts_ns, None, Quality.COMM)
        if kind == "b":
            return Reading(name, ts_ns, self.rng.random() < 0.3)  # noqa: PLR2004
        last = self.values.get(name, (low + high) / 2)
        value = min(high, max(low, last + self.rng.gauss(0, (high - low) / 50)))
        self.values[name] = value
        quality = Quality.STALE if roll > 0.998 else Quality.GOOD  # noqa: PLR2004
        return Reading(name, ts_ns, round(value, 3), quality)

    def batch(self, t0: float, interval: float, n: int) -> Message:
        """The next batch: n readings over [t0, t0 + interval), the points taking turns."""
        points = SITES[self.site_type][1]
        units = {p[0]: p[1] for p in points if p[1]}
        step = interval / n
        readings = [self._reading(points[i % len(points)], int((t0 + i * step) * 1e9))
                    for i in range(n)]
        self.seq += 1
        payload = batch_payload(self.dev, self.seq, t0 + interval,
                                encode_pack(self.dev, readings, units))
        return Message(self.dev, self.seq, sign1(payload, self.key), n)


class Fleet:
    """N simulated gateways, site types in turn; keys derived from `seed`."""

    def __init__(self, n: int = 1000, *, seed: str = "cim-fleet", first_seq: int = 1) -> None:
        self.gateways: list[SimGateway] = []
        types = list(SITES)
        for i in range(n):
            site = types[i % len(types)]
            secret = hashlib.sha256(f"{seed}:{i}".encode()).digest()
            self.gateways.append(SimGateway(
                f"{SITES[site][0]}-{i:05d}", site, Ed25519PrivateKey.from_private_bytes(secret),
                first_seq - 1, random.Random(f"{seed}:{i}")))  # noqa: S311 - simulation

    def enrollments(self) -> list[dict[str, object]]:
        return [g.enrollment() for g in self.gateways]

    def enroll(self, registry: str | Path) -> None:
        """Add every gateway's enrollment record to a registry (file or postgresql:// URL)."""
        from cimedge.cloud_sync.receiver.registry import open_registry

        reg = open_registry(registry)
        try:
            reg.add_enrollments((e, "fleet") for e in self.enrollments())
        finally:
            reg.close()

    def write_enrollments(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        out = []
        for g in self.gateways:
            out.append(directory / f"{g.dev}.json")
            out[-1].write_text(json.dumps(g.enrollment()))
        return out

    def build(self, batches: int, readings: int = 100, interval: float = 10.0,
              t0: float | None = None) -> list[Message]:
        """`batches` batches per gateway, in publishing order: every gateway's k-th, then k+1."""
        start = (time.time() - batches * interval) if t0 is None else t0
        return [g.batch(start + k * interval, interval, readings)
                for k in range(batches) for g in self.gateways]


@dataclass
class Report:
    """What a Publisher run did; latencies are first publish to ok ack, in seconds."""

    messages: int = 0
    readings: int = 0
    sent: int = 0
    resent: int = 0
    acked: int = 0
    duplicate_acks: int = 0
    nacks: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    def summary(self) -> str:
        took = max(self.finished - self.started, 1e-9)
        return (f"{self.acked}/{self.messages} batches ({self.readings} readings) acked in "
                f"{took:.2f} s: {self.readings / took:,.0f} readings/s; latency median "
                f"{statistics.median(self.latencies) * 1e3 if self.latencies else 0:.1f} ms, "
                f"p99 {self.percentile(99) * 1e3:.1f} ms; resent {self.resent}, "
                f"nacks {dict(self.nacks)}")


class Publisher:
    """Publishes messages as gateways do, until each one is acked (see module docstring)."""

    def __init__(self, host: str, port: int, *, connections: int = 2, window: int = 4,
                 ack_timeout: float = 10.0, rate: float | None = None) -> None:
        self.host, self.port, self.connections = host, port, max(1, connections)
        self.window, self.ack_timeout, self.rate = window, ack_timeout, rate
        self.report = Report()
        self._progress = asyncio.Event()
        self._inflight: dict[tuple[str, int], list[Any]] = {}  # key -> [message, last sent]
        self._first: dict[tuple[str, int], float] = {}
        self._per_dev: Counter[str] = Counter()
        self._room: dict[str, asyncio.Event] = {}
        self._clients: list[aiomqtt.Client] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(256)

    async def wait_acked(self, n: int) -> None:
        """Return once n messages are acked (tests use this to act mid-stream)."""
        while self.report.acked < n:
            self._progress.clear()
            await self._progress.wait()

    async def run(self, messages: Sequence[Message], timeout: float = 300.0) -> Report:
        """Publish every message and wait for its ack; TimeoutError names what is missing."""
        r = self.report
        r.messages, r.readings = len(messages), sum(m.readings for m in messages)
        async with contextlib.AsyncExitStack() as stack:
            listener = await stack.enter_async_context(self._client())
            await listener.subscribe("cim/v1/+/ack", qos=1)
            self._clients = [await stack.enter_async_context(self._client())
                             for _ in range(self.connections)]
            tasks = [asyncio.create_task(self._acks(listener), name="fleet-acks"),
                     asyncio.create_task(self._resend(), name="fleet-resend")]
            try:
                async with asyncio.timeout(timeout):
                    r.started = time.monotonic()
                    await self._send_all(messages)
                    await self.wait_acked(len(messages))
                    r.finished = time.monotonic()
            except TimeoutError:
                msg = f"not every batch was acked within {timeout} s: {r.summary()}"
                raise TimeoutError(msg) from None
            finally:
                for t in [*tasks, *self._sends]:
                    t.cancel()
                await asyncio.gather(*tasks, *self._sends, return_exceptions=True)
        return r

    def _client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(self.host, self.port, protocol=aiomqtt.ProtocolVersion.V5,
                                timeout=30, max_inflight_messages=256,
                                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        client.pending_calls_threshold = 1000  # many publishes at once is the point here
        return client

    async def _send_all(self, messages: Sequence[Message]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, m in enumerate(messages):
            if self.rate:
                ahead = start + i / self.rate - loop.time()
                if ahead > 0.002:  # noqa: PLR2004 - sleep only when worth a loop turn
                    await asyncio.sleep(ahead)
            while self._per_dev[m.dev] >= self.window:
                room = self._room.setdefault(m.dev, asyncio.Event())
                room.clear()
                await room.wait()
            self._per_dev[m.dev] += 1
            key = (m.dev, m.seq)
            self._first[key] = time.monotonic()
            self._inflight[key] = [m, time.monotonic()]
            self._publish(m)
            self.report.sent += 1

    def _publish(self, m: Message) -> None:
        client = self._clients[hash(m.dev) % len(self._clients)]

        async def send() -> None:
            async with self._limit:
                with contextlib.suppress(aiomqtt.MqttError):  # the resend covers it
                    await client.publish(m.topic, m.payload, qos=1)
        task = asyncio.create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _acks(self, listener: aiomqtt.Client) -> None:
        async for message in listener.messages:
            dev = message.topic.value.split("/")[2]
            if not isinstance(message.payload, bytes | bytearray):
                continue
            try:
                ack = decode_ack(bytes(message.payload))
            except Reject:
                continue
            key = (dev, ack.seq)
            if not ack.ok:
                self.report.nacks[ack.err or "?"] += 1
                continue  # kept: sent again after ack_timeout, as the gateway does
            if self._inflight.pop(key, None) is None:
                self.report.duplicate_acks += 1
                continue
            self.report.latencies.append(time.monotonic() - self._first[key])
            self.report.acked += 1
            self._per_dev[dev] -= 1
            if dev in self._room:
                self._room[dev].set()
            self._progress.set()

    async def _resend(self) -> None:
        while True:
            await asyncio.sleep(min(0.1, self.ack_timeout / 4))
            now = time.monotonic()
            for entry in list(self._inflight.values()):
                if entry[1] + self.ack_timeout <= now:
                    entry[1] = now
                    self._publish(entry[0])
                    self.report.resent += 1


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cimedge.tools.fleet", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", required=True, metavar="mqtt://HOST:PORT")
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--readings", type=int, default=100, help="readings per batch")
    p.add_argument("--batches", type=int, default=5, help="batches per gateway")
    p.add_argument("--interval", type=float, default=10.0,
                   help="seconds of readings in one batch (their time stamps)")
    p.add_argument("--rate", type=float, help="batches per second over the fleet "
                                              "(default: as fast as the broker takes them)")
    p.add_argument("--seed", default="cim-fleet", help="derives the gateways' keys")
    p.add_argument("--first-seq", type=int, default=1)
    p.add_argument("--registry", help="enroll the fleet in this registry first "
                                      "(a SQLite file or a postgresql:// URL)")
    p.add_argument("--enroll-dir", type=Path, help="write each gateway's enrollment.json here")
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--ack-timeout", type=float, default=10.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cimedge.cloud_sync.transport import parse_broker

    args = _args(argv)
    fleet = Fleet(args.gateways, seed=args.seed, first_seq=args.first_seq)
    if args.registry:
        fleet.enroll(args.registry)
    if args.enroll_dir:
        fleet.write_enrollments(args.enroll_dir)
    messages = fleet.build(args.batches, args.readings, args.interval)
    host, port, _ = parse_broker(args.broker)
    publisher = Publisher(host, port, connections=args.connections,
                          ack_timeout=args.ack_timeout, rate=args.rate)
    print(f"{datetime.now(UTC):%H:%M:%S} publishing {len(messages)} batches from "
          f"{args.gateways} gateways to {args.broker}", file=sys.stderr)
    report = asyncio.run(publisher.run(messages))
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
