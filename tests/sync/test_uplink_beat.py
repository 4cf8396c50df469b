"""The uplink's flushes fall just after the beat that polls fall on (edge/poller.py)."""

from __future__ import annotations

import math

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync.uplink import FLUSH_LAG, Uplink


@pytest.mark.parametrize("interval", [1.0, 0.5, 2.0])
def test_flushes_fall_just_after_the_beat(interval: float) -> None:
    up = Uplink(None, "beat-test-01", Ed25519PrivateKey.generate(), {},  # type: ignore[arg-type]
                flush_interval=interval)
    for t in (1000.0, 1000.01, 1000.05, 1000.3, 1000.999, 12345.678):
        at = up._beat(t)  # noqa: SLF001
        assert t <= at < t + interval + 1e-9  # the first at or after t
        k = (at - FLUSH_LAG) / interval
        assert math.isclose(k, round(k), abs_tol=1e-6)  # on the beat, FLUSH_LAG after it
    # A poll committed on beat B (B + a few ms) goes out at B + FLUSH_LAG, not an interval on.
    assert up._beat(1000.0 + 0.004) == pytest.approx(1000.0 + FLUSH_LAG)  # noqa: SLF001
