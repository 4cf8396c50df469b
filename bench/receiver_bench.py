"""Receiver benchmark: verified-and-stored readings/s, CPU per million readings, ack latency.

For each store (SQLite, PostgreSQL) and each number of receiver processes (1, 2):

1. a private Mosquitto on a free loopback port, a fresh store and a registry holding the
   fleet's enrollment records (tools/fleet.py: 1,000 gateways by default);
2. throughput: the receivers (`cimedge receiver run` processes with stable client ids)
   subscribe once and stop, every prebuilt signed batch is published into their broker
   sessions, then they start again and drain the backlog. Readings/s is counted from the
   first ack to the last (each ack follows the durable commit of its batch), so neither
   the publisher's CPU nor process start-up is in it. CPU-seconds are the receivers' own
   (/proc), plus the broker's and the PostgreSQL backends' for sizing;
3. latency: the fleet publishes live at a fixed rate (half the 50,000 readings/s target,
   or half of what was measured when that is less), and every batch's time from its
   publish to its ok ack (after the commit) is recorded: median and p99.

With two SQLite receivers each has its own file (one writer per file), so dedup holds only
within a file; that row shows throughput, not a deployment (use PostgreSQL to scale out).

    .venv/bin/python bench/receiver_bench.py                # the full table
    .venv/bin/python bench/receiver_bench.py --quick        # a smoke run, 100 gateways
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from cimedge.tools.broker import Mosquitto  # noqa: E402
from cimedge.tools.fleet import Fleet, Message, Publisher  # noqa: E402

TARGET = 50_000  # readings/s per receiver process into PostgreSQL (issue 4)
TICK = os.sysconf("SC_CLK_TCK")
# Nagle's algorithm on the broker's sockets holds small packets (acks) ~40 ms: see README.
BROKER_CONF = "set_tcp_nodelay true\nmax_inflight_messages 1000\n"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Row:
    store: str
    receivers: int
    readings: int = 0
    seconds: float = 0.0
    rx_cpu: float = 0.0
    broker_cpu: float = 0.0
    pg_cpu: float | None = None
    rate: float = 0.0  # latency phase: readings/s offered
    median_ms: float = float("nan")
    p99_ms: float = float("nan")
    latency_batches: int = 0

    @property
    def per_s(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0

    def per_m(self, cpu: float | None) -> str:
        return "-" if cpu is None else f"{cpu / self.readings * 1e6:.1f}"


class Receivers:
    """N `cimedge receiver run` processes; start() waits for each one's ready line."""

    def __init__(self, n: int, broker: Mosquitto, dbs: list[str], registry: str,
                 logdir: Path, extra: list[str]) -> None:
        self.cmds = [[sys.executable, "-m", "cimedge.provisioning.cli", "receiver", "run",
                      "--broker", broker.url, "--db", dbs[i % len(dbs)], "--registry",
                      registry, "--client-id", f"bench-rx-{i}", *extra] for i in range(n)]
        self.logdir = logdir
        self.procs: list[subprocess.Popen[str]] = []

    async def start(self) -> None:
        for i, cmd in enumerate(self.cmds):
            with open(self.logdir / f"rx{i}.log", "a") as err:
                self.procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                                   stderr=err, text=True))
        for p in self.procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 30)
            if " ready: " not in line:
                raise RuntimeError(f"receiver did not start: {line!r}")

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> list[str]:
        out = []
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            text, _ = p.communicate(timeout=60)
            out.append(text.strip().splitlines()[-1] if text.strip() else "")
        self.procs = []
        return out


class Postgres:
    """A fresh database per scenario on the server at `admin` (dropped afterwards)."""

    def __init__(self, admin: str) -> None:
        import psycopg

        self.admin = psycopg.connect(admin, autocommit=True, connect_timeout=5)
        self.base = admin.rsplit("/", 1)[0]
        self.name = ""

    def create(self) -> str:
        self.name = f"cim_bench_{uuid.uuid4().hex[:12]}"
        self.admin.execute(f'CREATE DATABASE "{self.name}"')
        return f"{self.base}/{self.name}"

    def backend_cpu(self) -> float:
        rows = self.admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                  (self.name,)).fetchall()
        return sum(cpu_seconds(pid) for (pid,) in rows)

    def drop(self) -> None:
        if self.name:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def publish_backlog(broker: Mosquitto, messages: list[Message]) -> None:
    """Publish every message once at QoS 1, as fast as the broker takes them."""
    async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5,
                              max_inflight_messages=500, timeout=60) as client:
        client.pending_calls_threshold = 10**6
        for i in range(0, len(messages), 500):
            await asyncio.gather(*(client.publish(m.topic, m.payload, qos=1)
                                   for m in messages[i:i + 500]))


async def drain(broker: Mosquitto, rx: Receivers, messages: list[Message], row: Row,
                pg: Postgres | None) -> None:
    """Receivers drain the queued backlog; time it from the first ack to the last."""
    want = {(m.dev, m.seq) for m in messages}
    first = last = 0.0
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as listener:
        await listener.subscribe("cim/v1/+/ack", qos=0)  # qos 0: the listener adds little
        broker_cpu0 = cpu_seconds(broker.proc.pid)  # type: ignore[union-attr]
        await rx.start()
        rx_cpu0, pg_cpu0 = rx.cpu(), pg.backend_cpu() if pg else 0.0
        from cimedge.cloud_sync.ack import decode_ack

        async with asyncio.timeout(600):
            async for msg in listener.messages:
                ack = decode_ack(msg.payload)  # type: ignore[arg-type]
                key = (msg.topic.value.split("/")[2], ack.seq)
                if ack.ok and key in want:
                    want.discard(key)
                    last = time.monotonic()
                    first = first or last
                    if not want:
                        break
        row.rx_cpu = rx.cpu() - rx_cpu0
        row.broker_cpu = cpu_seconds(broker.proc.pid) - broker_cpu0  # type: ignore[union-attr]
        row.pg_cpu = pg.backend_cpu() - pg_cpu0 if pg else None
    row.readings = sum(m.readings for m in messages)
    row.seconds = last - first


async def scenario(store: str, n: int, fleet: Fleet, backlog: list[Message],
                   live: list[Message], args: argparse.Namespace, work: Path) -> Row:
    row = Row(store, n)
    pg = Postgres(args.pg) if store == "postgresql" else None
    broker = Mosquitto(workdir=work / "mosquitto", extra_conf=BROKER_CONF)
    (work / "mosquitto").mkdir()
    broker.start()
    try:
        dbs = [pg.create()] if pg else [str(work / f"rx{i}.sqlite") for i in range(n)]
        registry = dbs[0] if pg else str(work / "registry.sqlite")  # the city's: in PostgreSQL
        fleet.enroll(registry)
        rx = Receivers(n, broker, dbs, registry, work, args.receiver_args)
        await rx.start()  # once, to make their broker sessions; then the backlog queues there
        rx.stop()
        await publish_backlog(broker, backlog)
        await drain(broker, rx, backlog, row, pg)
        rate = min(TARGET, row.per_s) / 2
        per_batch = live[0].readings
        row.rate = rate
        publisher = Publisher("127.0.0.1", broker.port, rate=rate / per_batch, window=4,
                              ack_timeout=30.0)
        count = min(len(live), max(200, int(rate / per_batch * args.latency_seconds)))
        report = await publisher.run(live[:count], timeout=300)
        row.latency_batches = len(report.latencies)
        row.median_ms = statistics.median(report.latencies) * 1e3
        row.p99_ms = report.percentile(99) * 1e3
        for line in rx.stop():
            print(f"    {store} x{n}: {line}", flush=True)
    finally:
        broker.close()
        if pg:
            pg.drop()
    return row


def table(rows: list[Row], args: argparse.Namespace, built: str) -> str:
    head = (f"{'store':<11}{'rx':>3}{'readings/s':>12}{'x one':>7}{'rx CPU-s/M':>12}"
            f"{'broker CPU-s/M':>16}{'PG CPU-s/M':>12}{'latency at':>14}{'median':>9}{'p99':>9}")
    lines = [built, head]
    for r in rows:
        one = next((o.per_s for o in rows if o.store == r.store and o.receivers == 1), 0)
        lines.append(f"{r.store:<11}{r.receivers:>3}{r.per_s:>12,.0f}"
                     f"{(r.per_s / one if one else 0):>6.2f}x{r.per_m(r.rx_cpu):>12}"
                     f"{r.per_m(r.broker_cpu):>16}{r.per_m(r.pg_cpu):>12}"
                     f"{r.rate:>10,.0f} r/s{r.median_ms:>7.1f}ms{r.p99_ms:>7.1f}ms")
    lines.append(f"backlog {args.gateways} gateways x {args.batches} batches x {args.readings} "
                 f"readings; {os.cpu_count()} CPUs; receiver args {args.receiver_args or '-'}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--batches", type=int, default=10, help="backlog batches per gateway")
    p.add_argument("--readings", type=int, default=100, help="readings per batch")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--receivers", default="1,2")
    p.add_argument("--pg", default=os.environ.get("CIM_TEST_PG",
                                                  "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="admin URL of the PostgreSQL server (a database is made per scenario)")
    p.add_argument("--quick", action="store_true", help="100 gateways, 3 batches: a smoke run")
    p.add_argument("receiver_args", nargs="*", help="after --: passed to `receiver run`")
    args = p.parse_args(argv)
    if args.quick:
        args.gateways, args.batches, args.latency_seconds = 100, 3, 3.0
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t = time.monotonic()
    fleet = Fleet(args.gateways, seed="bench")
    backlog = fleet.build(args.batches, args.readings)
    live_batches = max(1, int(TARGET / 2 / args.readings * args.latency_seconds
                              / args.gateways) + 1)
    live = fleet.build(live_batches, args.readings, t0=time.time())
    built = (f"built {len(backlog) + len(live)} signed batches in {time.monotonic() - t:.1f} s "
             "(not measured)")
    print(built, flush=True)
    rows = []
    for store in args.stores.split(","):
        for n in map(int, args.receivers.split(",")):
            with tempfile.TemporaryDirectory(prefix="cim-bench-") as tmp:
                work = Path(tmp)
                print(f"  {store} x{n} ...", flush=True)
                rows.append(await scenario(store, n, fleet, backlog, live, args, work))
                print(f"  {store} x{n}: {rows[-1].per_s:,.0f} readings/s, latency p99 "
                      f"{rows[-1].p99_ms:.1f} ms", flush=True)
    print(table(rows, args, built))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
