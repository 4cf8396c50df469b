"""`cimedge status`: a gateway's state read from its state dir, running or stopped."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from cimedge.edge import quota
from cimedge.edge.daemon import STATUS_FILE
from cimedge.edge.errors import CimEdgeError


def read(state_dir: Path) -> dict[str, Any]:
    """The last status.json the daemon wrote, plus the buffer counted from its SQLite file."""
    if not state_dir.is_dir():
        raise CimEdgeError(f"{state_dir} is not a directory")
    report: dict[str, Any] = {"state_dir": str(state_dir), "sqlite_version": sqlite3.sqlite_version}
    status_file = state_dir / STATUS_FILE
    if status_file.exists():
        try:
            report["daemon"] = json.loads(status_file.read_text())
        except (OSError, ValueError) as e:
            raise CimEdgeError(f"{status_file} is unreadable: {e}") from None
        report["running"] = _alive(report["daemon"].get("pid")) and \
            time.time() - report["daemon"].get("updated", 0) < 10
    else:
        report["running"] = False
    signing = state_dir / "signing.json"  # written by `cimedge run` (provisioning/rotate.py)
    if signing.exists():
        try:
            report["signing"] = json.loads(signing.read_text())
        except (OSError, ValueError):
            pass
    db = state_dir / "buffer.sqlite"
    if db.exists():
        report["buffer"] = _buffer(db)
    return report


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _buffer(db: Path) -> dict[str, Any]:
    # Read-only: the daemon's connection is the only one that writes or checkpoints.
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        lo = con.execute("SELECT min(id) FROM readings").fetchone()[0]
        oldest = con.execute("SELECT ts_ns FROM readings WHERE id=?", (lo,)).fetchone()[0] \
            if lo else None
        batches = con.execute("SELECT count(*) FROM batches").fetchone()[0]
        used = quota.used_bytes(con)
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise CimEdgeError(f"cannot read the buffer {db}: {e}") from None
        # the daemon has just created the file and not yet its tables: an empty buffer
        meta, oldest, batches, used = {"readings": 0}, None, 0, 0
    except sqlite3.Error as e:
        raise CimEdgeError(f"cannot read the buffer {db}: {e}") from None
    finally:
        con.close()
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    return {"readings": meta.get("readings", "?"), "batches_unacked": batches, "bytes": size,
            "used_bytes": used,
            "oldest_age_s": round(time.time() - oldest / 1e9, 1) if oldest else None,
            "next_seq": meta.get("next_seq"), "acked_batches": meta.get("acked"),
            "evicted_readings": meta.get("evicted", 0)}


def render(report: dict[str, Any]) -> str:
    """The report as a few lines a technician reads at a glance."""
    lines = [f"state dir   {report['state_dir']}  (SQLite {report['sqlite_version']})",
             f"daemon      {'running' if report['running'] else 'not running'}"]
    d = report.get("daemon") or {}
    if d:
        lines.append(f"device      {d.get('device_id')}  broker {d.get('broker')}  "
                     f"{'' if report['running'] else 'last seen '}"
                     f"{'connected' if d.get('connected') else 'NOT connected'}")
        sync = d.get("sync") or {}
        last_ack = sync.get("last_ack")
        ago = f"{time.time() - last_ack:.0f} s ago" if last_ack else "never"
        lines.append(f"sync        sent {sync.get('sent', 0)}  acked {sync.get('acked', 0)}  "
                     f"resent {sync.get('resent', 0)}  refused {sync.get('nacked', 0)}  "
                     f"last ack {ago}")
        refused = sync.get("refused_acks") or {}
        if refused or sync.get("signed_acks"):
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(refused.items())) or "none"
            lines.append(f"acks        {'signed (v2)' if sync.get('signed_acks') else 'v1'}: "
                         f"refused {sum(refused.values())} ({kinds}), changed nothing")
        backend = d.get("backend") or {}
        if backend.get("required"):
            lines.append(f"backend     {backend.get('keys')}"
                         + (f"  ERROR {backend['error']}" if backend.get("error") else ""))
        buf = d.get("buffer") or {}
        if buf.get("quota_bytes"):
            lines.append(f"quota       {buf['used_bytes']} of {buf['quota_bytes']} bytes "
                         f"({100 * buf['used_bytes'] / buf['quota_bytes']:.0f}%), "
                         f"{buf.get('evicted', 0)} readings evicted")
        if buf.get("error"):
            lines.append(f"STORE ERROR {buf['error']}")
        if buf.get("moved_aside"):
            lines.append(f"CORRUPT     the buffer was moved aside to {buf['moved_aside']}")
        clock = d.get("clock") or {}
        if clock.get("invalid") or clock.get("steps"):
            lines.append(f"clock       {clock.get('steps', 0)} steps seen"
                         f"{', wall clock INVALID' if clock.get('invalid') else ''}")
        sign = report.get("signing") or {}
        if sign.get("kid"):
            since = f" since seq {sign['since_seq']}" if sign.get("since_seq") else ""
            lines.append(f"signing     kid {sign['kid']}{since}"
                         + (f"  KEY RELOAD FAILED: {sign['error']}" if sign.get("error") else ""))
        for name, h in (d.get("devices") or {}).items():
            lines.append(f"device {name:<6} {h['state']} {h.get('reason') or ''}".rstrip())
        if d.get("alarms"):
            lines.append(f"alarms      {', '.join(d['alarms'])}")
    b = report.get("buffer")
    if b:
        age = "-" if b["oldest_age_s"] is None else f"{b['oldest_age_s']} s"
        lines.append(f"buffer      {b['readings']} readings, {b['batches_unacked']} batches "
                     f"unacked, {b['bytes']} bytes on disk ({b['used_bytes']} in use), "
                     f"oldest unacked {age}, next seq {b['next_seq']}, "
                     f"{b['evicted_readings']} evicted")
    return "\n".join(lines)
