"""Rules: evaluation cost per reading (200 points, 400 rules) and tick-to-action latency.

    python -m bench.rules_bench [--ticks 3000] [--cycles 20] [--period 0.5]

Part 1 feeds ticks of 200 readings (a random walk per point) to ``Rules.evaluate`` with
400 rules: per point one high threshold with hysteresis, and, in turn, a low threshold
with an on-delay, a rate of change, a stale watch or a state rule; plus 20 all/any
combinations on top (not counted in the 400). It prints microseconds per reading,
median and p99 over ticks (tick time / 200), and the same with the report-by-exception
filter (``Controller.tick`` minus the commit).

Part 2 runs the daemon's own poll task (``edge.poller.poll_device``) and control task
(``Controller.run``) against the two-pump station simulator over Modbus TCP with a real
SQLite buffer; the test sets the wet-well level across 3.5 m (and back under 1.2 m) at a
random moment, and measures from the end of the poll that read the crossing to the end
of the verified coil write (write and read-back). Target: within one poll period.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cimedge.edge import config, sites
from cimedge.edge.control import Controller
from cimedge.edge.model import Quality, Reading
from cimedge.edge.rbe import PointReport, Rbe, ReportConfig
from cimedge.edge.rules import AllOf, AnyOf, Rate, Rules, Stale, State, ThresholdHigh, ThresholdLow

S = 1_000_000_000
T0 = 1_767_225_600 * S


def build(points: int = 200) -> tuple[list[str], dict[str, Any]]:
    names = [f"dev{p // 20}.p{p}" for p in range(points)]
    rules: dict[str, Any] = {}
    for i, n in enumerate(names):
        rules[f"hi{i}"] = ThresholdHigh(point=n, on=80.0, off=70.0)
        second = i % 4
        if second == 0:
            rules[f"lo{i}"] = ThresholdLow(point=n, on=20.0, deadband=5.0, on_delay_s=5)
        elif second == 1:
            rules[f"roc{i}"] = Rate(point=n, window_s=30, rise=15.0)
        elif second == 2:
            rules[f"stale{i}"] = Stale(point=n, after_s=30)
        else:
            rules[f"st{i}"] = State(point=n, equals=50.0, alarm=False)
    for k in range(10):
        rules[f"all{k}"] = AllOf(of=[f"hi{k}", f"!hi{k + 1}"])
        rules[f"any{k}"] = AnyOf(of=[f"hi{k + 20}", f"roc{4 * k + 1}"])
    return names, rules


def ticks(names: list[str], n: int, seed: int = 1) -> list[list[Reading]]:
    rng = random.Random(seed)
    values = [rng.uniform(30, 70) for _ in names]
    out = []
    for t in range(n):
        ts = T0 + t * S
        tick = []
        for i, name in enumerate(names):
            values[i] = min(100.0, max(0.0, values[i] + rng.gauss(0, 2.5)))
            tick.append(Reading(name, ts, values[i], Quality.GOOD))
        out.append(tick)
    return out


def per_reading(n_ticks: int) -> None:
    names, cfg = build()
    rules = Rules(cfg)
    data = ticks(names, n_ticks)
    rbe = Rbe(ReportConfig(points={f"dev{d}": {f"p{p}": PointReport(deadband=1.0,
                                                                     max_interval_s=60)
                                               for p in range(20 * d, 20 * d + 20)}
                                   for d in range(10)}))
    for label, fn in (("rules", lambda tk: rules.evaluate(tk, tk[0].ts_ns)),
                      ("rules + rbe", lambda tk: (rules.evaluate(tk, tk[0].ts_ns),
                                                  rbe.keep(tk)))):
        rules = Rules(cfg)
        wall, cpu, events = [], [], 0
        for tk in data:
            t, c = time.perf_counter_ns(), time.thread_time_ns()
            out = fn(tk)
            cpu.append((time.thread_time_ns() - c) / len(tk) / 1000)
            wall.append((time.perf_counter_ns() - t) / len(tk) / 1000)
            events += len(out[0]) if label == "rules" else len(out[0][0])
        for kind, times in (("wall", wall), ("cpu", cpu)):
            times = sorted(times[len(times) // 10:])  # after a warm-up
            print(f"{label:<12} {kind:<5} per reading: median {statistics.median(times):.2f} us, "
                  f"p99 {times[int(len(times) * 0.99)]:.2f} us, "
                  f"mean {statistics.fmean(times):.2f} us")
        print(f"{'':<12} ({len(names)} points, {len(cfg) - 20} rules + 20 all/any, "
              f"{events} events over {len(data)} ticks)")


async def latency(cycles: int, period: float) -> None:
    from cimedge.edge.poller import PollStats, poll_device
    from cimedge.edge.store import Store
    from cimedge.tools.sim import pump_pair

    from cimedge import drivers
    pp = await pump_pair.serve(speed=0)
    assert pp.station is not None
    text = sites.render("pump_station", {
        "broker": "mqtt://127.0.0.1:1", "poll_s": period, "ps1_host": "127.0.0.1",
        "ps1_port": pp.station.port, "ps2_host": "127.0.0.1", "ps2_port": pp.standby.port,
        "pump_min_run_s": 0, "pump_min_rest_s": 0, "pump_max_starts": 0})
    tmp = Path(tempfile.mkdtemp())
    (tmp / "site.toml").write_text(text)
    site = config.load(tmp / "site.toml")
    seen: dict[str, float] = {}
    done: list[float] = []

    class Timed:
        """The real driver, with the end of each read and write timed."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def read(self) -> list[Reading]:
            out = await self.inner.read()
            for r in out:
                if r.point == "ps1.level" and "t" not in seen and isinstance(r.value, float) \
                        and (r.value >= 3.5 or r.value <= 1.2) and seen.get("want") == (
                            r.value >= 3.5):
                    seen["t"] = time.perf_counter()
            return out

        async def write(self, point: str, value: Any) -> None:
            await self.inner.write(point, value)
            if point == "pump_cmd" and "t" in seen:
                done.append(time.perf_counter() - seen.pop("t"))

        def health(self) -> Any:
            return self.inner.health()

    async with Store(tmp / "buffer.sqlite") as store:
        opened = {}
        for name, dev in site.devices.items():
            opened[name] = Timed(await drivers.load("modbus").Driver(name, dev.config)
                                 .__aenter__())
        ctl = await Controller.open(site, opened, store)
        last: dict[str, Reading] = {}
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(ctl.run())]
            for name, drv in opened.items():
                tasks.append(tg.create_task(poll_device(name, drv, period, store, ctl, last,
                                                        lambda: None, None, PollStats())))
            rng = random.Random(3)
            await asyncio.sleep(3 * period)
            for i in range(2 * cycles):
                up = i % 2 == 0
                await asyncio.sleep(rng.uniform(0, period))  # cross at a random phase
                seen["want"] = up
                pp.state.level = 3.7 if up else 1.0
                n = len(done)
                async with asyncio.timeout(10 * period + 5):
                    while len(done) == n:
                        await asyncio.sleep(0.005)
                seen.pop("want")  # until the next crossing, no read starts a measurement
            for t in tasks:
                t.cancel()
        for drv in opened.values():
            await drv.inner.__aexit__(None, None, None)
    await pp.close()
    ms = sorted(d * 1000 for d in done)
    print(f"tick-to-action over Modbus TCP, poll period {period * 1000:.0f} ms, {len(ms)} "
          f"crossings: median {statistics.median(ms):.1f} ms, p99/max {ms[-1]:.1f} ms "
          f"(within one period: {all(m < period * 1000 for m in ms)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ticks", type=int, default=3000)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--period", type=float, default=0.5)
    args = p.parse_args()
    per_reading(args.ticks)
    asyncio.run(latency(args.cycles, args.period))


if __name__ == "__main__":
    main()
