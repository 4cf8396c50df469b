"""The processes of one run: helpers that answer on stdin (simulator, relay) and a gateway.

A gateway's CPU time and peak RSS come from /proc (utime + stime of the process and all its
threads; VmHWM), read by the harness while the process is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_TICK = os.sysconf("SC_CLK_TCK")


def our_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


class Helper:
    """A process that prints ``listening HOST:PORTS`` once, then answers each stdin line."""

    def __init__(self, proc: asyncio.subprocess.Process, ports: list[int]) -> None:
        self.proc, self.ports = proc, ports
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, args: Sequence[str], log: Path) -> Helper:
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, env=our_env(), cwd=REPO)
        assert proc.stdout is not None  # noqa: S101 - piped above
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line.startswith("listening "):
            raise RuntimeError(f"{args[1]} did not start: {line!r} (see {log})")
        return cls(proc, [int(p) for p in line.rsplit(":", 1)[1].split(",")])

    async def ask(self, command: str) -> dict:
        """Send one command line, return its JSON answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None  # noqa: S101
        async with self._lock:
            self.proc.stdin.write(command.encode() + b"\n")
            await self.proc.stdin.drain()
            return json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None  # noqa: S101
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Gateway:
    """One gateway process (ours or the peer); restartable after a kill."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path) -> None:
        self.argv, self.cwd, self.env, self.log = list(argv), cwd, dict(env), log
        self.proc: asyncio.subprocess.Process | None = None
        self.cpu_before = 0.0  # CPU of processes this object ran and that are gone (killed)
        self.hwm_max = 0
        self._gone = False  # killed: its CPU is in cpu_before, even before it is reaped

    async def start(self) -> None:
        self._gone = False
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=out, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101 - started
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self._gone

    def crashed(self) -> bool:
        """True when the process ended without being stopped or killed by us."""
        return self.proc is not None and self.proc.returncode is not None and not self._gone

    def cpu(self) -> float:
        """CPU seconds (user + system) of every run of this gateway so far."""
        return self.cpu_before + (_cpu(self.pid) if self.alive() else 0.0)

    def hwm(self) -> int:
        """Peak RSS in bytes of the running process (and of earlier runs, if higher)."""
        if self.alive():
            self.hwm_max = max(self.hwm_max, _hwm(self.pid))
        return self.hwm_max

    def sigkill(self) -> None:
        """SIGKILL now, from any callback; call ``reap`` afterwards."""
        self.hwm()
        self.cpu_before = self.cpu()
        os.kill(self.pid, signal.SIGKILL)
        self._gone = True

    async def reap(self) -> None:
        assert self.proc is not None  # noqa: S101
        await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; records CPU and peak RSS first."""
        if not self.alive():
            return
        self.hwm()
        self.cpu_before = self.cpu()
        self._gone = True
        assert self.proc is not None  # noqa: S101
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _hwm(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(ln.split()[1]) * 1024 for ln in text.splitlines()
                 if ln.startswith("VmHWM:")), 0)
