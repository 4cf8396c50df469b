"""What a counting subscriber saw: every (point, value) once, as bitmaps, plus bytes and times.

The simulator serves point ``k`` the values 1, 2, 3, ... (tools/sim/counting_server.py), so a
bitmap per point says exactly which values arrived: a value seen twice is a duplicate, a value
below the point's highest so far arrived out of order, and a value the simulator served that
never arrived is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

_LATENCY_SAMPLES = 200_000


class Tally:
    """Counts kept by the subscriber; ``add`` is called once per value in a publish."""

    def __init__(self) -> None:
        self.bits: dict[str, bytearray] = {}
        self.top: dict[str, int] = {}
        self.distinct = self.dups = self.out_of_order = self.comm = 0
        self.bytes = self.publishes = 0  # payload + topic of every PUBLISH the gateway sent
        self.first_at: float | None = None  # wall time of the first value
        self.new_at = 0.0  # wall time of the last value not seen before
        self.latencies: list[float] = []
        self.keep_latency = False
        self.watch: Mapping[str, int] = {}  # per point: values up to this are the backlog
        self.watch_seen = 0
        self.watch_first = self.watch_last = 0.0
        self.trigger: tuple[int, Callable[[], None]] | None = None  # (backlog seen, action)
        self.span = (0.0, 0.0)  # a measurement window, by reading time
        self.in_span = 0  # values read inside it (arrived at any time)

    def publish(self, nbytes: int) -> None:
        self.bytes += nbytes
        self.publishes += 1

    def add(self, key: str, value: object, t_reading: float, now: float) -> None:
        """Count one value of point ``key`` stamped ``t_reading`` (s) and received at ``now``."""
        if type(value) is not int or value < 1:
            self.comm += 1  # a failed poll (our quality "comm") or a foreign value
            return
        bits = self.bits.get(key)
        if bits is None:
            bits = self.bits[key] = bytearray(1024)
        byte, mask = value >> 3, 1 << (value & 7)
        if byte >= len(bits):
            bits.extend(bytes(max(len(bits), byte + 1 - len(bits))))
        if bits[byte] & mask:
            self.dups += 1
            return
        bits[byte] |= mask
        self.distinct += 1
        self.new_at = now
        if self.first_at is None:
            self.first_at = now
        if value < self.top.get(key, 0):
            self.out_of_order += 1
        else:
            self.top[key] = value
        if self.span[0] <= t_reading < self.span[1]:
            self.in_span += 1
        if self.keep_latency and len(self.latencies) < _LATENCY_SAMPLES:
            self.latencies.append(now - t_reading)
        if value <= self.watch.get(key, 0):
            self._backlog_value(now)

    def _backlog_value(self, now: float) -> None:
        if not self.watch_seen:
            self.watch_first = now
        self.watch_seen += 1
        self.watch_last = now
        if self.trigger is not None and self.watch_seen >= self.trigger[0]:
            action, self.trigger = self.trigger[1], None
            action()

    def has(self, key: str, value: int) -> bool:
        """True when ``value`` of point ``key`` has arrived."""
        bits = self.bits.get(key, b"")
        return value >> 3 < len(bits) and bool(bits[value >> 3] & 1 << (value & 7))

    def missing(self, served: Mapping[str, int]) -> int:
        """How many of the values 1..served[key] of every point never arrived."""
        lost = 0
        for key, n in served.items():
            got = int.from_bytes(self.bits.get(key, b""), "little")
            lost += n - (got & ((1 << (n + 1)) - 2)).bit_count()
        return lost

    def watch_backlog(self, served: Mapping[str, int]) -> int:
        """From now on count arrivals of values up to ``served``; returns how many are due."""
        self.watch, self.watch_seen = dict(served), 0
        self.watch_first = self.watch_last = 0.0
        return self.missing(served)

    def snapshot(self) -> dict[str, float]:
        return {"t": time.time(), "distinct": self.distinct, "bytes": self.bytes,
                "publishes": self.publishes, "dups": self.dups}
