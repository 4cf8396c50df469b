"""Modbus TCP: points per second read from a local pymodbus server, and CPU per 1000 points.

The server is a pymodbus ``ModbusTcpServer`` (``tools.sim.modbus_server.listen``) in its own
process, serving 2000 input registers on loopback. The client is the gateway's driver,
reading back to back for ``--seconds`` in each scenario: one device of 100 points
(coalesced: 2 requests a poll), ten such devices at once (ten connections), and one device
read with one request per point. CPU is the client process's user+system time; the
server's own CPU is reported apart.

Run: ``.venv/bin/python bench/modbus_tcp_bench.py [--seconds 5]``; prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cimedge.drivers.modbus import DeviceConfig, Driver  # noqa: E402
from cimedge.drivers.modbus.plan import Request  # noqa: E402


def points() -> dict[str, dict[str, object]]:
    """100 points: 50 float32 then 50 uint16, contiguous."""
    out: dict[str, dict[str, object]] = {}
    for i in range(50):
        out[f"f{i}"] = {"table": "input", "address": 2 * i, "dtype": "float32"}
        out[f"s{i}"] = {"table": "input", "address": 100 + i, "dtype": "uint16"}
    return out


async def serve() -> None:
    """The server process: print the port, serve until stdin closes."""
    from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: PLC0415

    from cimedge.tools.sim.modbus_server import listen  # noqa: PLC0415

    device = SimDevice(
        id=1,
        simdata=(
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, values=[0] * 16, datatype=DataType.REGISTERS)],
            [SimData(0, values=list(range(2000)), datatype=DataType.REGISTERS)],
        ),
    )
    server, port = await listen(device, "127.0.0.1", 0)
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.shutdown()  # type: ignore[no-untyped-call]


async def scenario(port: int, devices: int, seconds: float, *, coalesce: bool) -> dict[str, float]:
    cfg = msgspec.convert(
        {"driver": "modbus", "host": "127.0.0.1", "port": port, "points": points()}, DeviceConfig
    )
    drivers = [Driver(f"d{i}", cfg) for i in range(devices)]
    if not coalesce:
        for d in drivers:
            d.requests = tuple(
                Request(p.table, p.address, p.width, (n,)) for n, p in cfg.points.items()
            )
    for d in drivers:
        await d.__aenter__()
    done = 0

    async def run(d: Driver, until: float) -> None:
        nonlocal done
        while time.perf_counter() < until:
            readings = await d.read()
            if any(r.quality for r in readings):
                msg = "a read failed"
                raise RuntimeError(msg)
            done += len(readings)

    try:
        cpu0, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(run(d, started + seconds) for d in drivers))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    finally:
        for d in drivers:
            await d.__aexit__(None, None, None)
    return {"points_s": done / wall, "cpu_ms_per_1000": 1000 * cpu / done * 1000,
            "requests": len(drivers[0].requests), "cpu_share": cpu / wall}  # fmt: skip


async def main(seconds: float) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert server.stdout is not None and server.stdin is not None  # noqa: S101
    port = int(await server.stdout.readline())
    try:
        rows = [
            ("1 device, coalesced", await scenario(port, 1, seconds, coalesce=True)),
            ("10 devices, coalesced", await scenario(port, 10, seconds, coalesce=True)),
            ("1 device, one request/point", await scenario(port, 1, seconds, coalesce=False)),
        ]
    finally:
        server.stdin.close()
        await server.wait()
    server_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"Modbus TCP on loopback, pymodbus server in its own process, {seconds:g} s a scenario")
    print(f"{'scenario':30} {'requests/poll':>13} {'points/s':>10} {'client CPU ms/1000 pts':>23} "
          f"{'client CPU':>10}")  # fmt: skip
    for name, r in rows:
        print(f"{name:30} {r['requests']:13.0f} {r['points_s']:10.0f} "
              f"{r['cpu_ms_per_1000']:23.2f} {100 * r['cpu_share']:9.0f}%")  # fmt: skip
    print(f"server CPU over all scenarios: {server_cpu.ru_utime + server_cpu.ru_stime:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve() if args.serve else main(args.seconds))
