"""`cimedge doctor`: check an installation, one pass/fail line per check, each failure with a fix.

Checks: the site config; the device key and its permissions; the TLS files; backend.json
(the keys that sign acks and commands); each serial
port (exists, opens, something answers); each configured device (one poll with a short
timeout, or the running gateway's view of it); the broker (TCP, TLS both ways, CONNACK);
the clock; disk space and the buffer quota; the buffer's integrity (read-only). The exit
code is 1 when any check fails; warnings do not fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from collections.abc import Callable

from cimedge.edge.errors import CimEdgeError
from cimedge.provisioning import backend, checks
from cimedge.provisioning.checks import Context, Result
from cimedge.provisioning.clikit import Progress, Subparsers, add_where, command, config_path, state_dir

MARK = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}


class DoctorFailed(CimEdgeError):
    """Some checks failed; the report above says which and how to fix them."""

    def __init__(self, failed: list[str], total: int) -> None:
        super().__init__(f"{len(failed)} of {total} checks failed: {', '.join(failed)}")


def diagnose(ctx: Context, progress: Progress | None = None) -> list[Result]:
    """Run every check in order; checks that need a valid config are skipped without one."""
    out: list[Result] = []

    def run(label: str, fn: Callable[[], list[Result]]) -> None:
        if progress:
            progress.show(label)
        try:
            out.extend(fn())
        except (OSError, sqlite3.Error, ValueError, CimEdgeError) as e:
            # the system refused something the check did not foresee: report it, go on
            out.append(Result(label, "fail", f"could not check: {e}",
                              "run with -v for details, and report it"))
        if progress:
            progress.step(label)

    run("config", lambda: checks.config(ctx))
    run("key", lambda: checks.key(ctx))
    if ctx.site is None:
        skipped = ["tls", "backend", "serial", "devices", "broker", "disk", "buffer"]
        out += [Result(c, "skip", "needs a valid config") for c in skipped]
        run("clock", lambda: checks.clock(ctx))
        return out
    run("tls", lambda: checks.tls(ctx))
    run("backend", lambda: backend.check(ctx))
    ports = checks.serial_ports(ctx)
    missing = {p: r for p in ports if (r := checks.serial_exists(ctx, p)) is not None}
    run("devices", lambda: checks.devices(ctx))
    for port, names in ports.items():
        out.append(missing.get(port) or checks.serial_answer(port, names, ctx.answered))
    run("broker", lambda: checks.broker(ctx))
    run("clock", lambda: checks.clock(ctx))
    run("disk", lambda: checks.disk(ctx))
    run("buffer", lambda: checks.buffer(ctx))
    return out


def render(results: list[Result]) -> str:
    lines = []
    for r in results:
        lines.append(f"{MARK[r.status]}  {r.check:<16} {r.detail}")
        if r.fix and r.status in ("fail", "warn"):
            lines.append(f"      fix: {r.fix}")
    n = {s: sum(r.status == s for r in results) for s in MARK}
    lines.append(f"{n['fail']} failed, {n['warn']} warnings, {n['pass']} passed"
                 + (f", {n['skip']} skipped" if n["skip"] else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # -v shows the drivers' own logs
        for name in ("pymodbus", "drivers", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    ctx = Context(config=config_path(args), state=state_dir(args), timeout=args.timeout)
    progress = Progress("doctor", total=9)
    try:
        results = diagnose(ctx, progress)
    finally:
        progress.close()
    if args.json:
        print(json.dumps({"config": str(ctx.config), "ok": not any(
            r.status == "fail" for r in results), "checks": [r.__dict__ for r in results]},
            indent=2))
    else:
        print(render(results), flush=True)
    failed = list(dict.fromkeys(r.check for r in results if r.status == "fail"))
    if failed:
        raise DoctorFailed(failed, len({r.check for r in results}))
    return 0


def add_parsers(sub: Subparsers) -> None:
    p = command(sub, "doctor", "check an installation: config, key, TLS, serial ports, "
                "devices, broker, clock, disk, buffer",
                "cimedge doctor --state-dir /var/lib/cimedge",
                description=__doc__.split(": ", 1)[1])
    add_where(p)
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                   help="how long a device or the broker may take to answer (default 2)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=run)
