"""One run of one gateway: broker, simulator, relay, subscriber, backend and gateway, then stop.

Every run starts from nothing (fresh broker, simulator counters, state directories), so the
rounds do not leak into each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any, Protocol

from bench.compare import subscriber
from bench.compare.rig import Gateway, Helper
from bench.compare.site import Site
from bench.compare.tally import Tally
from cimedge.tools.broker import Mosquitto


class Side(Protocol):
    """What a run needs of a gateway under test (bench.compare.ours.Ours, peer.Peer)."""

    kind: str
    dev: str
    work: Path
    audit: bool  # record what the gateway committed, if it can (only ours can)

    def gateway(self, site: Site, uplink_port: int, sim_ports: list[int]) -> Gateway: ...
    def committed(self) -> list[tuple[str, int]] | None: ...
    async def start_backend(self, broker_port: int) -> None: ...
    async def stop_backend(self) -> None: ...


class Run:
    """``async with Run(side, site, work) as run``: everything up and the first value counted."""

    def __init__(self, side: Side, site: Site) -> None:
        self.side, self.site, self.work = side, site, side.work
        self.tally = Tally()
        self.broker = Mosquitto(workdir=self.work / "mosquitto")
        self.result: dict[str, Any] = {"poll_s": site.poll_s, "load_start": os.getloadavg()[0]}
        self._cpu = 0.0  # gateway CPU-s in the last window()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Run:
        (self.work / "mosquitto").mkdir(parents=True, exist_ok=True)
        stack = self._stack
        await asyncio.to_thread(self.broker.start)
        stack.push_async_callback(asyncio.to_thread, self.broker.close)
        self.sim = await Helper.start(
            ["-m", "cimedge.tools.sim.counting_server", "--devices", str(self.site.devices),
             "--points", str(self.site.points)], self.work / "sim.log")
        stack.push_async_callback(self.sim.close)
        self.relay = await Helper.start(
            ["-m", "bench.compare.relay", "--upstream", f"127.0.0.1:{self.broker.port}"],
            self.work / "relay.log")
        stack.push_async_callback(self.relay.close)
        self.sub, task = await subscriber.start(self.broker.port, self.side.kind, self.side.dev,
                                                self.tally)
        stack.push_async_callback(subscriber.stop, task)
        self.gw = self.side.gateway(self.site, self.relay.ports[0], self.sim.ports)
        await self.side.start_backend(self.broker.port)
        stack.push_async_callback(self.side.stop_backend)
        if self.side.kind == "ours":
            await asyncio.sleep(1.0)  # the receiver subscribes before the first batch
        t0 = time.time()
        await self.gw.start()
        stack.push_async_callback(self.gw.stop)
        await self.until(lambda: self.tally.first_at is not None, 60, "a first value")
        self.result["startup_s"] = (self.tally.first_at or 0) - t0
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.result["peak_rss_mb"] = self.gw.hwm() / 2**20
        self.result["load_end"] = os.getloadavg()[0]
        await self._stack.aclose()
        if self.side.kind == "ours":
            self.result.update(_receiver_counts(self.work / "receiver.sqlite"))

    async def until(self, done: Any, timeout: float, what: str) -> None:  # noqa: ANN401
        """Wait for ``done()`` to be true; RuntimeError naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.side.kind}: no {what} within {timeout:.0f} s "
                                   f"(logs in {self.work})")
            if self.gw.crashed():
                raise RuntimeError(f"{self.side.kind} gateway exited (see {self.gw.log})")
            await asyncio.sleep(0.05)

    async def served(self, command: str = "snap") -> dict[str, int]:
        """The simulator's counters: per point, the highest value served so far."""
        snap = await self.sim.ask(command)
        return dict(zip(self.site.keys(), (c for dev in snap["counts"] for c in dev),
                        strict=True))

    async def window(self, seconds: float, latency: bool = False) -> dict[str, float]:
        """CPU and bytes per value over ``seconds`` of running; ``finish`` adds the rate.

        Bytes per value are counted by arrival (bytes and values come in the same publishes).
        The rate and CPU per value count the values *read* in the window, wherever they
        arrive later: counted by arrival, a 4 s window would hold 3 or 4 of our once-a-second
        batches, a 25 % swing.
        """
        tally, gw = self.tally, self.gw
        tally.keep_latency = latency
        s0, c0, r0 = tally.snapshot(), gw.cpu(), await self.relay.ask("snap")
        tally.span, tally.in_span = (s0["t"], s0["t"] + seconds), 0
        await asyncio.sleep(seconds)
        s1, c1, r1 = tally.snapshot(), gw.cpu(), await self.relay.ask("snap")
        tally.keep_latency = False
        self._cpu = (c1 - c0) * seconds / (s1["t"] - s0["t"])  # CPU-s in the reading span
        n = max(1, s1["distinct"] - s0["distinct"])
        out = {"arrived_per_s": (s1["distinct"] - s0["distinct"]) / (s1["t"] - s0["t"]),
               "cpu_share": (c1 - c0) / (s1["t"] - s0["t"]),
               "bytes_per_value": (s1["bytes"] - s0["bytes"]) / n,
               "wire_bytes_per_value": (r1["up"] + r1["down"] - r0["up"] - r0["down"]) / n,
               "publishes_per_s": (s1["publishes"] - s0["publishes"]) / (s1["t"] - s0["t"])}
        if latency and tally.latencies:
            q = statistics.quantiles(tally.latencies, n=20)
            out |= {"latency_p50_s": statistics.median(tally.latencies), "latency_p95_s": q[18]}
        return out

    async def finish(self, quiet_s: float, deadline_s: float) -> dict[str, float]:
        """Stop the simulator answering, let the gateway deliver what it has, count losses."""
        served = await self.served("pause")
        await self.quiet(quiet_s, deadline_s)
        t = self.tally
        out = {"served": sum(served.values()), "lost": t.missing(served), "dups": t.dups,
               "out_of_order": t.out_of_order}
        if t.span[1] > t.span[0]:
            out |= {"values_per_s": t.in_span / (t.span[1] - t.span[0]),
                    "cpu_s_per_m": self._cpu / max(1, t.in_span) * 1e6}
        return out

    async def quiet(self, quiet_s: float, deadline_s: float) -> None:
        """Wait until no new value arrived for ``quiet_s``, or ``deadline_s`` passed."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and time.time() - self.tally.new_at < quiet_s:
            await asyncio.sleep(0.1)


def _receiver_counts(db: Path) -> dict[str, int]:
    """Readings our receiver stored, and how many of them were stored twice (target 0)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        total, distinct = con.execute(
            "SELECT count(*), count(DISTINCT name || '/' || v) FROM readings "
            "WHERE v IS NOT NULL").fetchone()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {"receiver_stored": total, "receiver_dups": total - distinct}
