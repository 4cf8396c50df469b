"""The gateway buffer: ticks commit whole, batches are recorded before publish, seq never repeats."""

from __future__ import annotations

import sqlite3

from cimedge.edge.model import Event, Quality, Reading
from cimedge.edge.store import Store


def _tick(n: int, t0: int = 1_700_000_000_000_000_000) -> list[Reading]:
    return [Reading(f"d.p{i % 3}", t0 + i, float(i), Quality.GOOD) for i in range(n)]


def _make(seq: int, rows: list) -> bytes:
    return f"{seq}:{len(rows)}:{rows[0].point}".encode()


async def test_append_build_ack_prune(tmp_path):
    async with Store(tmp_path / "b.sqlite") as store:
        await store.append(_tick(10))
        assert await store.has_unbatched(10)
        assert not await store.has_unbatched(11)
        b1 = await store.build_batch("batch", 4, _make, 1)
        b2 = await store.build_batch("batch", 4, _make, 2)
        b3 = await store.build_batch("batch", 4, _make, 3)
        assert (b1.seq, b2.seq, b3.seq) == (1, 2, 3)
        assert (b1.n, b2.n, b3.n) == (4, 4, 2)
        assert await store.build_batch("batch", 4, _make, 4) is None
        assert [b.seq for b in await store.pending(frozenset({1}), 10)] == [2, 3]
        assert await store.mark_acked(2)
        assert not await store.mark_acked(2)  # a repeated ack changes nothing
        d = await store.depth()
        assert (d.readings, d.batches, d.next_seq, d.acked) == (6, 2, 4, 1)


async def test_resend_is_byte_identical_and_seq_survives_restart(tmp_path):
    path = tmp_path / "b.sqlite"
    async with Store(path) as store:
        await store.append(_tick(5))
        first = await store.build_batch("batch", 100, _make, 1)
    async with Store(path) as store:
        again = await store.pending(frozenset(), 10)
        assert again == [first]
        await store.mark_acked(first.seq)
        await store.append(_tick(2))
        nxt = await store.build_batch("batch", 100, _make, 2)
        assert nxt.seq == first.seq + 1


async def test_events_and_alarm_states_commit_with_the_tick(tmp_path):
    path = tmp_path / "b.sqlite"
    ev = Event(5, "d.level", "raise", "high", "level high (4)", 4.0)
    async with Store(path) as store:
        await store.append(_tick(1), [ev], {"high": (True, 5)})
        batch = await store.build_batch("event", 10, lambda s, rows: repr(rows).encode(), 6)
        assert batch.topic == "event"
        assert b"level high" in batch.payload
    async with Store(path) as store:
        assert await store.alarms() == {"high": (True, 5)}


async def test_value_types_round_trip(tmp_path):
    rows: list = []
    async with Store(tmp_path / "b.sqlite") as store:
        await store.append([Reading("d.b", 1, True), Reading("d.s", 2, "ok"),
                            Reading("d.f", 3, 1.5), Reading("d.x", 4, None, Quality.COMM)])
        await store.build_batch("batch", 10, lambda s, r: rows.extend(r) or b"x", 5)
    assert [(r.value, r.quality) for r in rows] == [
        (True, Quality.GOOD), ("ok", Quality.GOOD), (1.5, Quality.GOOD), (None, Quality.COMM)]
    assert type(rows[0].value) is bool


async def test_store_is_wal_with_full_sync(tmp_path):
    async with Store(tmp_path / "b.sqlite"):
        con = sqlite3.connect(tmp_path / "b.sqlite")
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()


class _CountingStore(Store):
    """Counts the write transactions, to see appends grouped into one commit."""

    def __init__(self, *a, **kw) -> None:  # noqa: ANN002, ANN003
        super().__init__(*a, **kw)
        self.txns = 0

    def _txn(self, fn):  # noqa: ANN001, ANN202
        self.txns += 1
        return super()._txn(fn)


async def test_appends_that_arrive_together_share_one_commit(tmp_path):
    import asyncio

    t0 = 1_700_000_000_000_000_000
    async with _CountingStore(tmp_path / "b.sqlite") as store:
        before = store.txns
        # Ten devices' polls at once: each append returns once its tick is committed, and
        # all ten go in one transaction (one fsync) instead of ten.
        await asyncio.gather(*(store.append([Reading(f"d{d}.p{i}", t0 + d, float(i))
                                             for i in range(20)]) for d in range(10)))
        assert store.txns - before == 1
        assert (await store.depth()).readings == 200
        await store.append(_tick(3))  # alone: committed on its own, as before
        assert store.txns - before == 2
        b = await store.build_batch("batch", 1000, lambda seq, rows: repr(
            sorted((r.point, r.value) for r in rows)).encode(), 1)
        assert b.n == 203


async def test_a_bad_tick_in_a_group_does_not_take_the_others_down(tmp_path):
    import asyncio

    t0 = 1_700_000_000_000_000_000
    async with Store(tmp_path / "b.sqlite") as store:
        # The middle tick holds a value SQLite cannot bind (a driver bug), after a new point:
        # the group is retried tick by tick; the point row it wrote is rolled back with it.
        bad = [Reading("x.new", t0, 1.0), Reading("x.bad", t0, [1, 2])]  # type: ignore[arg-type]
        results = await asyncio.gather(
            store.append([Reading("a.p", t0, 1.0)]), store.append(bad),
            store.append([Reading("b.p", t0, 2.0)]), return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], sqlite3.Error)
        await store.append([Reading("x.new", t0 + 1, 3.0)])  # the point comes back for real
        rows: list = []
        b = await store.build_batch("batch", 100, lambda seq, r: rows.extend(r) or b"x", 1)
        assert b.n == 3
        assert sorted((r.point, r.value) for r in rows) == [("a.p", 1.0), ("b.p", 2.0),
                                                             ("x.new", 3.0)]
