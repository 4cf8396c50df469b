"""Stopping cleanly: a signal stops the main coroutine within a deadline, every time.

Python 3.11's ``asyncio.wait_for`` returns the awaited result (or raises its error) instead of
``CancelledError`` when the cancellation and the answer arrive in the same loop step (CPython
gh-86296; 3.12 rebuilt wait_for on ``asyncio.timeout``). pymodbus 3.16 waits for every
response that way and aiomqtt 2.5 for connect, subscribe, publish and disconnect, so a task
cancelled at the wrong moment carried on as if nothing had happened, and the TaskGroup
waiting for it at shutdown waited forever. ``reraise_cancelled()`` after each such call
gives the cancellation back; ``run_until_signalled`` bounds the stop, so a case it misses is
a non-zero exit that names the task and where it waits, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STOP_WITHIN_S = 5.0  # from the signal to the process's exit
EXIT_STUCK = 70  # EX_SOFTWARE: the stop did not finish in time (a bug, named in the log)
_BACKSTOP_S = 1.0  # more, for a loop so blocked that the report itself cannot run
_ROOT = Path(__file__).resolve().parents[1]


def reraise_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and a library swallowed it.

    Call it right after an awaited library call that may use ``asyncio.wait_for`` (also
    where its error is handled: wait_for may raise the answer's error instead). Inside
    ``asyncio.timeout()`` the raised error becomes the usual ``TimeoutError`` when it was the
    timeout that cancelled.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def run_until_signalled(main: Coroutine[Any, Any, None], duration: float | None = None, *,
                        stop_within: float = STOP_WITHIN_S) -> None:
    """Run ``main``; SIGTERM, SIGINT or the end of ``duration`` cancel it for a clean stop.

    The stop has ``stop_within`` seconds. Past that, the log names every task still running
    and where it waits, and the process exits with status 70 (EX_SOFTWARE) instead of hanging;
    should the event loop itself be blocked, faulthandler dumps every thread a second later and
    exits with status 1.
    """

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - asyncio.run runs this in a task
        task.set_name("main")
        deadline: list[asyncio.TimerHandle] = []

        def stop() -> None:
            if not deadline:
                deadline.append(loop.call_later(stop_within, _stuck, stop_within, task))
                _arm_backstop(stop_within + _BACKSTOP_S)
            task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        if duration is not None:
            loop.call_later(duration, stop)
        try:
            await main
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            asyncio.run(runner())
    finally:
        faulthandler.cancel_dump_traceback_later()


def _arm_backstop(seconds: float) -> None:
    """Dump every thread and exit 1 after ``seconds``, from a thread of faulthandler's own."""
    with contextlib.suppress(OSError, ValueError, RuntimeError, AttributeError):
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)


def _stuck(stop_within: float, main: asyncio.Task[Any]) -> None:
    """The stop overran: say what it still waits for, then exit without waiting more."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t is not main)
    log.error("the stop did not finish within %g s; still running: %s", stop_within,
              "; ".join(f"{t.get_name()} at {where(t)}" for t in tasks) or "no task")
    logging.shutdown()  # flush the report: os._exit skips every handler
    sys.stderr.flush()
    os._exit(EXIT_STUCK)


def where(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: its chain of awaits, outermost first, each as function (file:line)."""
    steps: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(steps) < 30:  # noqa: PLR2004 - a bound for odd chains
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            if isinstance(awaited, asyncio.Task):
                steps.append(f"awaiting task {awaited.get_name()}")
            elif isinstance(awaited, asyncio.Future):
                steps.append(f"awaiting a {type(awaited).__name__}")
            break
        code = frame.f_code
        steps.append(f"{code.co_name} ({_short(code.co_filename)}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(steps) or "?"


def _short(filename: str) -> str:
    """A path from the repository, site-packages or the standard library, not the machine's."""
    path = Path(filename)
    if "site-packages" in path.parts:
        return "/".join(path.parts[path.parts.index("site-packages") + 1:])
    with contextlib.suppress(ValueError):
        return str(path.relative_to(_ROOT))
    return "/".join(path.parts[-2:])
