"""Modbus RTU at 9600 baud: a poll cycle of 8 units x 40 points, coalesced vs one request a point.

The slaves are ``tools.sim.rtu_bus`` in a separate process on a PTY pair, with simulated line
timing (each answer leaves after the request's and its own wire time and the 3.5-character
gap, at 9600 baud 8N1). The theoretical minimum of a cycle is the bytes of every request and
answer on the wire plus two 3.5-character gaps per transaction (after the request, before
the answer; after the answer, before the next request).

Run: ``.venv/bin/python bench/modbus_rtu_bench.py [--cycles 3]``; prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cimedge.drivers.modbus import DeviceConfig, Driver  # noqa: E402
from cimedge.drivers.modbus.plan import BIT_TABLES, Request  # noqa: E402

BAUD, UNITS = 9600, 8
CHAR_S = 10 / BAUD  # 8N1: start, 8 data, stop


def points() -> dict[str, dict[str, object]]:
    """40 points the way a field device lays them out: blocks with small holes."""
    out: dict[str, dict[str, object]] = {}
    for i in range(16):
        out[f"f{i}"] = {"table": "input", "address": 2 * i, "dtype": "float32"}
    for i in range(8):
        out[f"s{i}"] = {"table": "input", "address": 40 + i, "dtype": "uint16"}
    for i in range(4):
        out[f"c{i}"] = {"table": "holding", "address": 2 * i, "dtype": "int32"}
        out[f"h{i}"] = {"table": "holding", "address": 10 + i, "dtype": "uint16"}
        out[f"q{i}"] = {"table": "coil", "address": i, "dtype": "bool"}
        out[f"d{i}"] = {"table": "discrete", "address": i, "dtype": "bool"}
    return out


def wire_bytes(req: Request) -> tuple[int, int]:
    """Request and answer sizes of one read on the wire."""
    data = (req.count + 7) // 8 if req.table in BIT_TABLES else 2 * req.count
    return 8, 5 + data


def per_point(driver: Driver) -> tuple[Request, ...]:
    """One request per point: what a driver without coalescing sends."""
    return tuple(
        Request(p.table, p.address, p.width, (name,)) for name, p in driver.config.points.items()
    )


async def cycle(drivers: list[Driver]) -> float:
    """One poll of every unit, all started together as the scheduler does; wall seconds."""
    started = time.perf_counter()
    results = await asyncio.gather(*(d.read() for d in drivers))
    took = time.perf_counter() - started
    bad = sum(r.quality != 0 for rs in results for r in rs)
    if bad:
        msg = f"{bad} readings failed"
        raise RuntimeError(msg)
    return took


async def measure(path: str, cycles: int, *, coalesce: bool) -> dict[str, float]:
    configs = [
        msgspec.convert({"driver": "modbus", "transport": "rtu", "port": path, "unit": u,
                         "baudrate": BAUD, "timeout_s": 0.5, "points": points()}, DeviceConfig)
        for u in range(1, UNITS + 1)
    ]  # fmt: skip
    drivers = [Driver(f"u{i}", c) for i, c in enumerate(configs, 1)]
    if not coalesce:
        for d in drivers:
            d.requests = per_point(d)
    for d in drivers:
        await d.__aenter__()
    try:
        await cycle(drivers)  # warm-up: opens the port, first gaps
        bus = drivers[0].link.bus  # type: ignore[attr-defined]
        before = msgspec.structs.replace(bus.stats)
        walls = [await cycle(drivers) for _ in range(cycles)]
        stats = bus.stats
    finally:
        for d in drivers:
            await d.__aexit__(None, None, None)
    transactions = sum(len(d.requests) for d in drivers)
    minimum = sum(sum(wire_bytes(r)) + 7 for d in drivers for r in d.requests) * CHAR_S
    return {
        "transactions": transactions,
        "exchanges_seen": (stats.exchanges - before.exchanges) / cycles,
        "wall_s": min(walls),
        "busy_s": (stats.busy_s - before.busy_s) / cycles,
        "minimum_s": minimum,
        "bytes": (stats.bytes_out - before.bytes_out + stats.bytes_in - before.bytes_in) / cycles,
    }


async def main(cycles: int) -> None:
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cimedge.tools.sim.rtu_bus", "--units", ",".join(map(str, range(1, 9))),
        "--baudrate", str(BAUD), "--line-timing",
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        assert sim.stdout is not None  # noqa: S101
        path = (await sim.stdout.readline()).decode().split()[1]
        coalesced = await measure(path, cycles, coalesce=True)
        single = await measure(path, 1, coalesce=False)
    finally:
        sim.terminate()
        await sim.wait()
    rows = [("coalesced", coalesced), ("one request per point", single)]
    print(f"Modbus RTU, {BAUD} baud 8N1, PTY, simulated line timing, {UNITS} units x 40 points")
    print(f"{'plan':24} {'transactions':>12} {'bytes':>7} {'cycle s':>8} {'bus s':>7} "
          f"{'minimum s':>9} {'cycle/min':>9}")  # fmt: skip
    for name, r in rows:
        ratio = r["wall_s"] / r["minimum_s"]
        print(f"{name:24} {r['transactions']:12.0f} {r['bytes']:7.0f} {r['wall_s']:8.3f} "
              f"{r['busy_s']:7.3f} {r['minimum_s']:9.3f} {ratio:9.3f}")  # fmt: skip
    ratio = single["transactions"] / coalesced["transactions"]
    print(f"transactions: {ratio:.1f}x fewer coalesced (target >= 5x); coalesced cycle "
          f"{coalesced['wall_s'] / coalesced['minimum_s']:.3f}x the minimum (target <= 1.3x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=3)
    asyncio.run(main(parser.parse_args().cycles))
