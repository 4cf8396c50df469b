"""Plan: fewest requests, at most 125 registers or 2000 bits, gaps read through up to max_gap."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hypothesis import given
from hypothesis import strategies as st

from cimedge.drivers.modbus.plan import Request, coalesce


@dataclass(frozen=True)
class P:
    table: str
    address: int
    width: int = 1


def plan(points: dict[str, P], **kw: int) -> list[tuple[str, int, int, tuple[str, ...]]]:
    return [(r.table, r.address, r.count, r.points) for r in coalesce(points, **kw)]  # type: ignore[arg-type]


def test_contiguous_points_make_one_request() -> None:
    points = {"a": P("input", 0, 2), "b": P("input", 2, 2), "c": P("input", 4, 1)}
    assert plan(points) == [("input", 0, 5, ("a", "b", "c"))]


def test_gap_up_to_max_gap_is_read_through() -> None:
    points = {"a": P("input", 0, 2), "b": P("input", 10, 2)}  # 8 unused registers between
    assert plan(points, max_gap=8) == [("input", 0, 12, ("a", "b"))]
    assert plan(points, max_gap=7) == [("input", 0, 2, ("a",)), ("input", 10, 2, ("b",))]


def test_zero_gap_merges_only_neighbours() -> None:
    points = {"a": P("holding", 0), "b": P("holding", 1), "c": P("holding", 3)}
    assert plan(points, max_gap=0) == [("holding", 0, 2, ("a", "b")), ("holding", 3, 1, ("c",))]


def test_no_request_exceeds_125_registers() -> None:
    points = {f"p{i}": P("input", 2 * i, 2) for i in range(70)}  # 140 registers back to back
    got = plan(points)
    assert [(a, n) for _, a, n, _ in got] == [(0, 124), (124, 16)]
    assert sum(len(names) for *_, names in got) == 70


def test_bits_allow_2000_and_sixteen_times_the_gap() -> None:
    coils = {f"c{i}": P("coil", i) for i in range(2100)}
    assert [(a, n) for _, a, n, _ in plan(coils)] == [(0, 2000), (2000, 100)]
    sparse = {
        "a": P("discrete", 0),
        "b": P("discrete", 129),
    }  # 128 unused bits = 8 registers' worth
    assert plan(sparse, max_gap=8) == [("discrete", 0, 130, ("a", "b"))]
    assert len(plan(sparse, max_gap=7)) == 2


def test_tables_never_mix_and_come_in_fixed_order() -> None:
    points = {"c": P("coil", 0), "i": P("input", 0), "h": P("holding", 0), "d": P("discrete", 0)}
    assert [t for t, *_ in plan(points)] == ["holding", "input", "coil", "discrete"]


def test_overlapping_points_share_a_request() -> None:
    points = {"raw": P("input", 8), "bit2": P("input", 8), "word": P("input", 8, 2)}
    assert plan(points) == [("input", 8, 2, ("raw", "bit2", "word"))]


def test_request_is_a_frozen_struct() -> None:
    r = coalesce({"a": P("input", 3)})[0]  # type: ignore[dict-item]
    assert r == Request("input", 3, 1, ("a",))


spans = st.lists(
    st.tuples(
        st.sampled_from(["input", "holding"]), st.integers(0, 300), st.sampled_from([1, 2, 4, 20])
    ),
    min_size=1,
    max_size=12,
)


def fewest(spans_sorted: tuple[tuple[int, int], ...], max_regs: int, max_gap: int) -> int:
    """Fewest runs of consecutive (address-sorted) points, by dynamic programming."""

    @cache
    def best(i: int) -> int:
        if i == len(spans_sorted):
            return 0
        result, start, end = 10**9, spans_sorted[i][0], spans_sorted[i][0]
        for j in range(i, len(spans_sorted)):
            a, w = spans_sorted[j]
            if j > i and a - end > max_gap:
                break
            end = max(end, a + w)
            if end - start > max_regs:
                break
            result = min(result, 1 + best(j + 1))
        return result

    return best(0)


@given(spans, st.integers(0, 10), st.sampled_from([20, 30, 125]))
def test_plan_covers_every_point_once_within_limits(
    raw: list[tuple[str, int, int]], max_gap: int, max_regs: int
) -> None:
    points = {f"p{i}": P(t, a, w) for i, (t, a, w) in enumerate(raw)}
    requests = coalesce(points, max_regs=max_regs, max_gap=max_gap)  # type: ignore[arg-type]
    seen = [name for r in requests for name in r.points]
    assert sorted(seen) == sorted(points)
    for r in requests:
        assert 1 <= r.count <= max_regs
        members = sorted((points[n].address, points[n].address + points[n].width) for n in r.points)
        assert members[0][0] == r.address
        assert max(end for _, end in members) == r.address + r.count
        covered = r.address
        for a, end in members:
            assert points[r.points[0]].table == r.table
            assert a - covered <= max_gap  # no unused run longer than max_gap
            covered = max(covered, end)
    for table in ("input", "holding"):
        mine = tuple(sorted((p.address, p.width) for p in points.values() if p.table == table))
        got = sum(1 for r in requests if r.table == table)
        assert got == fewest(mine, max_regs, max_gap)
