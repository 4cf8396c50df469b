"""Side by side with ThingsBoard IoT Gateway: the same simulator, broker and points, A B A B.

    python -m bench.compare                  # full: 3 rounds, about 30 minutes on 2 cores
    python -m bench.compare --quick          # 1 round, short durations, outage 10 s
    python -m bench.compare --only ours --quick

Installs the peer (thingsboard-gateway from PyPI) into bench/compare/.peer-venv on first use,
never into our venv. Each round runs every scenario for ours, then for the peer, each time
with a fresh broker, simulator and state. Prints the table and the issue's targets; writes
every raw number to results.json in the work folder.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.compare import peer, report, scenarios
from bench.compare.ours import Ours
from bench.compare.site import Site
from cimedge.tools.broker import mosquitto_binary

SCENARIOS = {"steady": scenarios.steady, "saturation": scenarios.saturation,
             "outage": scenarios.outage, "kill": scenarios.kill}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round, short durations (outage 10 s)")
    p.add_argument("--rounds", type=int, help="A B rounds (default 3, quick 1)")
    p.add_argument("--only", choices=("ours", "peer", "both"), default="both")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated subset of " + ", ".join(SCENARIOS))
    p.add_argument("--outage", type=float, help="broker outage, s, in both outage scenarios (default 60; quick 10 and 5)")
    p.add_argument("--peer-venv", type=Path, default=peer.DEFAULT_VENV)
    p.add_argument("--peer-per-point", action="store_true",
                   help="the peer reads each point with its own request (default: one block "
                        "request per device, as our plan makes)")
    p.add_argument("--work", type=Path, help="keep every run's files here (default: a temp dir)")
    return p.parse_args(argv)


async def compare(args: argparse.Namespace, work: Path, out=sys.stderr) -> list[dict[str, Any]]:  # noqa: ANN001
    """Every round, scenario and side; returns one result dict per run."""
    plan = scenarios.QUICK if args.quick else scenarios.FULL
    if args.outage:
        plan = replace(plan, outage_s=args.outage, kill_outage_s=args.outage)
    rounds = args.rounds or (1 if args.quick else 3)
    site = Site()
    sides = {"ours": Ours, "peer": lambda w: peer.Peer(w, args.peer_venv, args.peer_per_point)}
    if args.only != "both":
        sides = {args.only: sides[args.only]}
    results: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        for scen in args.scenarios.split(","):
            for kind, make in sides.items():
                t0 = time.monotonic()
                res = await SCENARIOS[scen](make, work / f"r{rnd}-{scen}-{kind}", site, plan)
                results.append({"round": rnd, "scenario": scen, "gateway": kind, **res,
                                "run_s": time.monotonic() - t0})
                (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
                print(f"[round {rnd} {scen} {kind}] {_brief(res)}", file=out, flush=True)
    return results


def _brief(r: dict[str, Any]) -> str:
    keys = ("values_per_s", "cpu_s_per_m", "bytes_per_value", "peak_rss_mb", "drain_s",
            "lost", "lost_at_kill", "dups")
    return ", ".join(f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}"
                     for k in keys if r.get(k) is not None)


def header(args: argparse.Namespace, work: Path) -> str:
    """Date, machine and command, for the top of the printed report."""
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal:")), "?")
    return (f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {os.cpu_count()} cores, "
            f"{int(mem) // 1024} MiB, load {os.getloadavg()[0]:.2f}\n"
            f"command: python -m bench.compare {' '.join(sys.argv[1:])}\nfiles: {work}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)  # paho, at every broker stop
    if mosquitto_binary() is None:
        print("mosquitto is not installed: apt-get install mosquitto", file=sys.stderr)
        return 2
    if unknown := set(args.scenarios.split(",")) - SCENARIOS.keys():
        print(f"unknown scenario: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.only != "ours":
        peer.install(args.peer_venv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cimedge-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    started = header(args, work)
    results = asyncio.run(compare(args, work))
    print(started)
    print(f"finished {datetime.datetime.now().astimezone():%H:%M}, load "
          f"{os.getloadavg()[0]:.2f}\n")
    print("\n".join(report.targets(results)) + "\n")
    print(report.table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
