"""The fleet as operators see it: every enrolled gateway with its status, last seen, backlog,
versions and open alarms, the silent ones flagged (for `receiver fleet` and the web view)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from cimedge.cloud_sync.receiver.fleetdb import Alarm, FleetDB
from cimedge.cloud_sync.receiver.registry import KeyRecord

# How long each site type may go unheard before it counts as silent: three of its site
# template's heartbeats ([report] max_interval_s: 60 s at pump stations and tunnels, 300 s
# at lamp poles and roadside units), so one late batch is not an alarm.
SILENT_AFTER_S: dict[str, float] = {
    "pump_station": 180.0, "utility_tunnel": 180.0, "lamp_pole": 900.0, "roadside_unit": 900.0,
}
DEFAULT_SILENT_AFTER_S = 900.0


@dataclass(frozen=True)
class FleetRow:
    """One enrolled gateway as the fleet view shows it; times are epoch seconds."""

    dev: str
    site_type: str
    location: str | None
    keys: str  # "active", or the best state its keys have ("retired", "revoked", "expired")
    state: str  # "online" | "offline" | "unknown" (no status received yet)
    last_seen: float | None  # latest batch, event or live status from it
    last_seq: int | None
    silent: bool
    silent_reason: str  # "" when not silent
    silent_after_s: float
    backlog: int | None
    oldest_unacked_s: float | None
    sw: str | None
    config: str | None
    contract: int | None
    clock: str | None
    status_signed: bool
    open_alarms: int

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(FleetRow))


def silent_after(site_type: str, overrides: Mapping[str, float] | None = None) -> float:
    """Seconds a gateway of this site type may go unheard (overrides first, then defaults)."""
    if overrides and site_type in overrides:
        return overrides[site_type]
    return SILENT_AFTER_S.get(site_type, DEFAULT_SILENT_AFTER_S)


def _keys_state(states: Iterable[str]) -> str:
    seen = set(states)
    for s in ("active", "retired", "expired", "revoked"):
        if s in seen:
            return s
    return "none"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def fleet_rows(keys: Iterable[KeyRecord], db: FleetDB, now: float | None = None,
               overrides: Mapping[str, float] | None = None,
               alarms: list[Alarm] | None = None) -> list[FleetRow]:
    """Every enrolled gateway, silent ones first, then by device id (`alarms`: the open
    alarms if the caller has them already)."""
    now = time.time() if now is None else now
    devices: dict[str, tuple[str, str | None, list[str]]] = {}
    for k in keys:
        entry = devices.setdefault(k.device_id, (k.site_type, k.location, []))
        entry[2].append(k.state(now))
    statuses = db.statuses()
    activity = db.activity(sorted(devices))
    open_alarms = Counter(a.dev for a in (db.open_alarms() if alarms is None else alarms))
    rows = []
    for dev, (site_type, location, states) in devices.items():
        st = statuses.get(dev)
        last_seq, last_msg = activity.get(dev, (None, None))
        seen = [t for t in (last_msg, st.seen_at if st else None) if t is not None]
        last_seen = max(seen) if seen else None
        limit = silent_after(site_type, overrides)
        if last_seen is None:
            reason = "enrolled, never seen"
        elif now - last_seen > limit:
            reason = f"not seen for {_age(now - last_seen)} (allowed {_age(limit)})"
        else:
            reason = ""
        state = "unknown" if st is None or st.online is None else \
            "online" if st.online else "offline"
        rows.append(FleetRow(
            dev, site_type, location, _keys_state(states), state, last_seen, last_seq,
            bool(reason), reason, limit, st.backlog if st else None,
            st.oldest_unacked_s if st else None, st.sw if st else None,
            st.config if st else None, st.contract if st else None, st.clock if st else None,
            st.signed if st else False, open_alarms.get(dev, 0)))
    rows.sort(key=lambda r: (not r.silent, r.dev))
    return rows


def fleet_lines(rows: list[FleetRow], now: float | None = None) -> list[str]:
    """The `receiver fleet` table: silent gateways first, flagged with `!`."""
    from cimedge.cloud_sync.receiver.views import rfc3339

    now = time.time() if now is None else now
    table = [("", "device", "site type", "state", "last seen", "backlog", "versions",
              "alarms", "note")]
    for r in rows:
        versions = "/".join(v or "-" for v in (r.sw, r.config, str(r.contract)
                                               if r.contract is not None else None))
        backlog = "-" if r.backlog is None else str(r.backlog)
        if r.oldest_unacked_s is not None:
            backlog += f" ({_age(r.oldest_unacked_s)})"
        seen = f"{rfc3339(r.last_seen)[:19]}Z ({_age(max(0.0, now - r.last_seen))} ago)" \
            if r.last_seen is not None else "never"
        table.append(("!" if r.silent else "", r.dev, r.site_type, r.state, seen, backlog,
                      versions if versions != "-/-/-" else "-", str(r.open_alarms),
                      r.silent_reason or ("keys " + r.keys if r.keys != "active" else "")))
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip()
             for t in table]
    if not rows:
        lines.append("(no gateway is enrolled)")
    silent = sum(r.silent for r in rows)
    lines.append(f"{len(rows)} gateways: {silent} silent, "
                 f"{sum(r.state == 'online' for r in rows)} online, "
                 f"{sum(r.state == 'offline' for r in rows)} offline, "
                 f"{sum(r.open_alarms for r in rows)} open alarms")
    return lines
