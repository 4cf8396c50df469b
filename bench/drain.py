"""Drain: a backlog of N readings to an acked-empty buffer over a real broker and receiver.

    python -m bench.drain [--readings 1000000 100000] [--batch 2000]

For each size it builds the backlog in a fresh buffer (200 points a tick), then starts
a private mosquitto, `cimedge receiver run` (SQLite) and `cimedge run` on a site with no
devices (so the gateway only drains), and times the drain until the gateway's status says
the buffer is empty. Peak RSS is the gateway process's VmHWM from /proc, read just before
it is stopped; CPU is its user+system time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cimedge.edge.model import Reading
from cimedge.edge.store import Store
from cimedge.provisioning.identity import ensure_identity
from cimedge.tools.broker import Mosquitto

DEV = "bench-drain-01"

SITE = """\
[gateway]
device_id = "{dev}"
key_file = "device.key"

[store]
path = "buffer.sqlite"

[sync]
broker = "{broker}"
batch_max_readings = {batch}
flush_interval_s = 0.5
ack_timeout_s = 10.0
max_inflight = {inflight}
"""


async def fill(path: Path, n: int, points: int = 200) -> None:
    names = [f"dev{p // 20}.p{p}" for p in range(points)]
    t0 = time.time_ns() - (n // points) * 10**9
    async with Store(path) as store:
        for t in range(n // points):
            await store.append([Reading(nm, t0 + t * 10**9, float(t + i))
                                for i, nm in enumerate(names)])


def _proc_stat(pid: int) -> tuple[int, float]:
    hwm = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
               if ln.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm * 1024, cpu


def drain(n: int, batch: int, inflight: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with tempfile.TemporaryDirectory(prefix="cimedge-drain-") as d:
        work = Path(d)
        _, enrollment = ensure_identity(work, DEV, "pump_station")
        t = time.perf_counter()
        asyncio.run(fill(work / "buffer.sqlite", n))
        fill_s = time.perf_counter() - t
        (work / "mq").mkdir()
        with Mosquitto(workdir=work / "mq") as broker:
            (work / "site.toml").write_text(SITE.format(dev=DEV, broker=broker.url, batch=batch,
                                                        inflight=inflight))
            rx = subprocess.Popen([sys.executable, "-m", "cimedge.provisioning.cli", "receiver", "run",
                                   "--broker", broker.url, "--db", str(work / "rx.sqlite"),
                                   "--registry", str(work / "reg.sqlite"), "--enroll",
                                   str(enrollment)], env=env, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # let the receiver subscribe before the first batch
            t = time.perf_counter()
            gw = subprocess.Popen([sys.executable, "-m", "cimedge.provisioning.cli", "run", "--config",
                                   str(work / "site.toml")], env=env)
            try:
                status = work / "status.json"
                while True:
                    time.sleep(0.25)
                    if status.exists():
                        st = json.loads(status.read_text())
                        buf = st.get("buffer") or {}
                        if buf.get("readings") == 0 and buf.get("batches_unacked") == 0:
                            break
                    if gw.poll() is not None:
                        raise RuntimeError("the gateway exited")
                secs = time.perf_counter() - t
                rss, cpu = _proc_stat(gw.pid)
            finally:
                for p in (gw, rx):
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)
    return {"readings": n, "fill_s": fill_s, "drain_s": secs, "per_s": n / secs,
            "rss_mb": rss / 2**20, "cpu_s_per_m": cpu / n * 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--readings", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=4)
    args = p.parse_args()
    rows = [drain(n, args.batch, args.inflight) for n in args.readings]
    print(f"batch {args.batch} readings, {args.inflight} in flight; status polled every 0.25 s")
    print(f"{'backlog':>10}{'drain s':>9}{'readings/s':>12}{'gw peak RSS MB':>16}"
          f"{'gw CPU-s/1M':>13}")
    for r in rows:
        print(f"{r['readings']:>10,}{r['drain_s']:>9.1f}{r['per_s']:>12,.0f}{r['rss_mb']:>16.1f}"
              f"{r['cpu_s_per_m']:>13.1f}")


if __name__ == "__main__":
    main()
