"""The gateway under test, driven only through `cimedge` as a technician would, and its backend.

Provisioning, the daemon, status, points and the receiver's stats are all subprocesses of
the installed CLI, so a scenario exercises exactly what runs on a real gateway.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hil_tests.rig import Rig

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def cimedge(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cimedge.provisioning.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def until(cond: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll ``cond()`` until it returns something true; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Daemon:
    """`cimedge ...` running in the background, its output in a log file."""

    def __init__(self, log: Path, *args: str | Path) -> None:
        self.log_path = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "cimedge.provisioning.cli",
                                          *map(str, args)], cwd=ROOT, stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Gateway:
    """One provisioned gateway on the rig: its state dir, daemon and backend."""

    def __init__(self, rig: Rig, state: Path) -> None:
        self.rig, self.state = rig, state
        self.dev = rig.spec.device_id
        self.daemon: Daemon | None = None
        self.receiver: Daemon | None = None
        self.provisioning: subprocess.CompletedProcess[str] | None = None  # its output

    def provision(self) -> subprocess.CompletedProcess[str]:
        template = self.state.with_name("site-template.toml")
        template.write_text(self.rig.site_template())
        args: list[str | Path] = [
            "provision", "--site-type", self.rig.spec.site.type, "--device-id", self.dev,
            "--state-dir", self.state, "--template", template, "--broker", self.rig.broker_url,
            "--location", f"HIL rig {self.rig.spec.name}"]
        if self.rig.ca_dir is not None:
            args += ["--ca-dir", self.rig.ca_dir]
        args += ["--backend", self._backend_keys()]
        for k, v in self.rig.template_values().items():
            args += ["--set", f"{k}={v}"]
        self.provisioning = cimedge(*args)
        return self.provisioning

    def _backend_keys(self) -> Path:
        """The backend's ingest key (the receiver signs v2 acks with it) and the
        backend.json listing it, which provisioning installs on the gateway."""
        keys = self.state.with_name("backend.json")
        if not keys.exists():
            out = cimedge("backend", "keygen", "--role", "ingest", "--key",
                          self.state.with_name("ingest.key"), "--backend", keys)
            assert out.returncode == 0, out.stderr
        return keys

    def start_backend(self) -> None:
        db, reg = self.state.with_name("receiver.sqlite"), self.state.with_name("registry.sqlite")
        self._backend_keys()
        out = cimedge("registry", "add", self.state / "enrollment.json", "--registry", reg)
        assert out.returncode == 0, out.stderr
        rx = self.receiver = Daemon(self.state.with_name("receiver.log"), "receiver", "run",
                                    "--broker", self.rig.backend_url, "--db", db,
                                    "--registry", reg, "--ingest-key",
                                    self.state.with_name("ingest.key"))
        until(lambda: " ready: " in rx.output() or rx.proc.poll() is not None, 20,
              "the receiver to subscribe")
        assert rx.proc.poll() is None, rx.output()

    def start(self) -> None:
        self.daemon = Daemon(self.state.with_name("gateway.log"), "run", "--config",
                             self.state / "site.toml")

    def stop(self) -> None:
        for d in (self.daemon, self.receiver):
            if d is not None:
                d.stop()

    # -- what a technician looks at ---------------------------------------------------------
    def json(self, *args: str | Path) -> Any:  # noqa: ANN401
        out = cimedge(*args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def status(self) -> Any:  # noqa: ANN401 - `cimedge status --json`
        return self.json("status", "--state-dir", self.state, "--json")

    def points(self) -> dict[str, dict[str, Any]]:
        return {p["point"]: p for p in self.json("points", "--state-dir", self.state, "--json")}

    def devices(self) -> dict[str, str]:
        d = self.status().get("daemon") or {}
        return {name: h["state"] for name, h in (d.get("devices") or {}).items()}

    def buffer(self) -> Any:  # noqa: ANN401 - `cimedge buffer inspect --json`
        return self.json("buffer", "inspect", "--state-dir", self.state, "--json")

    def received(self) -> Any:  # noqa: ANN401 - one device of `receiver stats --json`
        db = self.state.with_name("receiver.sqlite")
        if not db.exists():
            return {}
        return self.json("receiver", "stats", "--db", db, "--json")["devices"].get(self.dev, {})

    def tail(self, *args: str) -> list[dict[str, Any]]:
        out = cimedge("tail", "--state-dir", self.state, "--no-follow", "--json", *args)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]
