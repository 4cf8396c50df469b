"""Crash test: SIGKILL the gateway (or the receiver) N times under load, then count the losses.

    python -m cimedge.tools.crashtest --kills 50                 # kill the gateway
    python -m cimedge.tools.crashtest --kills 50 --target receiver
    python -m cimedge.tools.crashtest --kills 200 --signal term  # stop it cleanly, 200 times

It runs a private mosquitto, the pump-station simulator, `cimedge receiver run` and
`cimedge run` as separate processes, all on loopback. The simulator's counter register
makes every served value unique; the gateway runs with CIMEDGE_STORE_AUDIT=1, which
copies each committed reading into an audit table in the same transaction. At the end the
simulator is stopped, the gateway drains, and the tool prints:

    served     values the simulator answered
    committed  values the gateway's store committed (a poll in flight at a kill is not)
    stored     distinct values the receiver stored
    lost       committed but not stored        (target 0)
    duplicated stored more than once           (target 0)
    unclean    with --signal term: stops that did not exit 0 (target 0; the daemon's own
               deadline, cimedge/stop.py, turns a stop that hangs into exit status 70)

Exit status 0 only when lost, duplicated and unclean are all 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cimedge.provisioning.demo import DEVICE_ID, site_toml
from cimedge.provisioning.backend import DEMO_INGEST_KEY, ensure_demo_keys
from cimedge.provisioning.identity import ensure_identity
from cimedge.tools.broker import Mosquitto

COUNTER = f"{DEVICE_ID}:ps1.counter"
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}
STOP_GUARD_S = 60.0  # far past the daemon's own 5 s stop deadline: only a bug gets here
HUNG = -1000  # the exit status recorded for a process that had to be killed after the guard


class Rig:
    """The processes of one crash run, each restartable."""

    def __init__(self, work: Path, poll: float) -> None:
        self.work, self.poll = work, poll
        self.broker = Mosquitto(workdir=work / "mosquitto")
        (work / "mosquitto").mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "CIMEDGE_STORE_AUDIT": "1"}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=log,
                             stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        self.procs[name] = p
        return p

    def start(self) -> None:
        self.broker.start()
        sim = self._spawn("sim", ["-m", "cimedge.tools.sim.pump_station", "--port", "0", "--speed", "4",
                                  "--stats-file", str(self.work / "sim-stats.json")])
        line = sim.stdout.readline().decode() if sim.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"simulator did not start: {line!r}")
        port = int(line.rsplit(":", 1)[1])
        _, self.enrollment = ensure_identity(self.work, DEVICE_ID, "pump_station")
        ensure_demo_keys(self.work)  # the backend's ingest key: signed acks for a v2 gateway
        (self.work / "site.toml").write_text(
            site_toml(self.broker.url, port, poll=self.poll, flush=0.2, ack_timeout=2.0))
        self.start_receiver()
        self.start_gateway()

    def start_gateway(self) -> None:
        self._spawn("gateway", ["-m", "cimedge.provisioning.cli", "run", "--config",
                                str(self.work / "site.toml")])

    def start_receiver(self) -> None:
        self._spawn("receiver", ["-m", "cimedge.provisioning.cli", "receiver", "run", "--broker",
                                 self.broker.url, "--db", str(self.work / "receiver.sqlite"),
                                 "--registry", str(self.work / "registry.sqlite"),
                                 "--enroll", str(self.enrollment), "--client-id", "crash-rx",
                                 "--ingest-key", str(self.work / DEMO_INGEST_KEY)])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait for the exit: its status, or HUNG if it never came."""
        p = self.procs[name]
        p.send_signal(sig)
        try:
            return p.wait(STOP_GUARD_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return HUNG

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.broker.close()


def _values(db: Path, sql: str) -> list[int]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [int(v) for (v,) in con.execute(sql) if v is not None]
    except sqlite3.OperationalError:
        return []  # table not created yet
    finally:
        con.close()


def committed(work: Path) -> list[int]:
    return _values(work / "buffer.sqlite",
                   "SELECT value FROM audit WHERE point='ps1.counter' AND value IS NOT NULL")


def stored(work: Path) -> list[int]:
    return _values(work / "receiver.sqlite",
                   f"SELECT v FROM readings WHERE name='{COUNTER}' AND v IS NOT NULL")


def _wait_for_growth(count, n: int, timeout: float) -> None:  # noqa: ANN001
    start, deadline = count(), time.monotonic() + timeout
    while count() < start + n and time.monotonic() < deadline:
        time.sleep(0.05)


def run(kills: int, target: str, seed: int, work: Path, poll: float, gap: tuple[float, float],
        drain_timeout: float, out=sys.stdout, min_new: int = 3,  # noqa: ANN001
        sig: str = "kill") -> dict[str, int]:
    rnd = random.Random(seed)
    rig = Rig(work, poll)
    exits: Counter[int] = Counter()
    try:
        rig.start()
        progress = committed if target == "gateway" else stored
        for i in range(kills):
            # each kill comes after the target has done some work since its (re)start, at a
            # random moment after that, so a slow machine still crashes it under load
            _wait_for_growth(lambda: len(progress(work)), min_new, timeout=60)
            time.sleep(rnd.uniform(*gap))
            status = rig.kill(target, SIGNALS[sig])
            exits[status] += 1
            (rig.start_gateway if target == "gateway" else rig.start_receiver)()
            print(f"{sig} {i + 1}/{kills} of the {target}: exit {status}", file=out, flush=True)
        time.sleep(gap[1])
        rig.stop("sim")  # from here the simulator serves nothing more; the gateway drains
        deadline = time.monotonic() + drain_timeout
        # committed is read again each time: the poll answered last commits a moment later
        while time.monotonic() < deadline and not set(committed(work)) <= set(stored(work)):
            time.sleep(0.2)
    finally:
        rig.close()
    stats = json.loads((work / "sim-stats.json").read_text())
    served = set(range(stats["first"], stats["last"] + 1))
    com, got = committed(work), Counter(stored(work))
    result = {"kills": kills, "served": len(served), "committed": len(set(com)),
              "stored": len(got), "lost": len(set(com) - set(got)),
              "duplicated": sum(n - 1 for n in got.values() if n > 1),
              "served_not_committed": len(served - set(com))}
    if sig == "term":
        result["unclean"] = sum(n for status, n in exits.items() if status != 0)
        result["hung"] = exits[HUNG]
    print("\n".join(f"{k:<22}{v:>10}" for k, v in result.items()), file=out)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cimedge.tools.crashtest", description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--target", choices=("gateway", "receiver"), default="gateway")
    p.add_argument("--signal", choices=tuple(SIGNALS), default="kill",
                   help="kill: SIGKILL (a crash); term: SIGTERM, a clean stop that must exit 0")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--poll", type=float, default=0.05, help="gateway poll period, s")
    p.add_argument("--min-gap", type=float, default=0.3, help="least time between kills, s")
    p.add_argument("--max-gap", type=float, default=1.5, help="most time between kills, s")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--work", type=Path, help="keep the run's files here (default: a temp dir)")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cimedge-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(args.kills, args.target, args.seed, work, args.poll,
                 (args.min_gap, args.max_gap), args.drain_timeout, sig=args.signal)
    print(f"files: {work}")
    bad = result["lost"] or result["duplicated"] or result.get("unclean", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
