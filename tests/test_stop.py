"""run_until_signalled: a clean stop exits 0; a stop that overruns names its tasks and exits 70."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from cimedge.stop import EXIT_STUCK

MAIN = """
import asyncio, time
from cimedge.stop import run_until_signalled

async def well_behaved():
    await asyncio.sleep(3600)

async def stubborn():
    while True:  # swallows every cancellation, as 3.11's wait_for can swallow one
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

async def blocking():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        time.sleep(3600)  # blocks the event loop itself
        raise

async def main():
    async with asyncio.TaskGroup() as tg:
        tg.create_task({kind}(), name="poll[{kind}]")
        print("ready", flush=True)

run_until_signalled(main(), {duration}, stop_within=0.5)
print("returned", flush=True)
"""


def run(kind: str, duration: float | None = None) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(MAIN).format(kind=kind, duration=duration)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        if duration is None:
            assert p.stdout.readline() == "ready\n"
            p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.mark.parametrize("duration", [None, 0.2], ids=["sigterm", "duration"])
def test_a_clean_stop_returns_and_exits_0(duration: float | None) -> None:
    p = run("well_behaved", duration)
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout.endswith("returned\n")


def test_a_stop_past_its_deadline_names_each_task_and_where_it_waits() -> None:
    p = run("stubborn")
    assert p.returncode == EXIT_STUCK
    assert "returned" not in p.stdout
    assert "the stop did not finish within 0.5 s; still running: " in p.stderr
    assert "poll[stubborn] at stubborn (<string>:" in p.stderr
    assert "sleep (asyncio/tasks.py:" in p.stderr  # the await chain, down to the library


def test_a_blocked_event_loop_still_exits_with_every_thread_dumped() -> None:
    p = run("blocking")
    assert p.returncode == 1  # faulthandler's exit: the loop could not run the report
    assert "Timeout (0:00:01.500000)!" in p.stderr
    assert 'File "<string>", line ' in p.stderr and "in blocking" in p.stderr
