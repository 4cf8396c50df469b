"""Per-device health bookkeeping shared by the drivers, and the backoff for a device gone silent."""

from __future__ import annotations

import random
import time

import msgspec

from cimedge.edge.errors import BadFrame, DeviceException, DriverError, Timeout
from cimedge.edge.model import DeviceHealth


class HealthBook:
    """Turns poll outcomes into ``DeviceHealth``.

    "ok" after a poll where every request was answered; "degraded" after a poll with some
    failure; "offline" once ``offline_after`` polls in a row got no answer at all,
    ``offline_since_ns`` being the time of the first of them. ``ok_count`` counts fully
    answered polls; ``timeouts``, ``exceptions`` and ``crc_errors`` (bad frames) count
    failed exchanges, writes included.
    """

    def __init__(self, offline_after: int) -> None:
        """Start in state "unknown"."""
        self.offline_after = offline_after
        self.health = DeviceHealth()
        self._failed_polls = 0
        self._down_since_ns = 0

    def copy(self) -> DeviceHealth:
        """A snapshot the caller may keep."""
        return msgspec.structs.replace(self.health)

    def count(self, exc: DriverError) -> None:
        """Count one failed exchange by its kind."""
        h = self.health
        if isinstance(exc, Timeout):
            h.timeouts += 1
        elif isinstance(exc, BadFrame):
            h.crc_errors += 1
        elif isinstance(exc, DeviceException):
            h.exceptions += 1

    def settle(self, answered: int, error: DriverError | None) -> None:
        """Record one poll: how many requests were answered, and the last error if any."""
        h, now = self.health, time.time_ns()
        if answered:
            h.last_success_ns, h.offline_since_ns, self._failed_polls = now, None, 0
        if error is None:
            h.state, h.reason = "ok", ""
            h.ok_count += 1
            return
        h.reason = str(error)
        if answered:
            h.state = "degraded"
            return
        self._failed_polls += 1
        if self._failed_polls == 1:
            self._down_since_ns = now
        if self._failed_polls >= self.offline_after:
            h.state = "offline"
            h.offline_since_ns = h.offline_since_ns or self._down_since_ns
        else:
            h.state = "degraded"


class Silence:
    """Backoff for a device that stopped answering on a shared line.

    After n silent attempts in a row the next is allowed ``uniform(0, min(cap_s, 1.5**n))``
    seconds later (full jitter, n capped at 10, so a fleet does not retry in lockstep).
    ``probing`` is true while the device is silent: its next request is a probe and takes
    the short probe timeout.
    """

    def __init__(self, cap_s: float) -> None:
        """No silence yet."""
        self.cap_s = cap_s
        self.tries = 0
        self._retry_at = 0.0
        self._rng = random.Random()  # backoff jitter, not a secret

    @property
    def probing(self) -> bool:
        """True while the device has not answered its last attempt."""
        return self.tries > 0

    def wait_left(self) -> float:
        """Seconds until the next attempt is allowed; 0 when it is."""
        return max(0.0, self._retry_at - time.monotonic()) if self.tries else 0.0

    def missed(self) -> None:
        """An attempt got no answer."""
        self.tries += 1
        ceiling = min(self.cap_s, 1.5 ** min(10, self.tries))
        self._retry_at = time.monotonic() + self._rng.uniform(0, ceiling)

    def heard(self) -> None:
        """The device answered with a checked frame (an exception answer counts)."""
        self.tries = 0
