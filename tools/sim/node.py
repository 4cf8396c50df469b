"""A sensor node for tests, the HIL rig and the demo: the real firmware, not an imitation of it.

The firmware in ``firmware/`` runs under the MicroPython WebAssembly port (Node.js and the
npm package ``@micropython/micropython-webassembly-pyscript``, installed by scripts/bootstrap
into ``firmware/node_modules``), its UART joined to a pseudo-terminal whose other end, ``port``
(``/dev/pts/N``), a Modbus RTU master opens like any serial port. The node's flash is a
directory: a boot sees what the last one wrote, and killing the process is a power cut.

This object is the board's power supply and watchdog: it restarts the firmware after a soft
reset, after a power cut it injected, and when the firmware stops feeding its watchdog (the
firmware's reset cause then reads "wdt").

    with SimNode(tmp / "flash", channels=2) as node:
        node.set_value(0, 1234)
        client = ModbusSerialClient(node.port)     # or drivers.modbus with transport = "rtu"

Run one from a shell: ``python -m cimedge.tools.sim.node --flash DIR`` prints ``pty /dev/pts/N``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
HOST = FIRMWARE / "host" / "run_node.mjs"
EXIT_RESET = 75
EXIT_NOT_BOOTABLE = 3


class NodeError(RuntimeError):
    """The simulated node did not do what was asked in time."""


def fwimage() -> ModuleType:
    """``firmware/host/fwimage.py`` (the firmware tree is not an installed package)."""
    name = "cimedge_fwimage"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIRMWARE / "host" / "fwimage.py")
        assert spec is not None  # noqa: S101  # ships with this file
        assert spec.loader is not None  # noqa: S101
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def sim_board(channels: int = 2, *, unit: int = 1, wdt_ms: int = 3000,
              confirm_s: int = 2) -> dict[str, Any]:
    """A ``board.json`` for the simulator: ``channels`` simulated sensor channels."""
    return {"unit": unit, "uart": {}, "channels": [{"kind": "sim"}] * channels,
            "wdt_ms": wdt_ms, "confirm_s": confirm_s, "grace_ms": 0}


def provision(flash: Path, board: dict[str, Any], pub: bytes | None = None, *,
              mpy: bool = False) -> None:
    """Lay out a freshly flashed node in directory ``flash`` (emptied first)."""
    if flash.exists():
        shutil.rmtree(flash)
    flash.mkdir(parents=True)
    fw = fwimage()
    fw.write_flash(flash, fw.flash_files(board, pub, mpy=mpy))


def node_binary() -> str:
    """The Node.js executable, or NodeError."""
    found = shutil.which("node")
    if found is None:
        msg = "Node.js is not installed (scripts/bootstrap needs it for the node simulator)"
        raise NodeError(msg)
    if not (FIRMWARE / "node_modules" / "@micropython").is_dir():
        msg = "firmware/node_modules is missing: run scripts/bootstrap (npm ci in firmware/)"
        raise NodeError(msg)
    return found


class SimNode:
    """One simulated node; see the module docstring. Not thread-safe: one owner drives it."""

    def __init__(self, flash: Path, *, channels: int | None = 2,  # noqa: PLR0913
                 board: dict[str, Any] | None = None, pub: bytes | None = None,
                 mpy: bool = False, log: Path | None = None) -> None:
        """Provision ``flash`` unless ``channels`` and ``board`` are both None (keep it)."""
        self.flash = Path(flash)
        if board is not None or channels is not None:
            provision(self.flash, board or sim_board(channels or 0), pub, mpy=mpy)
        self.log_path = log or self.flash.with_name(self.flash.name + ".log")
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF rewriting, before any client opens it
        self.port = os.ttyname(self.slave)
        self.boots: list[str] = []  # reset cause of every boot so far
        self.exits: list[int] = []  # exit status of every ended boot
        self.values: dict[int, Any] = {}
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._ready = False
        self._dead = ""
        self._wdt_ms = 0
        self._fed = 0.0
        self._closing = False
        self._off = False
        self._cut_reboot = True
        self._killed_for: str | None = None
        self._log = self.log_path.open("ab")
        self._watchdog = threading.Thread(target=self._watch, name="sim-node-wdt", daemon=True)

    # ---- power -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        """Power on and wait until the firmware serves; returns the PTY path."""
        self._boot("power")
        self._watchdog.start()
        self.wait_ready(timeout)
        return self.port

    def _boot(self, cause: str, cut: dict[str, Any] | None = None) -> None:
        with self._cond:
            self._ready, self._dead, self._wdt_ms, self._killed_for = False, "", 0, None
            self.boots.append(cause)
            proc = subprocess.Popen(  # noqa: S603  # our own script
                [node_binary(), str(HOST), "--flash", str(self.flash),
                 "--uart-fd", str(self.master), "--reset-cause", cause,
                 *(["--cut", json.dumps(cut)] if cut else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                pass_fds=(self.master,),
            )
            self._proc = proc
        for name, val in self.values.items():
            self._send({"cmd": "set", "ch": name, "value": val}, proc)
        threading.Thread(target=self._read, args=(proc,), name="sim-node", daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None  # noqa: S101  # opened with PIPE
        for raw in proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            self._event(ev)
        code = proc.wait()
        with self._cond:
            self.exits.append(code)
            cause = self._after_exit(code)
            self._cond.notify_all()
        if cause is not None:
            self._boot(cause)

    def _event(self, ev: dict[str, Any]) -> None:
        with self._cond:
            kind = ev.get("ev")
            if kind == "feed":
                self._fed = time.monotonic()
            elif kind == "wdt":
                self._wdt_ms, self._fed = int(ev["ms"]), time.monotonic()
            elif kind == "ready":
                self._ready = True
            elif kind == "dead":
                self._dead = str(ev.get("error", "boot failed"))
            elif kind == "reply":
                self._replies[int(ev["id"])] = ev
            self._cond.notify_all()

    def _after_exit(self, code: int) -> str | None:
        # Which boot follows this exit: the reset cause, or None for no further boot.
        if self._closing:
            return None
        if self._off:
            return None
        if self._killed_for is not None:
            return self._killed_for
        if code == EXIT_RESET:
            return "soft"
        if code == -signal.SIGKILL:  # a power cut the firmware's host injected ("cut")
            return "power" if self._cut_reboot else None
        if code == EXIT_NOT_BOOTABLE and not self._dead:
            self._dead = "boot failed"
        return None

    def _watch(self) -> None:
        while not self._closing:
            time.sleep(0.05)
            with self._cond:
                proc, ms = self._proc, self._wdt_ms
                starved = ms and (time.monotonic() - self._fed) * 1000 > ms
                if starved and proc is not None and proc.poll() is None:
                    self._killed_for, self._wdt_ms = "wdt", 0
                    proc.kill()

    def power_off(self) -> None:
        """Cut the power and leave it off (the flash directory may then be edited)."""
        with self._cond:
            proc = self._proc
            self._killed_for, self._off = None, True
        if proc is not None and proc.poll() is None:
            proc.kill()
        self._wait(lambda: proc is None or len(self.exits) >= len(self.boots), 10.0, "power off")

    def power_on(self, timeout: float = 10.0, *, cut: dict[str, Any] | None = None,
                 reboot: bool = True) -> None:
        """Power on after ``power_off()`` and wait until it serves.

        ``cut`` (``{"path": "b/app.py", "after": 100}`` or ``{"path": ..., "op": "rename"}``)
        arms a power cut from the first instruction, for what the loader does at boot; the call
        then returns at once, and ``reboot`` says whether power comes back after the cut.
        """
        self._off = False
        if cut is None:
            self._boot("power")
            self.wait_ready(timeout)
            return
        self._cut_reboot = reboot
        self._boot("power", {**cut, "path": "/flash/" + cut["path"]})

    def power_cycle(self, timeout: float = 10.0) -> None:
        """Cut the power, then power on again and wait until it serves."""
        with self._cond:
            proc = self._proc
            self._killed_for = "power"
        if proc is not None:
            proc.kill()
        self.wait_boot(len(self.boots) + 1, timeout)
        self.wait_ready(timeout)

    def wait_off(self, timeout: float = 10.0) -> None:
        """Wait until the current boot has ended (after a power cut that does not reboot)."""
        self._wait(lambda: len(self.exits) >= len(self.boots), timeout, "the node to stop")
        self._off = True

    def wait_boot(self, n: int, timeout: float = 10.0) -> None:
        """Wait until boot number ``n`` (1 is the first) has started."""
        self._wait(lambda: len(self.boots) >= n, timeout, f"boot {n}")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the current boot serves; NodeError if it failed to boot."""
        self._wait(lambda: self._ready or bool(self._dead), timeout, "the firmware to serve")
        if self._dead:
            msg = f"the node did not boot: {self._dead} (log: {self.log_path})"
            raise NodeError(msg)

    def _wait(self, done: Any, timeout: float, what: str) -> None:  # noqa: ANN401
        with self._cond:
            if not self._cond.wait_for(done, timeout):
                msg = f"timed out after {timeout} s waiting for {what} (log: {self.log_path})"
                raise NodeError(msg)

    # ---- control -----------------------------------------------------------------------------

    def _send(self, cmd: dict[str, Any], proc: subprocess.Popen[bytes] | None = None) -> int:
        with self._cond:
            proc = proc or self._proc
            self._next_id += 1
            ident = self._next_id
        assert proc is not None  # noqa: S101  # started
        assert proc.stdin is not None  # noqa: S101  # opened with PIPE
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps({"id": ident, **cmd}).encode() + b"\n")
            proc.stdin.flush()
        return ident

    def command(self, cmd: dict[str, Any], timeout: float = 10.0) -> Any:  # noqa: ANN401
        """Send a host command and return its reply's value; NodeError on failure."""
        ident = self._send(cmd)
        self._wait(lambda: ident in self._replies, timeout, f"the reply to {cmd['cmd']}")
        reply = self._replies.pop(ident)
        if not reply["ok"]:
            msg = f"{cmd['cmd']} failed: {reply['error']}"
            raise NodeError(msg)
        return reply.get("value")

    def exec(self, code: str) -> Any:  # noqa: ANN401
        """Run ``code`` inside the firmware's interpreter; the value it leaves in ``_r``."""
        return self.command({"cmd": "exec", "code": "_r = None\n" + code})

    def set_value(self, channel: int, value: float | str | None) -> None:
        """What channel ``channel``'s sensor reads from now on (kept across boots).

        A number; None for a sensor that does not answer; "crash" for a bug that kills the
        sampler task; "hang" for a driver that never returns (the interpreter stalls).
        """
        self.values[channel] = value
        self.command({"cmd": "set", "ch": channel, "value": value})

    def arm_power_cut(self, path: str, *, after: int = 0, op: str = "write",
                      reboot: bool = True) -> None:
        """Cut the power when byte ``after`` of flash file ``path`` is written, or at its rename.

        ``path`` is relative to the flash root (``config.new``). The node boots again by itself
        unless ``reboot`` is False (then ``wait_off()``, look at the flash, ``power_on()``).
        """
        self._cut_reboot = reboot
        self.command({"cmd": "cut", "path": "/flash/" + path, "after": after, "op": op})

    def heap(self) -> dict[str, int]:
        """Heap in use and free after a collection, in bytes."""
        heap: dict[str, int] = json.loads(self.exec(
            "import gc, json\ngc.collect()\n"
            "_r = json.dumps({'alloc': gc.mem_alloc(), 'free': gc.mem_free()})"))
        return heap

    # ---- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the firmware and release the pseudo-terminal."""
        with self._cond:
            self._closing = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()

    def __enter__(self) -> Self:
        """Power on."""
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Power off."""
        self.close()


def main(argv: list[str] | None = None) -> int:
    """Run one simulated node until SIGTERM or Ctrl-C."""
    p = argparse.ArgumentParser(description="Run the sensor-node firmware on a pseudo-terminal.")
    p.add_argument("--flash", type=Path, required=True, metavar="DIR",
                   help="the node's flash; provisioned fresh unless --keep")
    p.add_argument("--keep", action="store_true", help="boot what DIR holds")
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--unit", type=int, default=1)
    a = p.parse_args(argv)
    board = None if a.keep else sim_board(a.channels, unit=a.unit)
    node = SimNode(a.flash, channels=None if a.keep else a.channels, board=board)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(f"pty {node.start()}", flush=True)
        stop.wait()
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
