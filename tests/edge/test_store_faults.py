"""The buffer under pressure: quota eviction, corrupt files, full and read-only disks, live lane."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from cimedge.edge.errors import StoreError
from cimedge.edge.model import Quality, Reading
from cimedge.edge.store import Store

T0 = 1_760_000_000_000_000_000


def tick(i: int, points: int = 10) -> list[Reading]:
    return [Reading(f"d.p{p}", T0 + i * 10**9, float(i * 100 + p), Quality.GOOD)
            for p in range(points)]


def keep(seq: int, rows: list) -> bytes:
    return repr([(r.point, r.ts_ns) for r in rows]).encode()


async def drain_ids(store: Store) -> list[tuple[str, int]]:
    """Batch and ack everything left; the (point, ts) of every reading that was sent."""
    sent: list[tuple[str, int]] = []
    while b := await store.build_batch("batch", 500, lambda s, r: sent.extend(
            (x.point, x.ts_ns) for x in r) or b"x", 0):
        await store.mark_acked(b.seq)
    return sent


async def test_quota_evicts_oldest_unsent_and_says_exactly_what(tmp_path):
    async with Store(tmp_path / "b.sqlite", quota_bytes=200_000) as store:
        inflight = None
        for i in range(600):
            await store.append(tick(i))
            if i == 5:  # a batch on its way is never evicted
                inflight = await store.build_batch("batch", 60, keep, 0)
        d = await store.depth()
        assert d.evicted > 0
        assert d.used_bytes <= 200_000
        gaps: list = []
        await store.build_batch("event", 10_000, lambda s, rows: gaps.extend(rows) or b"e", 0)
        sent = await drain_ids(store)
    assert {e.kind for e in gaps} == {"gap"} and {e.rule for e in gaps} == {"quota"}
    assert {e.point for e in gaps} == {f"d.p{p}" for p in range(10)}
    assert sum(e.value for e in gaps) == d.evicted
    # what was kept plus what the gap events count is everything that was committed
    kept_ticks = {ts for _, ts in sent}
    assert inflight is not None and inflight.n == 60
    assert len(sent) + 60 + d.evicted == 6000
    assert T0 + 599 * 10**9 in kept_ticks, "the newest data is kept"
    first_kept_after_inflight = min(t for t in kept_ticks)
    assert first_kept_after_inflight > T0 + 6 * 10**9, "the oldest unsent went first"
    assert "dropped" in gaps[0].msg and "Z to " in gaps[0].msg


async def test_corrupt_buffer_is_moved_aside_and_seq_does_not_repeat(tmp_path):
    path = tmp_path / "buffer.sqlite"
    async with Store(path) as store:
        await store.append(tick(0))
        b = await store.build_batch("batch", 100, keep, 0)
        assert b.seq == 1
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    data[0:16] = b"garbage garbage!"  # the header: no longer an SQLite file
    path.write_bytes(bytes(data))
    async with Store(path) as store:
        assert store.moved_aside is not None and store.moved_aside.exists()
        assert "corrupt" in store.error
        await store.append(tick(1))
        b2 = await store.build_batch("batch", 100, keep, 0)
    assert b2.seq > 1, "a seq handed out before must never be handed out again"


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"cim-{uuid.uuid4().hex[:6]}",
                    str(path)], check=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                                reason="mounting a small tmpfs needs root")


@needs_root
async def test_full_disk_is_reported_and_polling_side_keeps_going(tmp_path):
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "600k")
    try:
        async with Store(mnt / "b.sqlite") as store:
            failures = 0
            for i in range(2000):
                try:
                    await store.append(tick(i))
                except StoreError as e:
                    failures += 1
                    assert "full" in str(e)
            assert failures > 0
            assert "full" in (await store.depth()).error
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_root
async def test_full_disk_with_a_quota_evicts_and_keeps_committing(tmp_path):
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "4m")
    try:
        async with Store(mnt / "b.sqlite", quota_bytes=10_000_000) as store:  # quota too big
            for i in range(12000):
                await store.append(tick(i))  # never raises: the nearly full disk evicts
            d = await store.depth()
            assert d.evicted > 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_root
async def test_read_only_file_system_is_reported_not_raised_at_open(tmp_path):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "2m")
    try:
        async with Store(mnt / "b.sqlite") as store:
            await store.append(tick(0))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        async with Store(mnt / "b.sqlite") as store:
            with pytest.raises(StoreError):
                await store.append(tick(1))
            assert (await store.depth()).error
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_live_lane_gets_newest_rows_while_backlog_drains_in_order(tmp_path):
    async with Store(tmp_path / "b.sqlite") as store:
        for i in range(50):
            await store.append(tick(i))
        assert await store.split_live()
        for i in range(50, 53):
            await store.append(tick(i))
        got: list[list] = []

        def grab(seq: int, rows: list) -> bytes:
            got.append([r.ts_ns for r in rows])
            return b"x"
        live = await store.build_batch("batch", 1000, grab, 0, lane="newest")
        assert set(got[-1]) == {T0 + i * 10**9 for i in range(50, 53)}
        old = await store.build_batch("batch", 100, grab, 0)
        assert got[-1][0] == T0 and max(got[-1]) < T0 + 10 * 10**9
        await store.mark_acked(live.seq)
        await store.mark_acked(old.seq)
        rest = await drain_ids(store)
        assert rest == sorted(rest, key=lambda pt: (pt[1], int(pt[0][3:]))), "backlog in order"
        assert len(rest) == 530 - 30 - 100
        assert not (await store.depth()).live_lane, "lanes merge once the backlog is sent"
        con = sqlite3.connect(tmp_path / "b.sqlite")
        assert con.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
