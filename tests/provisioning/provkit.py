"""Helpers for the technician-CLI tests: `cimedge` run as a user would, and its simulators."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
NOBODY = pwd.getpwnam("nobody")


def cimedge(*args: str | Path, env: dict[str, str] | None = None, as_nobody: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `cimedge ARGS` in a subprocess; as the unprivileged user nobody when asked."""
    cmd = [sys.executable, "-m", "cimedge.provisioning.cli", *map(str, args)]
    if as_nobody:
        cmd = [shutil.which("setpriv") or "setpriv", f"--reuid={NOBODY.pw_uid}",
               f"--regid={NOBODY.pw_gid}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


class Process:
    """A simulator run as `python -m MODULE ARGS` whose first stdout line names its endpoint."""

    def __init__(self, module: str, *args: str, log: Path | None = None) -> None:
        self.log = open(log or os.devnull, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline().strip()
        if not self.first_line:
            raise RuntimeError(f"{module} did not start (exit {self.proc.poll()})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def pump_station(speed: float = 0.0) -> tuple[Process, int]:
    p = Process("cimedge.tools.sim.pump_station", "--port", "0", "--speed", str(speed))
    return p, int(p.first_line.rsplit(":", 1)[1])


def rtu_bus(units: str = "1,2") -> tuple[Process, str]:
    p = Process("cimedge.tools.sim.rtu_bus", "--units", units)
    return p, p.first_line.split()[1]


def wait_for(cond, timeout: float = 20.0, what: str = "condition"):  # noqa: ANN001, ANN201
    """Poll ``cond()`` every 50 ms until it returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


TEMPLATE = """\
# A test site: the pump-station simulator over Modbus TCP and two units on an RTU line.
[gateway]
device_id = "$device_id"
site_type = "pump_station"
key_file = "device.key"

[store]
path = "buffer.sqlite"
quota_bytes = 50000000

[sync]
broker = "$broker"
flush_interval_s = 0.3
ack_timeout_s = 2.0

[devices.ps1]
driver = "modbus"
host = "127.0.0.1"
port = $ps1_port
poll_interval_s = 0.2

[devices.ps1.points.level]
table = "input"
address = 0
dtype = "float32"
unit = "m"

[devices.ps1.points.pump_running]
table = "discrete"
address = 0
dtype = "bool"

[devices.m1]
driver = "modbus"
transport = "rtu"
port = "$rtu_port"
unit = 1
poll_interval_s = 0.5

[devices.m1.points.v]
table = "input"
address = 3
dtype = "uint16"
unit = "V"

[devices.m2]
driver = "modbus"
transport = "rtu"
port = "$rtu_port"
unit = 2
poll_interval_s = 0.5

[devices.m2.points.v]
table = "input"
address = 3
dtype = "uint16"
unit = "V"
"""


class Cli:
    """A long-running `cimedge ...` (the gateway, the receiver) with its output in a log file."""

    def __init__(self, log: Path, *args: str | Path) -> None:
        self.log_path = log
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cimedge.provisioning.cli", *map(str, args)], cwd=ROOT,
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, expect: int | None = 0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if expect is not None:
            assert self.proc.returncode == expect, self.output()


class Backend:
    """The reference receiver and its registry, on the broker's plain loopback listener."""

    def __init__(self, work: Path, broker_url: str, *enrollments: Path,
                 options: tuple[str | Path, ...] = (), ingest_key: Path | None = None) -> None:
        self.db, self.registry = work / "receiver.sqlite", work / "registry.sqlite"
        for e in enrollments:
            self.enroll(e)
        if ingest_key is not None:  # acks to v2 gateways are signed with it
            options = (*options, "--ingest-key", ingest_key)
        self.proc = Cli(work / "receiver.log", "receiver", "run", "--broker", broker_url,
                        "--db", self.db, "--registry", self.registry, *options)
        wait_for(lambda: " ready: " in self.proc.output() or self.proc.proc.poll() is not None,
                 what="the receiver to subscribe")
        assert self.proc.proc.poll() is None, self.proc.output()

    def enroll(self, enrollment: Path, *, rotate_after: int | None = None) -> None:
        args = ["registry", "add", enrollment] if rotate_after is None else \
            ["registry", "rotate", enrollment, "--after-seq", str(rotate_after)]
        out = cimedge(*args, "--registry", self.registry)
        assert out.returncode == 0, out.stderr

    def stats(self, dev: str) -> dict:
        import json

        if not self.db.exists():
            return {}
        out = cimedge("receiver", "stats", "--db", self.db, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["devices"].get(dev, {})


def status(state: Path) -> dict:
    import json

    out = cimedge("status", "--state-dir", state, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
