"""Ingest: readings/s committed to the gateway buffer (200 points a tick, one txn a tick).

    python -m bench.store_ingest [--ticks 2000] [--points 200]

Prints readings/s and CPU-seconds per million readings for synchronous=FULL (what the
gateway runs) and, for comparison only, NORMAL.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

from cimedge.edge.model import Quality, Reading
from cimedge.edge.store import Store


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def ingest(path: Path, ticks: int, points: int, sync: str) -> tuple[float, float]:
    names = [f"dev{p // 20}.p{p}" for p in range(points)]
    t0 = 1_760_000_000 * 10**9
    async with Store(path) as store:
        if sync != "FULL":
            await store._call(lambda: store._conn().execute(f"PRAGMA synchronous={sync}"))  # noqa: SLF001
        wall, cpu = time.perf_counter(), _cpu()
        for t in range(ticks):
            ts = t0 + t * 10**9
            await store.append([Reading(n, ts, float(t + i), Quality.GOOD)
                                for i, n in enumerate(names)])
        return time.perf_counter() - wall, _cpu() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ticks", type=int, default=2000)
    p.add_argument("--points", type=int, default=200)
    args = p.parse_args()
    n = args.ticks * args.points
    print(f"SQLite {sqlite3.sqlite_version}, {args.ticks} ticks x {args.points} points = {n} readings")
    print(f"{'synchronous':<12}{'readings/s':>14}{'CPU-s per 1M':>14}{'ticks/s':>10}")
    for sync in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory() as d:
            wall, cpu = asyncio.run(ingest(Path(d) / "b.sqlite", args.ticks, args.points, sync))
        print(f"{sync:<12}{n / wall:>14,.0f}{cpu / n * 1e6:>14.2f}{args.ticks / wall:>10,.0f}")


if __name__ == "__main__":
    main()
