"""Cancel a task in the loop step where a library's answer arrives: Python 3.11's wait_for race.

``asyncio.wait_for`` on 3.11 returns the answer instead of raising ``CancelledError`` when
both land in the same loop step (cimedge/stop.py). Left to chance that happens a few times in
a hundred stops; these hooks make it happen every time, through the libraries' own callbacks:
pymodbus's ``trace_pdu`` (called on an answer just before its future is resolved) and
paho's ``on_connect`` / ``on_subscribe`` / ``on_publish`` under aiomqtt.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest

from cimedge.drivers.modbus import tcp


class SameStep:
    """Cancels ``victim`` (once) in the loop step of the next answer after it is armed."""

    def __init__(self) -> None:
        self.victim: asyncio.Task[Any] | None = None
        self.fired = 0

    def arm(self, victim: asyncio.Task[Any]) -> None:
        self.victim = victim

    def answer(self) -> None:
        """An answer has just arrived (called from the library's own callback)."""
        victim, self.victim = self.victim, None
        if victim is not None and not victim.done():
            victim.cancel()
            self.fired += 1

    def modbus(self, monkeypatch: pytest.MonkeyPatch) -> SameStep:
        """Hook every Modbus TCP client the drivers make from now on."""
        real = tcp.AsyncModbusTcpClient

        def trace_pdu(sending: bool, pdu: Any) -> Any:  # noqa: FBT001 - pymodbus's signature
            if not sending:
                self.answer()
            return pdu

        monkeypatch.setattr(tcp, "AsyncModbusTcpClient",
                            lambda *a, **kw: real(*a, trace_pdu=trace_pdu, **kw))
        return self

    def mqtt(self, monkeypatch: pytest.MonkeyPatch, callback: str) -> SameStep:
        """Hook paho's ``callback`` (on_connect, on_subscribe, on_publish) of every aiomqtt
        client made from now on."""
        same_step = self

        class Hooked(aiomqtt.Client):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                paho = self._client
                real = getattr(paho, callback)

                def hooked(*cb_args: Any, **cb_kwargs: Any) -> None:
                    real(*cb_args, **cb_kwargs)
                    same_step.answer()

                setattr(paho, callback, hooked)

        monkeypatch.setattr(aiomqtt, "Client", Hooked)
        return self


async def stop(task: asyncio.Task[Any]) -> None:
    """Test clean-up that the bug under test cannot hang: cancel ``task``, and should a task
    it started have swallowed its cancellation, cancel every task left on the loop."""
    task.cancel()
    _, pending = await asyncio.wait({task}, timeout=10)
    if pending:
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task():
                t.cancel()
        await asyncio.wait({task}, timeout=10)
