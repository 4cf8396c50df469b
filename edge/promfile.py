"""The gateway's figures as a node-exporter textfile (`STATE_DIR/metrics/cimedge.prom`).

The gateway listens on no port (DESIGN.md section 9): node_exporter's textfile collector
(`--collector.textfile.directory=STATE_DIR/metrics`) serves these lines with the machine's
own. The file is written whole to a temporary name and renamed, so a scrape never reads
half of it; a full or read-only disk is logged once and never stops the daemon. The text
format (Prometheus exposition 0.0.4) is written here by hand: prometheus_client would cost
the gateway ~12 MB of RSS and ~0.2 s of start-up for these few lines (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DIRNAME = "metrics"  # readable by node_exporter, unlike the state directory (keys)
FILENAME = "cimedge.prom"
_NAME = re.compile(r"[^a-zA-Z0-9_]")
Sample = tuple[str, Mapping[str, str], float]


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Family:
    """One metric family: its HELP, TYPE and samples."""

    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name, self.kind, self.help = name, kind, help_
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float | bool | None, **labels: str) -> Family:  # noqa: FBT001
        if value is not None:
            self.samples.append((labels, float(value)))
        return self

    def lines(self) -> Iterable[str]:
        if not self.samples:
            return
        name = f"{self.name}_total" if self.kind == "counter" else self.name  # 0.0.4 style
        yield f"# HELP {name} {self.help}"
        yield f"# TYPE {name} {self.kind}"
        for labels, value in self.samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            yield f"{name}{'{' + text + '}' if text else ''} {_num(value)}"


def families(status: Mapping[str, Any]) -> list[Family]:  # noqa: C901 - one line per figure
    """The figures of `cimedge status` (Gateway.status()) as metric families."""
    p = "cimedge_gateway_"
    out = [
        Family(f"{p}info", "gauge", "The gateway's device id and SQLite version").add(
            1, device_id=str(status.get("device_id", "")),
            sqlite_version=str(status.get("sqlite_version", ""))),
        Family(f"{p}status_timestamp_seconds", "gauge",
               "When these figures were taken").add(status.get("updated")),
        Family(f"{p}start_time_seconds", "gauge", "When the daemon started").add(
            status.get("started")),
        Family(f"{p}connected", "gauge", "1 while connected to the broker").add(
            bool(status.get("connected"))),
    ]
    buf = status.get("buffer") or {}
    if buf:
        for key, name, kind, text in (
                ("readings", "buffer_readings", "gauge", "Readings buffered, not yet acked"),
                ("events", "buffer_events", "gauge", "Events buffered, not yet acked"),
                ("batches_unacked", "batches_unacked", "gauge", "Batches sent, not yet acked"),
                ("oldest_ts", "buffer_oldest_timestamp_seconds", "gauge",
                 "Time of the oldest buffered reading (absent when empty)"),
                ("used_bytes", "buffer_used_bytes", "gauge", "Bytes the buffer takes"),
                ("quota_bytes", "buffer_quota_bytes", "gauge", "The buffer's quota"),
                ("next_seq", "next_seq", "gauge", "The seq the next batch gets"),
                ("evicted", "evicted_readings", "counter",
                 "Readings evicted at the quota (each recorded by a gap event)"),
                ("uncommitted_readings", "uncommitted_readings", "counter",
                 "Readings of ticks the store could not commit (disk full or read-only)")):
            out.append(Family(p + name, kind, text).add(buf.get(key)))
        out.append(Family(f"{p}buffer_error", "gauge",
                          "1 while the buffer reports an error").add(bool(buf.get("error"))))
    sync = status.get("sync") or {}
    uplink = Family(f"{p}uplink", "counter", "The uplink's counters by name (sent, acked, "
                    "resent, nacked, ...)")
    for key, value in sorted(sync.items()):
        if key in ("inflight", "last_ack", "last_nack"):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            uplink.add(value, counter=_NAME.sub("_", key))
    out.append(uplink)
    out.append(Family(f"{p}inflight_batches", "gauge", "Batches published and not yet acked "
                      "(the send window)").add(sync.get("inflight")))
    out.append(Family(f"{p}last_ack_timestamp_seconds", "gauge",
                      "When the last ack arrived").add(sync.get("last_ack")))
    clock = status.get("clock") or {}
    out.append(Family(f"{p}clock_steps", "counter", "Wall-clock steps of more than 2 s").add(
        clock.get("steps")))
    out.append(Family(f"{p}clock_invalid", "gauge", "1 while the wall clock is before 2025").add(
        bool(clock.get("invalid")) if clock else None))
    out.append(Family(f"{p}alarms_active", "gauge", "Alarms raised and not cleared").add(
        len(status.get("alarms") or [])))
    up = Family(f"{p}device_up", "gauge", "1 when the field device answers (health ok)")
    timeouts = Family(f"{p}device_timeouts", "counter", "Polls of the device that timed out")
    seen = Family(f"{p}device_last_success_timestamp_seconds", "gauge",
                  "When the device last answered")
    for name, h in sorted((status.get("devices") or {}).items()):
        up.add(h.get("state") == "ok", device=name)
        timeouts.add(h.get("timeouts"), device=name)
        seen.add(h.get("last_success"), device=name)
    out += [up, timeouts, seen]
    return out


def render(status: Mapping[str, Any]) -> str:
    """The whole textfile."""
    return "".join(f"{line}\n" for fam in families(status) for line in fam.lines())


class Textfile:
    """Writes the textfile at most every `every_s` seconds (flash wear), atomically, and never
    raises: a disk error is logged once per distinct error and counted."""

    def __init__(self, state_dir: Path, every_s: float = 10.0) -> None:
        self.dir = state_dir / DIRNAME
        self.path = self.dir / FILENAME
        self.every_s = every_s
        self.failures = 0
        self.last_error = ""
        self._last = -math.inf

    def write(self, status: Mapping[str, Any], now: float | None = None) -> bool:
        """Write if due; True when the file now holds these figures."""
        now = time.monotonic() if now is None else now
        if now - self._last < self.every_s:
            return False
        self._last = now
        tmp = self.dir / f".{FILENAME}.tmp"  # node_exporter reads *.prom only
        try:
            self.dir.mkdir(mode=0o755, exist_ok=True)
            tmp.write_text(render(status), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:  # ENOSPC, EROFS, EDQUOT, EIO...: metrics are never worth a stop
            self.failures += 1
            error = f"{e.strerror or e} ({self.path})"
            if error != self.last_error:
                log.warning("cannot write the metrics textfile: %s", error)
            self.last_error = error
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        if self.last_error:
            log.info("metrics textfile written again: %s", self.path)
        self.last_error = ""
        return True
