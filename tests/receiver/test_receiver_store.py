"""Both stores, one suite: each (dev, seq) once, groups in one transaction, conflicts, gaps."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rxkit import T0, Device, new_device

from cimedge.cloud_sync.cose import sign1
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.store import Refusal, SqliteStore, Store, StoreThread, open_store
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.senml import batch_payload, encode_pack
from cimedge.cloud_sync.verify import Verified, verify_message
from cimedge.edge.errors import StoreError
from cimedge.edge.model import Reading


def verified(registry: Registry, device: Device, data: bytes, kind: str = "batch") -> Verified:
    return verify_message(device.dev, kind, data, registry.lookup, now=time.time())


@pytest.fixture
def store(db_target: str) -> Iterator[Store]:
    s = open_store(db_target)
    yield s
    s.close()


def test_stored_once_then_duplicate(store: Store, registry: Registry, device: Device) -> None:
    data = device.batch(1)
    assert store.store(verified(registry, device, data)) == "stored"
    assert store.store(verified(registry, device, data)) == "duplicate"
    assert store.message_count() == 1
    rows = store.readings(device.dev)
    assert len(rows) == 5
    by_name = {r.name: r for r in rows}
    level0 = by_name[f"{device.dev}:ps01.level0"]
    assert (level0.value, level0.unit, level0.quality, level0.seq) == (0.0, "m", "", 1)
    assert level0.t == pytest.approx(T0 + 1, abs=1e-6)
    assert by_name[f"{device.dev}:ps01.level2"].value == 3.0
    assert by_name[f"{device.dev}:ps01.pump"].value is True
    flow = by_name[f"{device.dev}:ps01.flow"]
    assert (flow.value, flow.quality) == (None, "comm")
    assert store.readings("ps-9999") == []


def test_event_message_is_stored(store: Store, registry: Registry, device: Device) -> None:
    assert store.store(verified(registry, device, device.event(1), "event")) == "stored"
    assert store.events(device.dev) == [(device.dev, 1, "ps01.level0", "raise")]
    assert store.readings() == []


def test_same_seq_other_bytes_is_seq_conflict(store: Store, registry: Registry,
                                              device: Device) -> None:
    store.store(verified(registry, device, device.batch(7)))
    with pytest.raises(Reject) as e:
        store.store(verified(registry, device, device.batch(7, base=0.5)))
    assert (e.value.reason, e.value.dev, e.value.seq) == ("seq_conflict", device.dev, 7)
    assert store.conflicts() == [(device.dev, 7)]
    assert store.message_count() == 1
    assert len(store.readings()) == 5  # the first message's readings only
    assert store.rejects() == {("seq_conflict", device.dev): 1}


def test_a_group_is_one_transaction_with_one_result_each(store: Store, registry: Registry,
                                                         device: Device) -> None:
    other = new_device("ps-0002")
    registry.add_enrollment(other.enrollment())
    store.store(verified(registry, device, device.batch(1)))
    group = [verified(registry, device, device.batch(1)),           # stored before
             verified(registry, device, device.batch(2)),           # new
             verified(registry, other, other.batch(2)),             # new, other device
             verified(registry, device, device.batch(2)),           # resent within the group
             verified(registry, device, device.batch(2, base=0.5)),  # conflicts within it
             verified(registry, device, device.batch(1, base=0.5))]  # conflicts with stored
    results = store.commit(group, [Refusal("bad_signature", device.dev, "x"),
                                   Refusal("unknown_kid", None, "y"),
                                   Refusal("bad_signature", device.dev, "z")])
    assert results[:4] == ["duplicate", "stored", "stored", "duplicate"]
    assert [(r.reason, r.seq) for r in results[4:]] == [("seq_conflict", 2), ("seq_conflict", 1)]
    assert store.message_count() == 3
    assert sorted({(r.dev, r.seq) for r in store.readings()}) == [
        (device.dev, 1), (device.dev, 2), (other.dev, 2)]
    assert len(store.readings()) == 15
    assert sorted(store.conflicts()) == [(device.dev, 1), (device.dev, 2)]
    assert store.rejects() == {("bad_signature", device.dev): 2, ("unknown_kid", ""): 1,
                               ("seq_conflict", device.dev): 2}


def test_text_with_nul_is_refused_by_every_store(store: Store, registry: Registry,
                                                 device: Device) -> None:
    recs = encode_pack(device.dev, [Reading("ps01.note", int((T0 + 1) * 1e9), "a\0b")], {})
    v = verified(registry, device, sign1(batch_payload(device.dev, 4, T0, recs), device.key))
    (result,) = store.commit([v])
    assert isinstance(result, Reject)
    assert (result.reason, result.seq) == ("bad_field", 4)
    assert store.message_count() == 0
    assert store.rejects() == {("bad_field", device.dev): 1}


def test_stats_gaps_last_seen_and_rejects(store: Store, registry: Registry,
                                          device: Device) -> None:
    before = time.time()
    for seq in (2, 3, 6, 9):
        store.store(verified(registry, device, device.batch(seq)))
    store.store(verified(registry, device, device.event(4), "event"))
    store.count_reject("bad_signature", device.dev)
    store.count_reject("revoked_kid", "ps-0007")
    store.count_reject("malformed_cbor", None)
    stats = store.stats()
    st = stats[device.dev]
    assert (st.last_seq, st.messages) == (9, 5)
    assert st.gaps == [(1, 1), (5, 5), (7, 8)]
    assert st.missing == 4
    assert st.last_seen is not None
    assert before - 1 <= st.last_seen <= time.time() + 1
    assert st.rejects == {"bad_signature": 1}
    assert (stats["ps-0007"].messages, stats["ps-0007"].rejects) == (0, {"revoked_kid": 1})
    assert "" not in stats


def test_export_iterates_one_device_by_time(store: Store, registry: Registry,
                                            device: Device) -> None:
    for seq in (1, 2, 3):
        store.store(verified(registry, device, device.batch(seq, n=1)))
    every = list(store.iter_readings(device.dev))
    assert [r.seq for r in every] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [r.t for r in every] == sorted(r.t for r in every)
    # Bounds between the batches' times (T0 + seq): T0 is fractional, so a reading's time
    # made whole nanoseconds may sit a float step below T0 + seq; the filter is what is tested.
    since = [r.seq for r in store.iter_readings(device.dev, since=T0 + 1.5)]
    assert since == [2, 2, 2, 3, 3, 3]
    assert [r.seq for r in store.iter_readings(device.dev, T0 + 1.5, T0 + 2.5)] == [2, 2, 2]
    assert list(store.iter_readings("ps-9999")) == []


def test_rejects_are_counted(store: Store) -> None:
    store.count_reject("bad_signature", "ps-0001", "x")
    store.count_reject("bad_signature", "ps-0001", "y")
    store.count_reject("malformed_cbor", None)
    assert store.rejects() == {("bad_signature", "ps-0001"): 2, ("malformed_cbor", ""): 1}


def test_readonly_view_sees_what_the_writer_committed(db_target: str, registry: Registry,
                                                      device: Device) -> None:
    writer = open_store(db_target)
    try:
        writer.store(verified(registry, device, device.batch(1)))
        view = open_store(db_target, readonly=True)
        try:
            assert view.message_count() == 1
            writer.store(verified(registry, device, device.batch(2)))
            assert view.stats()[device.dev].last_seq == 2
        finally:
            view.close()
    finally:
        writer.close()


def test_readonly_view_of_a_missing_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no receiver database there"):
        open_store(tmp_path / "nothing.db", readonly=True)
    assert not (tmp_path / "nothing.db").exists()


def test_pg_receivers_racing_on_the_same_messages_store_each_once(
        pg_url: str, registry: Registry) -> None:
    """Two stores (two receivers' connections) commit overlapping groups at the same time."""
    devices = [new_device(f"ps-{i:04d}") for i in range(8)]
    for d in devices:
        registry.add_enrollment(d.enrollment())
    msgs = [verified(registry, d, d.batch(seq, n=1)) for seq in range(1, 11) for d in devices]
    stores = [open_store(pg_url), open_store(pg_url)]
    try:
        def run(store: Store, order: list[Verified]) -> list[str]:
            out = []
            for i in range(0, len(order), 7):
                out += store.commit(order[i:i + 7])
            return out  # type: ignore[return-value]
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(run, stores[0], msgs)
            b = pool.submit(run, stores[1], msgs[::-1])
            results = a.result() + b.result()
        assert results.count("stored") == len(msgs)
        assert results.count("duplicate") == len(msgs)
        assert stores[0].message_count() == len(msgs)
        assert len(stores[1].readings()) == 3 * len(msgs)
        assert stores[0].conflicts() == []
    finally:
        for s in stores:
            s.close()


def test_pg_unreachable_is_a_store_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match=r"postgresql://127\.0\.0\.1:1/x: cannot connect"):
        open_store("postgresql://nobody@127.0.0.1:1/x")


def test_sqlite_pragmas_are_wal_and_full(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "rx.db")
    db = store._db  # noqa: SLF001 - the durability settings are the point of the test
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.count_reject("malformed_cbor", None)
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # back to FULL after a reject
    store.close()


def test_sqlite_a_failed_group_leaves_nothing(tmp_path: Path, registry: Registry,
                                              device: Device) -> None:
    store = SqliteStore(tmp_path / "rx.db")
    v = verified(registry, device, device.batch(1))
    store._db.execute("CREATE TRIGGER boom BEFORE INSERT ON events "  # noqa: SLF001
                      "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    store.store(v)  # no events: fine
    with pytest.raises(sqlite3.IntegrityError):
        store.commit([verified(registry, device, device.batch(2)),
                      verified(registry, device, device.event(3), "event")])
    assert store.message_count() == 1  # the whole group was rolled back with it
    store.close()


async def test_store_thread_runs_everything_on_one_thread(tmp_path: Path) -> None:
    st = StoreThread(lambda: open_store(tmp_path / "rx.db"))
    await st.open()
    names = {await st.call(lambda _: threading.current_thread().name) for _ in range(5)}
    assert len(names) == 1
    assert names.pop().startswith("cim-receiver-store")
    assert await st.call(lambda s: s.message_count()) == 0
    st.close()
