"""The whole path with real parts: simulator, mosquitto, the `cimedge run` daemon, the receiver.

The simulator's counter register goes up by one for every poll it answers, so each stored
value is unique: "every reading the simulator served appears once" is checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest

from cimedge.cloud_sync.receiver.ingest import IngestKey, IngestKeys
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.provisioning.backend import ensure_demo_keys
from cimedge.provisioning.demo import DEVICE_ID, site_toml
from cimedge.provisioning.identity import ensure_identity
from cimedge.tools.broker import Mosquitto
from cimedge.tools.sim import pump_station


async def until(cond: Callable[[], object], timeout: float = 30.0) -> None:
    """Wait for cond() to become true, checking every 50 ms (a poll, not a sleep-for-sync)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


class Site:
    """One test site: broker, simulator, receiver in this process; gateway as a subprocess."""

    def __init__(self, tmp: Path, broker: Mosquitto) -> None:
        self.tmp, self.broker = tmp, broker
        self.gateway: subprocess.Popen[bytes] | None = None
        self.stored: list = []
        self.events: list = []

    async def start(self) -> None:
        self.sim = await pump_station.serve(port=0, speed=8.0)
        _, enrollment = ensure_identity(self.tmp, DEVICE_ID, "pump_station")
        registry = Registry(self.tmp / "registry.sqlite")
        registry.load_enrollment_file(enrollment)
        ingest = IngestKeys([IngestKey(ensure_demo_keys(self.tmp))])  # v2 acks are signed
        self.receiver = Receiver("127.0.0.1", self.broker.port, self.tmp / "receiver.sqlite",
                                 registry, ingest=ingest)
        self.rx_task = asyncio.create_task(self.receiver.run())
        (self.tmp / "site.toml").write_text(
            site_toml(self.broker.url, self.sim.port, poll=0.2, flush=0.3, ack_timeout=2.0))
        self.start_gateway()

    def start_gateway(self, env: dict[str, str] | None = None) -> None:
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "cimedge.provisioning.cli", "run", "--config",
             str(self.tmp / "site.toml")], stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            stderr=open(self.tmp / "gateway.log", "ab"))  # noqa: SIM115

    async def stop_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(self.gateway.wait, 20)
        assert rc == 0, (self.tmp / "gateway.log").read_text()
        self.gateway = None

    async def refresh(self) -> None:
        self.stored = await self.receiver.query(lambda s: s.readings(DEVICE_ID))
        self.events = await self.receiver.query(lambda s: s.events(DEVICE_ID))

    def counters(self) -> list[int]:
        return [int(r.value) for r in self.stored
                if r.name.endswith(":ps1.counter") and r.value is not None]

    async def wait_counters(self, n: int, timeout: float = 40.0) -> None:
        async def enough() -> None:
            while len(self.counters()) < n:
                await asyncio.sleep(0.1)
                await self.refresh()
        async with asyncio.timeout(timeout):
            await enough()

    async def close(self) -> None:
        if self.gateway is not None:
            self.gateway.kill()
            self.gateway.wait()
        self.rx_task.cancel()
        await asyncio.gather(self.rx_task, return_exceptions=True)
        await self.sim.close()


@pytest.fixture
async def site(tmp_path, broker) -> AsyncIterator[Site]:
    s = Site(tmp_path, broker)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def finish_and_check(site: Site) -> None:
    """Silence the simulator, let the gateway drain, and compare served with stored."""
    site.sim.mute()  # from here no poll is answered: served_values() is final
    served = site.sim.served_values()
    await site.wait_counters(len(served))
    assert sorted(site.counters()) == served, "every served value stored, exactly once"
    assert len(set(site.counters())) == len(site.counters())
    assert sum(site.receiver.rejects.values()) == 0, dict(site.receiver.rejects)


async def test_every_served_reading_is_stored_once_and_alarm_events_arrive(site):
    await site.wait_counters(20)
    async with asyncio.timeout(40):  # the wet well rises past 3.5 m within a cycle
        while not any(kind == "raise" for *_, kind in site.events):
            await asyncio.sleep(0.1)
            await site.refresh()
    await finish_and_check(site)
    await site.refresh()
    kinds = [(point, kind) for _dev, _seq, point, kind in site.events]
    assert ("ps1.level", "raise") in kinds
    st = json.loads((site.tmp / "status.json").read_text())
    assert st["device_id"] == DEVICE_ID and st["connected"] is True


async def test_broker_restart_mid_run_loses_nothing(site):
    await site.wait_counters(10)
    site.broker.kill()
    before = len(site.sim.served_values())
    await until(lambda: len(site.sim.served_values()) >= before + 10)
    site.broker.start()
    await finish_and_check(site)


async def test_gateway_restart_resends_and_continues_seq(site):
    await site.wait_counters(10)
    await site.stop_gateway()
    site.start_gateway()
    await finish_and_check(site)
    stats = await site.receiver.query(lambda s: s.stats())
    assert stats[DEVICE_ID].gaps == [], "seq continues across a restart without holes"


async def test_replayed_and_tampered_batches_are_refused(site, broker):
    captured: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as spy:
        await spy.subscribe(f"cim/v1/{DEVICE_ID}/batch", qos=1)
        async with asyncio.timeout(20):
            async for message in spy.messages:
                captured.append(bytes(message.payload))
                break
        await site.wait_counters(3)
        stored_before = site.receiver.metrics["stored"]
        dups = site.receiver.metrics["duplicates"]
        await spy.publish(f"cim/v1/{DEVICE_ID}/batch", captured[0], qos=1)
        await until(lambda: site.receiver.metrics["duplicates"] > dups)
        tampered = bytearray(captured[0])
        tampered[-1] ^= 0x01  # the last byte of the signature
        await spy.publish(f"cim/v1/{DEVICE_ID}/batch", bytes(tampered), qos=1)
        await until(lambda: site.receiver.rejects["bad_signature"] == 1)
    assert site.receiver.metrics["stored"] >= stored_before  # live data kept flowing
    await site.refresh()
    counters = site.counters()
    assert len(counters) == len(set(counters)), "the replay stored nothing twice"


def test_bad_config_is_one_clear_line(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text(site_toml("mqtt://127.0.0.1:1", 5020).replace(
        'address = 20\n', 'address = 70000\n'))
    out = subprocess.run([sys.executable, "-m", "cimedge.provisioning.cli", "run", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30, check=False,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.returncode == 1
    line_no = bad.read_text().splitlines().index("address = 70000") + 1
    assert out.stderr.startswith(f"cimedge: {bad}:{line_no}: devices.ps1.points.counter.address:")
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (apt faketime)")
async def test_wall_clock_steps_are_reported_and_lose_nothing(site):
    """The gateway's wall clock (libfaketime, this process only) steps back 30 s, then to 1970."""
    clock = site.tmp / "faketime"
    clock.write_text("+0\n")
    await site.wait_counters(3)
    await site.stop_gateway()
    site.start_gateway({"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(clock),
                        "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    await site.wait_counters(len(site.counters()) + 10)

    async def events_include(rule: str, kind: str) -> None:
        async with asyncio.timeout(30):
            while (rule, kind) not in clock_events(site):
                await asyncio.sleep(0.1)

    clock.write_text("-30\n")  # an NTP correction pulls the clock back 30 s
    await events_include("clock_step", "clear")
    clock.write_text("@1970-01-02 00:00:00\n")  # the RTC lost its battery
    await events_include("clock_invalid", "raise")
    n = len(site.counters())
    await site.wait_counters(n + 10)
    sane_from = 1_735_689_600  # 2025-01-01: every stored time is after it
    assert min(r.t for r in site.stored) > sane_from
    clock.write_text("+0\n")
    await events_include("clock_invalid", "clear")
    await finish_and_check(site)


def clock_events(site: Site) -> set[tuple[str, str]]:
    """(rule, kind) of the gateway.clock events the receiver stored."""
    con = sqlite3.connect(f"file:{site.tmp / 'receiver.sqlite'}?mode=ro", uri=True)
    try:
        return set(con.execute("SELECT rule, kind FROM events WHERE dev=? AND point=?",
                               (DEVICE_ID, "gateway.clock")))
    finally:
        con.close()


async def test_status_of_a_running_gateway(site):
    await site.wait_counters(5)
    async with asyncio.timeout(20):
        while not (site.tmp / "status.json").exists():
            await asyncio.sleep(0.1)
    async with asyncio.timeout(20):
        while True:  # status.json is rewritten every second: wait for one after the first ack
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "cimedge.provisioning.cli", "status",
                                 "--state-dir", str(site.tmp), "--json"],
                capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            report = json.loads(out.stdout)
            if report["daemon"]["sync"]["acked"] >= 1:
                break
            await asyncio.sleep(0.2)
    assert report["running"] is True
    d = report["daemon"]
    assert d["sqlite_version"] and d["connected"] is True
    assert d["sync"]["acked"] >= 1 and d["sync"]["last_ack"] > 0
    buf = report["buffer"]
    assert {"readings", "bytes", "used_bytes", "oldest_age_s", "evicted_readings"} <= set(buf)
    text = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cimedge.provisioning.cli", "status", "--state-dir",
                         str(site.tmp)], capture_output=True, text=True, timeout=30)
    assert text.stdout.splitlines()[1] == "daemon      running"
    assert "last ack" in text.stdout and "evicted" in text.stdout
