"""The four scenarios: steady, saturation, outage then drain, SIGKILL during the drain.

Each takes a fresh ``Side`` (one gateway in its own work folder) and returns a flat dict of
numbers; ``report`` turns the rounds into the table.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compare.run import Run, Side
from bench.compare.site import Site


@dataclass(frozen=True)
class Plan:
    """Durations and loads of one comparison (``FULL`` or ``QUICK``)."""

    warmup_s: float = 5.0
    steady_s: float = 30.0
    ladder: tuple[float, ...] = (0.1, 0.01, 0.001)  # saturation: poll periods tried, s
    saturation_s: float = 10.0
    outage_s: float = 60.0
    kill_outage_s: float = 60.0
    kill_poll_s: float = 0.25  # 800 values/s while the broker is down: a 48k backlog
    kill_at: float = 0.25  # SIGKILL once this share of the backlog has arrived
    quiet_s: float = 5.0  # "delivered everything": no new value for this long
    drain_deadline_s: float = 180.0


FULL = Plan()
QUICK = Plan(warmup_s=1.0, steady_s=4.0, ladder=(0.001,), saturation_s=4.0, outage_s=10.0,
             kill_outage_s=4.0, quiet_s=1.5, drain_deadline_s=60.0)

MakeSide = Callable[[Path], Side]


async def steady(make: MakeSide, work: Path, site: Site, plan: Plan) -> dict[str, Any]:
    """200 points at 1 s: rate, CPU, RSS, bytes, latency; then every value accounted for."""
    async with Run(make(work), site) as run:
        await asyncio.sleep(plan.warmup_s)
        run.result |= await run.window(plan.steady_s, latency=True)
        run.result |= await run.finish(plan.quiet_s, plan.drain_deadline_s)
    return run.result


async def saturation(make: MakeSide, work: Path, site: Site, plan: Plan) -> dict[str, Any]:
    """Each poll period of the ladder in turn; the best delivered rate is the saturation."""
    rungs = []
    for poll in plan.ladder:
        async with Run(make(work / f"poll-{poll:g}"), site.polling(poll)) as run:
            await asyncio.sleep(plan.warmup_s)
            run.result |= await run.window(plan.saturation_s)
            run.result |= await run.finish(plan.quiet_s, plan.drain_deadline_s)
            run.result["delivered_share"] = 1 - run.result["lost"] / max(1, run.result["served"])
        rungs.append(run.result)
    best = max(rungs, key=lambda r: r["values_per_s"])
    return {**best, "ladder": rungs}


async def outage(make: MakeSide, work: Path, site: Site, plan: Plan) -> dict[str, Any]:
    """Broker down for ``outage_s`` under steady load, then time the backlog's drain."""
    async with Run(make(work), site) as run:
        await asyncio.sleep(plan.warmup_s)
        served, back = await _outage(run, plan.outage_s)
        await _drain(run, served, plan)
        t = run.tally
        drained = t.watch_seen and not t.missing(served)
        run.result |= {"first_after_s": t.watch_first - back if t.watch_seen else None,
                       "drain_s": t.watch_last - back if drained else None,
                       "drain_values_per_s": t.watch_seen / max(1e-3, t.watch_last - t.watch_first)}
        run.result |= await run.finish(plan.quiet_s, plan.drain_deadline_s)
        run.result["lost_backlog"] = t.missing(served)
    return run.result


async def kill(make: MakeSide, work: Path, site: Site, plan: Plan) -> dict[str, Any]:
    """Build a backlog, let it drain, SIGKILL the gateway part-way, restart it, count losses."""
    side = make(work)
    side.audit = True
    async with Run(side, site.polling(plan.kill_poll_s)) as run:
        await asyncio.sleep(plan.warmup_s)
        snaps: collections.deque[tuple[float, dict[str, int]]] = collections.deque(maxlen=40)
        sampler = asyncio.create_task(_sample(run, snaps))
        killed: list[float] = []

        def sigkill() -> None:
            run.gw.sigkill()
            killed.append(time.time())

        try:
            # the trigger is armed just before the broker returns, inside _outage
            served, back = await _outage(run, plan.kill_outage_s, lambda n: (
                max(1, int(n * plan.kill_at)), sigkill))
            await run.until(lambda: bool(killed), plan.drain_deadline_s, "kill during the drain")
            await run.gw.reap()
            at_kill = await run.served()
        finally:
            sampler.cancel()
        before = [s for t, s in snaps if t <= killed[0] - 1.0]
        run.result |= {"killed_after_s": killed[0] - back,
                       "backlog_seen_at_kill": run.tally.watch_seen}
        await run.gw.start()
        # values served in the last second before the kill may be gone: do not wait for them
        await _drain(run, before[-1] if before else at_kill, plan)
        run.result |= await run.finish(plan.quiet_s, plan.drain_deadline_s)
        run.result |= {"lost_backlog": run.tally.missing(served),
                       "lost_at_kill": run.tally.missing(at_kill),
                       "lost_older_1s": run.tally.missing(before[-1]) if before else None}
    if (committed := side.committed()) is not None:
        run.result |= {"committed": len(committed), "lost_committed": sum(
            not run.tally.has(key, value) for key, value in committed)}
    return run.result


async def _outage(run: Run, seconds: float,
                  trigger: Callable[[int], tuple[int, Callable[[], None]]] | None = None,
                  ) -> tuple[dict[str, int], float]:
    """Stop the broker for ``seconds``; returns what was served by its return, and when."""
    await asyncio.to_thread(run.broker.stop)
    await asyncio.sleep(seconds)
    served = await run.served()
    due = run.tally.watch_backlog(served)
    if trigger is not None:
        run.tally.trigger = trigger(due)
    run.result |= {"outage_s": seconds, "backlog": due}
    await asyncio.to_thread(run.broker.start)
    return served, time.time()


async def _drain(run: Run, must: Mapping[str, int], plan: Plan) -> None:
    """Wait until every value up to ``must`` arrived, or the deadline (then they count as lost).

    No "quiet for a while, so it is over" shortcut: our gateway keeps at most max_inflight
    batches unacknowledged, so its drain pauses until the receiver is back, which its own
    reconnect backoff may delay by up to 30 s.
    """
    deadline = time.monotonic() + plan.drain_deadline_s
    while run.tally.missing(must) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)


async def _sample(run: Run, snaps: collections.deque[tuple[float, dict[str, int]]]) -> None:
    while True:
        snaps.append((time.time(), await run.served()))
        await asyncio.sleep(0.25)
