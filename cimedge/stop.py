"""Re-raising cancellations that Python 3.11's ``asyncio.wait_for`` swallowed.

Python 3.11's ``asyncio.wait_for`` returns the awaited result (or raises its error) instead of
``CancelledError`` when the cancellation and the answer arrive in the same loop step (CPython
gh-86296; 3.12 rebuilt wait_for on ``asyncio.timeout``). pymodbus 3.16 waits for every
response that way and aiomqtt 2.5 for connect, subscribe, publish and disconnect, so a task
cancelled at the wrong moment carried on as if nothing had happened, and the TaskGroup
waiting for it at shutdown waited forever. ``reraise_cancelled()`` after each such call
gives the cancellation back.
"""

from __future__ import annotations

import asyncio


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
