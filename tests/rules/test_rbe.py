"""Report by exception: a steady value costs nothing, a change goes at once, so does a heartbeat."""

from __future__ import annotations

from cimedge.edge.model import Quality, Reading
from cimedge.edge.rbe import PointReport, Rbe, ReportConfig

S = 1_000_000_000


def kept(rbe: Rbe, point: str, values: list[object], dt: float = 1.0) -> list[int]:
    """Indexes of the readings kept, one per ``dt`` seconds."""
    out = []
    for i, v in enumerate(values):
        q = Quality.COMM if v is None else Quality.GOOD
        if rbe.keep([Reading(point, int(i * dt * S), v, q)]):
            out.append(i)
    return out


def test_default_keeps_everything():
    assert kept(Rbe(ReportConfig()), "d.x", [1.0, 1.0, 1.0]) == [0, 1, 2]


def test_deadband_against_the_last_kept_value():
    rbe = Rbe(ReportConfig(points={"d": {"x": PointReport(deadband=0.5)}}))
    # 0.2 steps: each below the band, but they add up against the last *kept* value
    assert kept(rbe, "d.x", [0.0, 0.2, 0.4, 0.6, 0.7, 0.3, 0.1]) == [0, 3, 6]


def test_max_interval_is_a_heartbeat():
    rbe = Rbe(ReportConfig(deadband=1.0, max_interval_s=10.0))
    assert kept(rbe, "d.x", [5.0] * 25) == [0, 10, 20]


def test_quality_change_and_digital_change_always_go():
    rbe = Rbe(ReportConfig(deadband=100.0))
    assert kept(rbe, "d.x", [1.0, None, None, 1.0, 1.0]) == [0, 1, 3]
    assert kept(rbe, "d.door", [False, False, True, True, False]) == [0, 2, 4]
    assert kept(rbe, "d.mode", ["auto", "auto", "hand"]) == [0, 2]


def test_counts():
    rbe = Rbe(ReportConfig(deadband=1.0))
    kept(rbe, "d.x", [1.0, 1.1, 1.2, 5.0])
    assert (rbe.kept, rbe.dropped) == (2, 2)
