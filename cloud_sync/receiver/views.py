"""What operators read: per-device stats as a table or JSON, and readings as CSV."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from cimedge.cloud_sync.receiver.registry import KeyRecord
from cimedge.cloud_sync.receiver.store import DeviceStats, StoredReading

CSV_COLUMNS = ("dev", "seq", "name", "time", "value", "unit", "quality")


def rfc3339(t: float | None) -> str:
    """Epoch seconds as RFC 3339 UTC with microseconds ("" for None)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def parse_time(text: str) -> float:
    """Epoch seconds from RFC 3339 (offset required, or a bare date: UTC midnight) or seconds.

    Raises ValueError with the reason, for argparse to show.
    """
    try:
        t = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(t):
            raise ValueError(f"{text!r} is not a finite number of seconds")
        return t
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time (2025-03-01T08:00:00Z), a date "
                         "or epoch seconds") from None
    if when.tzinfo is None:
        if len(text) > 10:  # noqa: PLR2004 - a bare date is taken as UTC; a time needs an offset
            raise ValueError(f"{text!r} has no UTC offset (add Z or +hh:mm)")
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _ranges(gaps: list[tuple[int, int]], limit: int) -> str:
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in gaps[:limit]]
    if len(gaps) > limit:
        parts.append(f"… {len(gaps) - limit} more")
    return ", ".join(parts) or "-"


def _reasons(rejects: Mapping[str, int]) -> str:
    return ", ".join(f"{r} {n}" for r, n in sorted(rejects.items())) or "-"


def stats_lines(stats: Mapping[str, DeviceStats], unknown: Mapping[str, int],
                gap_limit: int = 5) -> list[str]:
    """The `receiver stats` table: one line per device, then rejects of unknown devices."""
    rows = [("device", "last seq", "messages", "missing", "last seen", "gaps", "rejects")]
    rows += [(s.dev, str(s.last_seq), str(s.messages), str(s.missing),
              rfc3339(s.last_seen)[:19] + "Z" if s.last_seen else "-",
              _ranges(s.gaps, gap_limit), _reasons(s.rejects)) for s in stats.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in
                                                   zip(r[1:4], widths[1:4], strict=True)),
                        r[4].ljust(widths[4]), r[5].ljust(widths[5]), r[6]]).rstrip()
             for r in rows]
    if not stats:
        lines.append("(no device has sent anything yet)")
    lines.append(f"rejects from unknown devices or topics: {_reasons(unknown)}")
    return lines


def stats_json(stats: Mapping[str, DeviceStats], unknown: Mapping[str, int],
               schema_version: int) -> dict[str, Any]:
    """The `receiver stats --json` document."""
    return {
        "schema_version": schema_version,
        "devices": {s.dev: {"last_seq": s.last_seq, "messages": s.messages,
                            "missing": s.missing, "last_seen": rfc3339(s.last_seen) or None,
                            "gaps": [list(g) for g in s.gaps], "rejects": s.rejects}
                    for s in stats.values()},
        "unknown_rejects": dict(sorted(unknown.items())),
    }


def _value(v: float | bool | str | None) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def write_csv(readings: Iterable[StoredReading], out: TextIO) -> int:
    """Write readings as CSV with a header (CSV_COLUMNS); return how many rows."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    for r in readings:
        w.writerow((r.dev, r.seq, r.name, rfc3339(r.t), _value(r.value), r.unit or "",
                    r.quality or "good"))
        n += 1
    return n


def key_lines(keys: Iterable[KeyRecord], now: float) -> list[str]:
    """The `registry list` table."""
    rows = [("device", "kid", "state", "site type", "valid", "location")]
    for k in keys:
        valid = []
        if k.retired_after_seq is not None:
            valid.append(f"seq <= {k.retired_after_seq}")
        if k.not_after is not None:
            valid.append(f"until {rfc3339(k.not_after)[:19]}Z")
        if k.revoked_at is not None:
            valid.append(f"revoked {rfc3339(k.revoked_at)[:19]}Z")
        rows.append((k.device_id, k.kid, k.state(now), k.site_type, ", ".join(valid) or "-",
                     k.location or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)),
                       r[5]]).rstrip() for r in rows]


def key_json(k: KeyRecord, now: float) -> dict[str, Any]:
    """One key of `registry list --json`."""
    return {"device_id": k.device_id, "kid": k.kid, "state": k.state(now),
            "status": k.status, "site_type": k.site_type, "location": k.location,
            "retired_after_seq": k.retired_after_seq, "not_after": rfc3339(k.not_after) or None,
            "revoked_at": rfc3339(k.revoked_at) or None, "created": k.created}
