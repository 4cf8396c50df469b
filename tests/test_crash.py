"""Crash safety by crashing: SIGKILL the gateway and the receiver under load (tools/crashtest.py).

CI runs a few kills; `python -m cimedge.tools.crashtest --kills 50` is the full run (see README).
"""

from __future__ import annotations

import io

import pytest

from cimedge.tools import crashtest
from cimedge.tools.broker import mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


@pytest.mark.parametrize(("target", "kills"), [("gateway", 8), ("receiver", 5)])
def test_sigkill_loses_no_committed_reading_and_stores_none_twice(tmp_path, target, kills):
    out = io.StringIO()
    r = crashtest.run(kills, target, seed=7, work=tmp_path, poll=0.05, gap=(0.2, 0.8),
                      drain_timeout=90, out=out)
    assert r["committed"] >= kills * 3, out.getvalue()  # each kill came after 3 new values
    assert r["lost"] == 0, out.getvalue()
    assert r["duplicated"] == 0, out.getvalue()
    # A poll in flight at a gateway kill may be served and never committed, and so may the
    # last one when the simulator shuts down mid-answer; no more than that.
    assert r["served_not_committed"] <= (kills if target == "gateway" else 0) + 1, out.getvalue()


def test_sigterm_at_random_moments_stops_cleanly_every_time_and_loses_nothing(tmp_path):
    """The 200-stop run is `python -m cimedge.tools.crashtest --kills 200 --signal term`
    (bench/RESULTS.md); a stop that hangs exits 70 by the daemon's own deadline."""
    out = io.StringIO()
    r = crashtest.run(6, "gateway", seed=7, work=tmp_path, poll=0.05, gap=(0.1, 0.6),
                      drain_timeout=90, out=out, sig="term")
    assert r["unclean"] == 0, out.getvalue()  # every stop exited 0
    assert r["committed"] >= 6 * 3, out.getvalue()
    assert r["lost"] == 0, out.getvalue()
    assert r["duplicated"] == 0, out.getvalue()
    assert r["served_not_committed"] <= 6 + 1, out.getvalue()  # polls cancelled in flight
