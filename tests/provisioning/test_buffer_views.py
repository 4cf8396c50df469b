"""`cimedge tail`, `points` and `buffer inspect` on a buffer written by the real Store.

The test process holds the Store (the only writer, as the daemon would); the commands run as
subprocesses with read-only connections, while it writes.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time

import pytest
from provkit import ROOT, cimedge, wait_for

from cimedge.edge.model import Event, Quality, Reading
from cimedge.edge.store import Store

T0 = time.time_ns() - 60 * 10**9


def sign(seq: int, rows: list) -> bytes:
    return b"signed" * 20


async def fill(db) -> None:
    async with Store(db) as store:
        await store.append([Reading("ps1.level", T0 + i * 10**9, 1.0 + i / 10) for i in range(10)]
                           + [Reading("ps1.pump_running", T0 + 10**10, True),
                              Reading("m1.v", T0 + 10**10, None, Quality.COMM)],
                           [Event(T0 + 5 * 10**9, "ps1.level", "raise", "wet_well_high",
                                  "wet-well level high", 1.5)])
        assert (await store.build_batch("event", 100, sign, T0)).seq == 1
        assert (await store.build_batch("batch", 5, sign, T0)).seq == 2


@pytest.fixture
def filled(gw):
    asyncio.run(fill(gw / "buffer.sqlite"))
    return gw


def test_buffer_inspect(filled):
    out = cimedge("buffer", "inspect", "--state-dir", filled, "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert (r["readings"], r["readings_unbatched"], r["events"]) == (12, 7, 1)
    assert [(b["seq"], b["topic"], b["records"], b["bytes"]) for b in r["batches"]] == [
        (1, "event", 1, 120), (2, "batch", 5, 120)]
    assert (r["batches_unacked"], r["next_seq"], r["quota_bytes"]) == (2, 3, 50_000_000)
    assert 59 <= r["oldest_age_s"] <= time.time() - T0 / 1e9 + 1
    text = cimedge("buffer", "inspect", "--state-dir", filled).stdout.splitlines()
    assert text[2].startswith("depth       12 readings (7 not yet in a batch), 1 events; oldest ")
    assert text[3] == "batches     2 unacked, 240 bytes; next seq 3, 0 acked so far"
    assert text[5].startswith("  seq 1        event       1 records      120 bytes")


def test_buffer_inspect_shows_evictions_and_gap_events(tmp_path):
    async def overfill() -> None:
        async with Store(tmp_path / "buffer.sqlite", quota_bytes=60_000) as store:
            for tick in range(40):
                await store.append([Reading(f"ps1.p{i}", T0 + tick * 10**9, float(i))
                                    for i in range(50)])
    asyncio.run(overfill())
    r = json.loads(cimedge("buffer", "inspect", "--state-dir", tmp_path, "--json").stdout)
    assert r["evicted_readings"] > 0
    assert r["gap_events"] and r["gap_events"][0]["msg"].startswith("buffer quota reached: "
                                                                     "dropped ")
    assert sum(g["dropped"] for g in r["gap_events"]) == r["evicted_readings"]


def test_points_lists_every_configured_point_with_its_last_value(filled):
    out = cimedge("points", "--state-dir", filled, "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["point"]: r for r in json.loads(out.stdout)}
    assert list(rows) == ["ps1.level", "ps1.pump_running", "m1.v", "m2.v"]
    assert (rows["ps1.level"]["value"], rows["ps1.level"]["quality"]) == (pytest.approx(1.9),
                                                                          "good")
    assert rows["ps1.level"]["source"] == "input 0 float32"
    assert (rows["ps1.pump_running"]["value"], rows["m1.v"]["quality"]) == (True, "comm")
    assert rows["m2.v"]["value"] is None and rows["m2.v"]["ts"] is None
    text = cimedge("points", "--state-dir", filled).stdout.splitlines()
    assert text[0] == "point                              value unit  quality      age  source"
    # the age column is right-aligned: its width depends on how long ago T0 was
    assert re.match(r"ps1\.level {28}1\.9 m {5}good {2,12}\d+ s  modbus ", text[1]), text[1]
    assert text[1].endswith(" s  modbus 127.0.0.1:" + text[1].split(":")[1].split()[0]
                            + " unit 1 input 0 float32")
    assert re.match(r"ps1\.pump_running {20}true {7}good {2,12}\d+ s  modbus ", text[2]), text[2]
    assert text[4] == ("m2.v                                   - V     -              -  modbus "
                       f"{rows['m2.v']['where']} input 3 uint16")


def test_tail_prints_the_last_rows_and_filters_by_point(filled):
    out = cimedge("tail", "--state-dir", filled, "--no-follow", "-n", "3")
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    assert [r[26:] for r in rows] == [
        "EVENT raise  wet_well_high    ps1.level=1.5  wet-well level high",
        "ps1.level                         1.9 m",
        "ps1.pump_running                 true",
        "m1.v                                - V  [comm]"]
    assert rows[0][:26].endswith("Z  ") and rows[0][10] == "T"
    out = cimedge("tail", "--state-dir", filled, "--no-follow", "--point", "ps1.l*", "--json")
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert {g["point"] for g in got} == {"ps1.level"}
    assert [g["type"] for g in got].count("event") == 1


def test_tail_refuses_a_point_that_is_not_configured(filled):
    out = cimedge("tail", "--state-dir", filled, "--point", "ps9.level", "--no-follow")
    assert out.returncode == 1
    assert out.stderr == ("cimedge: --point: no configured point matches 'ps9.level' (points: "
                          "m1.v, m2.v, ps1.level, ps1.pump_running)\n")


def test_tail_follows_rows_committed_while_it_runs(filled):
    proc = subprocess.Popen(
        [sys.executable, "-m", "cimedge.provisioning.cli", "tail", "--state-dir", str(filled), "-n", "0",
         "--json", "--point", "ps1.level", "--duration", "20"], stdout=subprocess.PIPE,
        text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    seen: list[dict] = []
    reader = threading.Thread(target=lambda: seen.extend(json.loads(x) for x in proc.stdout),
                              daemon=True)
    reader.start()

    async def write() -> None:
        async with Store(filled / "buffer.sqlite") as store:
            for i in range(200):  # until tail has shown one: it starts after the rows so far
                await store.append([Reading("ps1.level", time.time_ns(), 4.0 + i),
                                    Reading("ps1.pump_running", time.time_ns(), False)])
                if seen:
                    return
                await asyncio.sleep(0.1)
    try:
        asyncio.run(write())
        wait_for(lambda: seen, what="a followed row")
    finally:
        proc.terminate()
        proc.wait(5)
    assert seen[0]["point"] == "ps1.level" and seen[0]["value"] >= 4.0
    assert seen[0]["quality"] == "good"


def test_views_of_a_gateway_that_never_ran(gw):
    for cmd in (["tail", "--no-follow"], ["buffer", "inspect"]):
        out = cimedge(*cmd, "--state-dir", gw)
        assert (out.returncode, out.stderr) == (
            1, f"cimedge: no buffer at {gw}/buffer.sqlite: the gateway has not run here yet (or "
               "--state-dir/--config points elsewhere)\n")
    out = cimedge("points", "--state-dir", gw)  # configured points, no values yet
    assert out.returncode == 0
    assert [line.split()[1] for line in out.stdout.splitlines()[1:]] == ["-"] * 4
