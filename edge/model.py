"""The nouns of the data path: Quality, Reading, Event and DeviceHealth."""

from __future__ import annotations

import enum

import msgspec


class Quality(enum.IntEnum):
    """How far a reading can be trusted; anything but GOOD travels as SenML label "q"."""

    GOOD = 0
    STALE = 1
    RANGE = 2
    COMM = 3

    @property
    def label(self) -> str:
        """The text used on the wire ("stale", "range", "comm"); "" for GOOD."""
        return _LABELS[self]


_LABELS = {Quality.GOOD: "", Quality.STALE: "stale", Quality.RANGE: "range", Quality.COMM: "comm"}
QUALITY_BY_LABEL = {v: k for k, v in _LABELS.items() if v}

# A value is a number, a boolean (coils, discrete inputs), a string, or None when the
# poll failed (quality COMM): a failed poll is recorded, never silently skipped.
Value = float | int | bool | str | None


class Reading(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One point's value at one wall-clock time; point is "{device}.{point}"."""

    point: str
    ts_ns: int
    value: Value
    quality: Quality = Quality.GOOD


class Event(msgspec.Struct, frozen=True, gc=False):
    """An alarm transition, local action or gap, as in DESIGN.md section 4 ("evt")."""

    ts_ns: int
    point: str
    kind: str  # "raise" | "clear" | "action" | "gap" (DESIGN.md section 4, v1)
    rule: str
    msg: str
    value: float | None = None


class DeviceHealth(msgspec.Struct):
    """What a driver knows of one field device's link."""

    state: str = "unknown"  # "ok" | "degraded" | "offline" | "unknown"
    reason: str = ""
    ok_count: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    exceptions: int = 0
    last_success_ns: int | None = None
    offline_since_ns: int | None = None
