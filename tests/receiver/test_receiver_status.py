"""Gateway status and the fleet view over both stores: decode limits, latest status, last
seen, open alarms, a device's points, decimated series, silent gateways, `receiver fleet`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import cbor2
import pytest
from rxkit import T0, Device, new_device, running

from cimedge.cloud_sync.cose import sign1
from cimedge.cloud_sync.receiver.fleet import fleet_lines, fleet_rows
from cimedge.cloud_sync.receiver.fleetdb import FleetDB
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.cloud_sync.receiver.status import MAX_STATUS_BYTES, decode_status
from cimedge.cloud_sync.receiver.store import Store, open_store
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.senml import batch_payload, encode_pack, event_payload
from cimedge.cloud_sync.transport import Transport
from cimedge.cloud_sync.verify import verify_message
from cimedge.edge.model import Event, Reading
from cimedge.provisioning.cli import main
from cimedge.tools.broker import Mosquitto

NOW = time.time()


class _Out:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def cimedge(capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    """`cimedge ARGS` in this process: exit code, stdout, stderr."""
    def run(*argv: object) -> _Out:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = int(e.code or 0)
        out = capsys.readouterr()
        return _Out(code, out.out, out.err)
    return run


@pytest.fixture
def store(db_target: str) -> Iterator[Store]:
    s = open_store(db_target)
    yield s
    s.close()


def _commit(store: Store, registry: Registry, dev: Device, kind: str, data: bytes) -> None:
    store.commit([verify_message(dev.dev, kind, data, registry.lookup, now=time.time())])


def _events(dev: Device, seq: int, *evts: tuple[float, str, str, str]) -> bytes:
    evt = [Event(int(t * 1e9), point, kind, rule, f"{rule} {kind}", 4.2)
           for t, point, kind, rule in evts]
    return sign1(event_payload(dev.dev, seq, evts[-1][0], evt), dev.key)


# -- decoding ------------------------------------------------------------------------------

def test_status_fields_are_read_and_the_rest_kept() -> None:
    raw = cbor2.dumps({"online": True, "ts": NOW, "sw": "1.4.0", "config": "17", "contract": 2,
                       "backlog": 1200, "oldest_unacked_s": 42.5, "clock": "ok",
                       "devices": {"pump1": "ok", "meter": "offline"}, "kid": b"\1" * 8,
                       "uptime_s": 3600, "blob": b"\xff\x00"})
    s = decode_status("ps-0001", raw)
    assert (s.online, s.sw, s.config, s.contract, s.backlog, s.oldest_unacked_s, s.clock) == \
        (True, "1.4.0", "17", 2, 1200, 42.5, "ok")
    assert s.devices == {"pump1": "ok", "meter": "offline"} and s.kid == b"\1" * 8
    assert s.extra == {"uptime_s": 3600, "blob": "ff00"} and s.raw == raw and not s.signed
    assert decode_status("ps-0001", cbor2.dumps({"online": False})).online is False


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xa1\x66online", "malformed_cbor"),  # truncated
    (cbor2.dumps([True]), "malformed_payload"),
    (cbor2.dumps({1: True}), "malformed_payload"),
    (cbor2.dumps({"online": 1}), "bad_field"),
    (cbor2.dumps({"backlog": -1}), "bad_field"),
    (cbor2.dumps({"oldest_unacked_s": float("nan")}), "bad_field"),
    (cbor2.dumps({"sw": "x" * 65}), "bad_field"),
    (cbor2.dumps({"devices": {"a": {"b": {"c": 1}}}}), "too_deep"),
    (cbor2.dumps({"kid": b"short"}), "bad_field"),
    (cbor2.dumps({"pad": b"\0" * MAX_STATUS_BYTES}), "too_large"),
    (cbor2.dumps(cbor2.CBORTag(1, 0)), "malformed_cbor"),
])
def test_bad_status_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(Reject) as e:
        decode_status("ps-0001", raw)
    assert e.value.reason == reason


# -- the store ------------------------------------------------------------------------------

def test_latest_status_and_when_online_changed(store: Store) -> None:
    db = FleetDB(store)
    db.record_status(decode_status("ps-0001", cbor2.dumps({"online": True, "sw": "1.0"})),
                     1_000 * 10**9, live=True)
    db.record_status(decode_status("ps-0001", cbor2.dumps({"online": True, "sw": "1.1"})),
                     1_010 * 10**9, live=True)
    s = db.statuses()["ps-0001"]
    assert (s.online, s.sw, s.changed_at, s.seen_at, s.status_at) == (True, "1.1", 1000, 1010,
                                                                      1010)
    db.record_status(decode_status("ps-0001", cbor2.dumps({"online": False})),
                     1_020 * 10**9, live=True)
    s = db.statuses()["ps-0001"]
    assert (s.online, s.sw, s.changed_at, s.seen_at) == (False, None, 1020, 1020)
    # A retained copy handed over at subscribe time is state, not a sign of life.
    db.record_status(decode_status("ps-0001", cbor2.dumps({"online": False, "x": [1]})),
                     1_050 * 10**9, live=False)
    s = db.statuses()["ps-0001"]
    assert (s.online, s.changed_at, s.seen_at, s.status_at, s.extra) == (False, 1020, 1020,
                                                                         1050, {"x": [1]})


def test_open_alarms_are_raises_without_a_later_clear(store: Store, registry: Registry,
                                                      device: Device) -> None:
    _commit(store, registry, device, "event", _events(
        device, 1, (T0, "level", "raise", "high"), (T0 + 1, "gas", "raise", "h2s")))
    _commit(store, registry, device, "event", _events(
        device, 2, (T0 + 5, "level", "clear", "high"), (T0 + 6, "level", "raise", "high"),
        (T0 + 7, "door", "action", "fan")))
    _commit(store, registry, device, "event", _events(device, 3, (T0 + 9, "gas", "clear", "h2s")))
    db = FleetDB(store)
    alarms = db.open_alarms()
    assert [(a.dev, a.seq, a.point, a.rule, a.value) for a in alarms] == [
        (device.dev, 2, "level", "high", 4.2)]
    assert alarms[0].t == pytest.approx(T0 + 6)
    assert db.open_alarms("ps-9999") == []
    assert db.raised(device.dev, 2, "level", "high")
    assert not db.raised(device.dev, 2, "level", "low")
    assert not db.raised(device.dev, 3, "gas", "h2s")  # a clear is no raise


def test_points_with_last_value_and_hours_decimated(store: Store, registry: Registry,
                                                    device: Device) -> None:
    t0 = 1_750_000_000.0
    seq = 0
    for start in range(0, 21_600, 7_200):  # six hours of 1-s readings in 3 batches
        seq += 1
        readings = [Reading("well.level", int((t0 + start + i) * 1e9), (start + i) % 1000 / 10)
                    for i in range(7_200)]
        if start == 0:
            readings.append(Reading("pump.run", int(t0 * 1e9), True))
        recs = encode_pack(device.dev, readings, {"well.level": "m"})
        _commit(store, registry, device, "batch",
                sign1(batch_payload(device.dev, seq, t0 + start, recs), device.key))
    db = FleetDB(store)
    points = {p.point: p for p in db.points(device.dev)}
    assert set(points) == {"well.level", "pump.run"}
    assert (points["well.level"].value, points["well.level"].unit) == (59.9, "m")  # 21599 % 1000
    assert points["well.level"].t == pytest.approx(t0 + 21_599)
    assert points["pump.run"].value is True
    s = db.series(device.dev, "well.level", t0, t0 + 21_600, 800)
    assert len(s.t) == 800 and s.readings == 21_600 and sum(s.n) == 21_600
    assert min(s.lo) == 0.0 and max(s.hi) == 99.9
    assert s.bucket_s == pytest.approx(27) and s.n == [27] * 800
    assert (s.lo[1], s.hi[1]) == (2.7, 5.3)  # readings 27..53 of the second bucket
    assert all(lo <= hi for lo, hi in zip(s.lo, s.hi, strict=True))
    short = db.series(device.dev, "well.level", t0 + 100, t0 + 110, 800)  # undecimated
    assert short.n == [1] * 10 and short.lo == short.hi == [(100 + i) / 10 for i in range(10)]
    assert db.series(device.dev, "pump.run", t0, t0 + 10, 10).hi == [1.0]
    assert db.series(device.dev, "nothing", t0, t0 + 10, 10).t == []
    assert db.messages(device.dev) == (3, 3) and db.gaps(device.dev) == []


def test_fleet_flags_silent_gateways_first(store: Store, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "fleet-registry.db")
    devices = {name: new_device(name) for name in ("ps-0001", "ps-0002", "ps-0003", "lp-0004")}
    records = [(d.enrollment(), name) for name, d in devices.items()]
    records[3][0]["site_type"] = "lamp_pole"
    registry.add_enrollments(records)
    for name in ("ps-0001", "ps-0002", "lp-0004"):
        _commit(store, registry, devices[name], "batch", devices[name].batch(1))
    db = FleetDB(store)
    db.record_status(decode_status("ps-0001", cbor2.dumps({"online": True, "backlog": 5})),
                     time.time_ns(), live=True)
    db.record_status(decode_status("ps-0002", cbor2.dumps({"online": False})),
                     time.time_ns(), live=True)
    now = time.time()
    rows = fleet_rows(registry.list(), db, now + 600)  # ten minutes later
    by = {r.dev: r for r in rows}
    assert [r.dev for r in rows] == ["ps-0001", "ps-0002", "ps-0003", "lp-0004"]
    assert by["ps-0003"].silent_reason == "enrolled, never seen"
    assert by["ps-0001"].silent_reason.startswith("not seen for 10 min (allowed 3 min)")
    assert not by["lp-0004"].silent  # a lamp pole may be quiet for 15 min
    assert (by["ps-0001"].state, by["ps-0002"].state, by["ps-0003"].state) == (
        "online", "offline", "unknown")
    assert (by["ps-0001"].backlog, by["ps-0001"].last_seq) == (5, 1)
    assert not any(r.silent for r in fleet_rows(registry.list(), db, now,
                                                {"pump_station": 1e9}) if r.last_seen)
    lines = fleet_lines(rows, now + 600)
    assert lines[1].startswith("!  ps-0001") and lines[-1] == (
        "4 gateways: 3 silent, 1 online, 1 offline, 0 open alarms")
    registry.close()


def test_receiver_fleet_command(tmp_path: Path, registry: Registry, device: Device,
                                cimedge) -> None:  # noqa: ANN001
    db = tmp_path / "rx.db"
    store = open_store(db)
    _commit(store, registry, device, "batch", device.batch(1))
    _commit(store, registry, device, "event", _events(device, 2, (time.time(), "lvl", "raise",
                                                                  "high")))
    FleetDB(store).record_status(decode_status(device.dev, cbor2.dumps(
        {"online": True, "sw": "2.0", "contract": 2})), time.time_ns(), live=True)
    store.close()
    out = cimedge("receiver", "fleet", "--db", db, "--registry", tmp_path / "registry.db")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[:4] == [device.dev, "pump_station", "online",
                                                      out.stdout.split()[13]]
    assert "2.0/-/2" in out.stdout and out.stdout.splitlines()[-1] == \
        "1 gateways: 0 silent, 1 online, 0 offline, 1 open alarms"
    js = cimedge("receiver", "fleet", "--db", db, "--registry", tmp_path / "registry.db",
                 "--json", "--silent-after", "pump_station=0.001")
    row = json.loads(js.stdout)["gateways"][0]
    assert (row["dev"], row["silent"], row["open_alarms"], row["sw"]) == (device.dev, True, 1,
                                                                           "2.0")
    bad = cimedge("receiver", "fleet", "--db", db, "--silent-after", "pump_station")
    assert bad.returncode == 2 and "is not TYPE=SECONDS" in bad.stderr
    missing = cimedge("receiver", "fleet", "--db", tmp_path / "none.db", "--registry",
                      tmp_path / "registry.db")
    assert missing.returncode == 1 and "no receiver database there" in missing.stderr


# -- end to end: the gateway's transport, the broker's will, the receiver --------------------

async def _status_of(rx: Receiver, dev: str, online: bool) -> None:  # noqa: FBT001
    async with asyncio.timeout(20):
        while True:
            statuses = await rx.query(lambda s: FleetDB(s).statuses())
            if dev in statuses and statuses[dev].online is online:
                return
            await asyncio.sleep(0.05)


async def test_receiver_sees_gateways_come_and_go(broker: Mosquitto, registry: Registry,
                                                  device: Device, tmp_path: Path) -> None:
    async def noop(_: bytes) -> None:
        return None

    rx = Receiver("127.0.0.1", broker.port, tmp_path / "rx.db", registry)
    async with running(rx):
        # The gateway's own transport: retained online status; a clean stop says offline.
        link = Transport(broker.url, device.dev, noop)
        task = asyncio.create_task(link.run())
        await _status_of(rx, device.dev, True)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await _status_of(rx, device.dev, False)
        # A connection that breaks: the broker publishes the will.
        will = aiomqtt.Will(f"cim/v1/{device.dev}/status", cbor2.dumps({"online": False}), 1,
                            True)
        client = aiomqtt.Client("127.0.0.1", broker.port, will=will,
                                protocol=aiomqtt.ProtocolVersion.V5)
        await client.__aenter__()
        await client.publish(f"cim/v1/{device.dev}/status", cbor2.dumps({"online": True}),
                             qos=1, retain=True)
        await client.publish("cim/v1/ps-9999/status", cbor2.dumps({"online": True}), qos=1)
        await client.publish(f"cim/v1/{device.dev}/status", b"\xff", qos=1)
        await _status_of(rx, device.dev, True)
        client._client.socket().close()  # noqa: SLF001 - the link breaks, no DISCONNECT
        await _status_of(rx, device.dev, False)
        with pytest.raises(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
        assert rx.metrics["status_rejects"] == {"unknown_device": 1, "malformed_cbor": 1}
        seen = (await rx.query(lambda s: FleetDB(s).statuses()))[device.dev].seen_at
    # A receiver starting later gets the retained status, without taking it as a sign of life.
    rx2 = Receiver("127.0.0.1", broker.port, tmp_path / "rx2.db", registry)
    async with running(rx2):
        await _status_of(rx2, device.dev, False)
        s = (await rx2.query(lambda s: FleetDB(s).statuses()))[device.dev]
        assert (s.seen_at, s.changed_at) == (None, None) and seen is not None
