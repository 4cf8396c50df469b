"""What the fleet view asks of the receiver's store, in SQLite and PostgreSQL: gateway status,
activity, open alarms, a device's points, and a point's series decimated on the server.

Every query here is an index lookup per device or per point (schema version 3), so the
fleet and a day's chart stay fast as the readings table grows.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cimedge.cloud_sync.receiver.status import MAX_EXTRA_JSON, GatewayStatus
from cimedge.cloud_sync.receiver.store import SqliteStore, Store

STATUS_SCHEMA = 3  # the first schema version with gateway_status and these indexes


@dataclass(frozen=True)
class StatusRow:
    """A gateway's latest status as stored; times are epoch seconds."""

    dev: str
    online: bool | None
    status_at: float  # when the receiver took in the latest status (live or retained)
    changed_at: float | None  # when online/offline last changed, seen live
    seen_at: float | None  # the latest status that arrived live (not a retained replay)
    sent_ts: float | None
    signed: bool
    kid: str | None
    sw: str | None
    config: str | None
    contract: int | None
    backlog: int | None
    oldest_unacked_s: float | None
    clock: str | None
    devices: dict[str, str] | None
    extra: dict[str, Any]


@dataclass(frozen=True)
class Alarm:
    """A raise event with no later clear for its (dev, point, rule)."""

    dev: str
    seq: int
    t: float
    point: str
    rule: str
    value: float | None
    msg: str


@dataclass(frozen=True)
class PointValue:
    """A point's latest stored reading."""

    point: str
    t: float
    value: float | bool | str | None
    unit: str | None
    quality: str


@dataclass(frozen=True)
class Series:
    """A point over [since, until): per bucket its first time, min, max and count."""

    t: list[float]
    lo: list[float]
    hi: list[float]
    n: list[int]
    bucket_s: float
    readings: int


def _ns(x: object) -> float | None:
    return None if x is None else int(x) / 1e9  # type: ignore[call-overload]


def _value(v: object, vs: object, vb: object) -> float | bool | str | None:
    if vb is not None:
        return bool(vb)
    return vs if vs is not None else _finite(v)  # type: ignore[arg-type]


def _finite(v: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value shows as missing."""
    return v if v is None or math.isfinite(v) else None


class FleetDB:
    """Runs the fleet queries on a store's own connection (on the store's thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sqlite = isinstance(store, SqliteStore)
        self.has_status = store.schema_version >= STATUS_SCHEMA

    def _rows(self, sqlite_sql: str, pg_sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self.sqlite:
            return self.store._db.execute(sqlite_sql, params).fetchall()  # type: ignore[attr-defined]  # noqa: SLF001
        return self.store._live().execute(pg_sql, params).fetchall()  # type: ignore[attr-defined]  # noqa: SLF001

    def record_status(self, s: GatewayStatus, received_ns: int, *, live: bool) -> None:
        """Keep s as the gateway's latest status; a retained replay does not count as seen."""
        devices = json.dumps(s.devices) if s.devices is not None else None
        extra = json.dumps(s.extra)
        if len(extra) > MAX_EXTRA_JSON:  # the raw bytes still hold every field
            extra = json.dumps({"_omitted": f"{len(s.extra)} fields, {len(extra)} bytes"})
        row = (s.dev, s.online, received_ns, received_ns if live else None,
               received_ns if live else None, s.ts, s.signed, s.kid, s.sw, s.config,
               s.contract, s.backlog, s.oldest_unacked_s, s.clock, devices,
               extra, s.raw)
        cols = ("dev, online, status_ns, changed_ns, seen_ns, sent_ts, signed, kid, sw, config, "
                "contract, backlog, oldest_unacked_s, clock, devices, extra, raw")
        keep = ", ".join(f"{c} = excluded.{c}" for c in cols.split(", ")[5:])
        upsert = (f"INSERT INTO gateway_status ({cols}) VALUES ({', '.join(['?'] * 17)}) "
                  "ON CONFLICT (dev) DO UPDATE SET changed_ns = CASE WHEN "
                  "gateway_status.online {same} excluded.online THEN gateway_status.changed_ns "
                  "ELSE excluded.changed_ns END, online = excluded.online, "
                  "status_ns = excluded.status_ns, "
                  f"seen_ns = COALESCE(excluded.seen_ns, gateway_status.seen_ns), {keep}")
        if self.sqlite:
            db: sqlite3.Connection = self.store._db  # type: ignore[attr-defined]  # noqa: SLF001
            with db:
                db.execute(upsert.format(same="IS"), row)
        else:
            sql = upsert.format(same="IS NOT DISTINCT FROM").replace("?", "%s")
            self.store._live().execute(sql, row)  # type: ignore[attr-defined]  # noqa: SLF001

    def statuses(self) -> dict[str, StatusRow]:
        """Every gateway's latest status, by device."""
        if not self.has_status:
            return {}
        sql = ("SELECT dev, online, status_ns, changed_ns, seen_ns, sent_ts, signed, kid, sw, "
               "config, contract, backlog, oldest_unacked_s, clock, devices, extra "
               "FROM gateway_status")
        out = {}
        for r in self._rows(sql, sql):
            devices, extra = r[14], r[15]
            if isinstance(devices, str):
                devices = json.loads(devices)
            if isinstance(extra, str):
                extra = json.loads(extra)
            out[r[0]] = StatusRow(
                r[0], None if r[1] is None else bool(r[1]), int(r[2]) / 1e9, _ns(r[3]),
                _ns(r[4]), r[5], bool(r[6]), bytes(r[7]).hex() if r[7] is not None else None,
                r[8], r[9], r[10], r[11], r[12], r[13], devices, extra or {})
        return out

    def activity(self, devs: Sequence[str]) -> dict[str, tuple[int, float]]:
        """Per device that sent anything: (last seq, when its latest message arrived)."""
        rows = self._rows(
            "SELECT value, (SELECT MAX(seq) FROM messages WHERE dev = value), "
            "(SELECT MAX(received_ns) FROM messages WHERE dev = value) FROM json_each(?)",
            "SELECT d, (SELECT max(seq) FROM messages WHERE dev = d), "
            "(SELECT max(received_ns) FROM messages WHERE dev = d) FROM unnest(%s::text[]) d",
            (json.dumps(list(devs)),) if self.sqlite else (list(devs),))
        return {d: (int(s), int(ns) / 1e9) for d, s, ns in rows if s is not None}

    def open_alarms(self, dev: str | None = None) -> list[Alarm]:
        """Raise events with no later clear of the same (dev, point, rule), newest first."""
        inner = ("SELECT dev, seq, {t} AS t, point, rule, kind, value, msg, ROW_NUMBER() OVER "
                 "(PARTITION BY dev, point, rule ORDER BY t DESC, seq DESC) AS n FROM events "
                 "WHERE kind IN ('raise', 'clear') AND (? IS NULL OR dev = ?)")
        outer = ("SELECT dev, seq, t, point, rule, value, msg FROM ({inner}) AS e "
                 "WHERE n = 1 AND kind = 'raise' ORDER BY t DESC, dev, point")
        rows = self._rows(
            outer.format(inner=inner.format(t="t")),
            outer.format(inner=inner.format(t="EXTRACT(EPOCH FROM t)::float8")).replace(
                "? IS NULL", "%s::text IS NULL").replace("?", "%s"), (dev, dev))
        return [Alarm(d, int(s), t, p, r, _finite(v), m) for d, s, t, p, r, v, m in rows]

    def raised(self, dev: str, seq: int, point: str, rule: str) -> bool:
        """Whether this alarm raise was stored (what an acknowledgement may name)."""
        sql = ("SELECT 1 FROM events WHERE dev = ? AND seq = ? AND point = ? AND rule = ? "
               "AND kind = 'raise' LIMIT 1")
        if not 0 <= seq < 1 << 63:
            return False
        return bool(self._rows(sql, sql.replace("?", "%s"), (dev, seq, point, rule)))

    def recent_alarm_events(self, limit: int = 200) -> list[tuple[str, int, float, str, str,
                                                                  str, float | None, str]]:
        """The latest raise and clear events of the fleet: (dev, seq, t, point, kind, rule,
        value, msg), newest first."""
        sql = ("SELECT dev, seq, {t}, point, kind, rule, value, msg FROM events "
               "WHERE kind IN ('raise', 'clear') ORDER BY t DESC LIMIT ?")
        return [(d, int(s), t, p, k, r, _finite(v), m) for d, s, t, p, k, r, v, m in self._rows(
            sql.format(t="t"), sql.format(t="EXTRACT(EPOCH FROM t)::float8").replace("?", "%s"),
            (limit,))]

    def points(self, dev: str, limit: int = 1000) -> list[PointValue]:
        """Each point of a device with its latest reading (a skip scan: one seek per point)."""
        names = ("WITH RECURSIVE names(name) AS (SELECT MIN(name) FROM readings WHERE dev = {d} "
                 "UNION ALL SELECT (SELECT MIN(name) FROM readings WHERE dev = {d} AND "
                 "name > names.name) FROM names WHERE names.name IS NOT NULL) ")
        rows = self._rows(
            names.format(d="?1") + "SELECT n.name, r.t, r.v, r.vs, r.vb, r.unit, r.q FROM "
            "names n JOIN readings r ON r.rowid = (SELECT rowid FROM readings WHERE dev = ?1 "
            "AND name = n.name ORDER BY t DESC LIMIT 1) LIMIT ?2",
            names.format(d="%(d)s") + "SELECT n.name, EXTRACT(EPOCH FROM r.t)::float8, r.v, "
            "r.vs, r.vb, r.unit, r.q FROM names n CROSS JOIN LATERAL (SELECT t, v, vs, vb, "
            "unit, q FROM readings WHERE dev = %(d)s AND name = n.name ORDER BY t DESC LIMIT 1) "
            "r LIMIT %(n)s",
            (dev, limit) if self.sqlite else {"d": dev, "n": limit})  # type: ignore[arg-type]
        prefix = f"{dev}:"
        return [PointValue(n.removeprefix(prefix), t, _value(v, vs, vb), u, q or "good")
                for n, t, v, vs, vb, u, q in rows]

    def series(self, dev: str, point: str, since: float, until: float,
               buckets: int) -> Series:
        """min/max per time bucket (about `buckets` of them) of one point's numeric readings.

        Booleans count as 0 and 1; text values and failed polls are left out. A bucket
        holding one reading is that reading, so a short window comes back undecimated.
        """
        width = max((until - since) / max(1, buckets), 1e-3)
        params = {"d": dev, "n": f"{dev}:{point}", "t0": since, "t1": until, "w": width}
        rows = self._rows(
            "SELECT CAST((t - :t0) / :w AS INTEGER) AS b, MIN(x), MAX(x), COUNT(*), MIN(t) "
            "FROM (SELECT t, COALESCE(v, vb) AS x FROM readings WHERE dev = :d AND name = :n "
            "AND t >= :t0 AND t < :t1) WHERE x IS NOT NULL GROUP BY b ORDER BY b",
            # date_part, not EXTRACT: since PostgreSQL 14 EXTRACT returns numeric, which
            # made the per-row arithmetic of a day's chart twice as slow.
            "SELECT floor((date_part('epoch', t) - %(t0)s) / %(w)s)::bigint AS b, min(x), "
            "max(x), count(*), EXTRACT(EPOCH FROM min(t))::float8 FROM (SELECT t, "
            "COALESCE(v, vb::int::float8) AS x FROM readings WHERE dev = %(d)s AND name = %(n)s "
            "AND t >= to_timestamp(%(t0)s) AND t < to_timestamp(%(t1)s)) AS r "
            "WHERE x IS NOT NULL GROUP BY b ORDER BY b", params)  # type: ignore[arg-type]
        finite = [r for r in rows if math.isfinite(r[1]) and math.isfinite(r[2])]
        return Series([r[4] for r in finite], [r[1] for r in finite], [r[2] for r in finite],
                      [int(r[3]) for r in finite], width, sum(int(r[3]) for r in finite))

    def events(self, dev: str, limit: int = 200) -> list[tuple[int, float, str, str, str,
                                                              float | None, str]]:
        """A device's latest events: (seq, t, point, kind, rule, value, msg), newest first."""
        sql = ("SELECT seq, {t}, point, kind, rule, value, msg FROM events WHERE dev = ? "
               "ORDER BY seq DESC, t DESC LIMIT ?")
        return [(int(s), t, p, k, r, _finite(v), m) for s, t, p, k, r, v, m in self._rows(
            sql.format(t="t"), sql.format(t="EXTRACT(EPOCH FROM t)::float8").replace("?", "%s"),
            (dev, limit))]

    def gaps(self, dev: str, limit: int = 100) -> list[tuple[int, int]]:
        """A device's missing seq ranges (not sent, not acked yet, or lost), oldest first."""
        sql = ("SELECT prev + 1, seq - 1 FROM (SELECT seq, LAG(seq, 1, {zero}) OVER (ORDER BY "
               "seq) AS prev FROM messages WHERE dev = ?) AS s WHERE seq - prev > 1 "
               "ORDER BY seq LIMIT ?")
        return [(int(a), int(b)) for a, b in self._rows(
            sql.format(zero="0"), sql.format(zero="0::bigint").replace("?", "%s"),
            (dev, limit))]

    def messages(self, dev: str) -> tuple[int, int]:
        """A device's stored messages: (how many, last seq)."""
        sql = "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM messages WHERE dev = ?"
        n, last = self._rows(sql, sql.replace("?", "%s"), (dev,))[0]
        return int(n), int(last)

    def rejects(self, dev: str) -> dict[str, int]:
        """A device's rejected messages by reason."""
        sql = "SELECT reason, count FROM rejects WHERE dev = ? ORDER BY reason"
        return {r: int(n) for r, n in self._rows(sql, sql.replace("?", "%s"), (dev,))}
