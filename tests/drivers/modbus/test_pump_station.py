"""The pump-station simulator: its physics cycles, its counter, and its subprocess mode."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import signal
import sys
from pathlib import Path

import msgspec

from cimedge.drivers.modbus import DeviceConfig, Driver
from cimedge.edge.model import Quality
from cimedge.tools.sim.pump_station import StationState, demo_device, serve, step

ROOT = Path(__file__).parents[3]


def run(state: StationState, seconds: float, dt: float = 0.05) -> list[float]:
    """Step the physics; the simulated times at which the pump started."""
    rng, starts, t = random.Random(7), [], 0.0
    while t < seconds:
        before = state.pump_starts
        step(state, dt, rng)
        t += dt
        if state.pump_starts > before:
            starts.append(t)
    return starts


def test_float_switch_cycles_about_every_40_seconds() -> None:
    s, rng, levels = StationState(), random.Random(3), []
    for _ in range(int(300 / 0.05)):
        step(s, 0.05, rng)
        levels.append(s.level)
    assert 0.9 < min(levels[400:]) < 1.0 and 3.8 < max(levels) < 3.9  # between the switches
    starts = run(StationState(), 300)
    periods = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 6
    assert 35 < sum(periods) / len(periods) < 45


def test_pump_running_shows_in_current_and_pressure() -> None:
    s = StationState(level=3.9)
    step(s, 0.05, random.Random(1))
    assert s.running and 10 < s.current < 14 and s.pressure > 2
    s = StationState(level=0.5)
    step(s, 0.05, random.Random(1))
    assert not s.running and s.current < 0.2 and s.pressure < 0.5


def test_manual_mode_obeys_the_command_and_can_run_dry() -> None:
    s = StationState(manual=True, command=True, level=0.3)
    run(s, 10)
    assert s.running and s.level < 0.05
    assert 4 < s.current < 8  # running dry draws less current


async def test_station_cycles_in_real_time_when_sped_up() -> None:
    station = await serve(speed=40)  # about one cycle per second
    try:
        async with asyncio.timeout(8):
            while station.stats()["pump_starts"] < 2:
                await asyncio.sleep(0.05)
    finally:
        await station.close()


async def test_counter_continues_from_counter_start() -> None:
    station = await serve(speed=0, counter_start=41)
    cfg = msgspec.convert(demo_device(port=station.port), DeviceConfig)
    try:
        async with Driver("ps1", cfg) as driver:
            counter = next(r for r in await driver.read() if r.point == "ps1.counter")
        assert counter.value == 42
        assert station.served_values() == [42]
        assert station.stats()["first"] == 42
    finally:
        await station.close()


async def test_subprocess_prints_its_port_and_writes_stats_on_sigterm(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cimedge.tools.sim.pump_station", "--port", "0", "--speed", "0",
        "--stats-file", str(stats), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        match = re.fullmatch(r"listening 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        cfg = msgspec.convert(demo_device(port=int(match[1])), DeviceConfig)
        async with Driver("ps1", cfg) as driver:
            for _ in range(3):
                assert all(r.quality is Quality.GOOD for r in await driver.read())
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest, _ = await proc.communicate()
        assert proc.returncode == 0
        assert rest == b""  # exactly one line on stdout
        assert json.loads(stats.read_text())["served"] == 3
        assert json.loads(stats.read_text())["last"] == 3
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
