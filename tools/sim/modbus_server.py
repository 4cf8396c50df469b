"""Shared plumbing for the Modbus simulators: listen on a (free) TCP port, run as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimDevice


class Simulator(Protocol):
    """What ``run_until_signalled`` needs of a running simulator."""

    host: str
    port: int

    def stats(self) -> Mapping[str, object]:
        """Return what the simulator counted, JSON-ready."""

    async def close(self) -> None:
        """Stop serving."""


async def listen(device: SimDevice, host: str, port: int) -> tuple[ModbusTcpServer, int]:
    """Serve ``device`` on host:port; port 0 takes a free port. Returns the server and real port."""
    server = ModbusTcpServer(device, address=(host, port))
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:  # pymodbus reports a failed bind this way
        msg = f"cannot listen on {host}:{port}"
        raise OSError(msg) from exc
    sockets = server.transport.sockets  # type: ignore[attr-defined]  # an asyncio.Server
    return server, int(sockets[0].getsockname()[1])


TICK_S = 0.05  # the physics step of every simulated plant, in real seconds


async def run_physics(step: Callable[[float], None], speed: Callable[[], float]) -> None:
    """Call ``step(simulated seconds)`` every TICK_S until cancelled; speed 0 freezes time."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(TICK_S)
        now = loop.time()
        if (factor := speed()) > 0:
            step((now - last) * factor)
        last = now


def write_stats(path: Path, stats: Mapping[str, object]) -> None:
    """Replace ``path`` with ``stats`` as JSON, atomically (write, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(stats, f, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


async def run_until_signalled(
    start: Callable[[], Awaitable[Simulator]], stats_file: Path | None
) -> None:
    """Start a simulator, print ``listening HOST:PORT`` once, serve until SIGTERM or SIGINT.

    On the way out the simulator's ``stats()`` go to ``stats_file`` (if given), so a test
    can compare what was served with what a gateway stored.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sim = await start()
    try:
        sys.stdout.write(f"listening {sim.host}:{sim.port}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await sim.close()
        if stats_file is not None:
            write_stats(stats_file, sim.stats())
