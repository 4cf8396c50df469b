"""Site scenarios on the simulators, broker down from start to end, on a hand-moved clock.

Each runs the site template's rules and actions against its simulator over real Modbus TCP
(tests/rules/rig.py): the physics only moves when the test says, so an hour of site time
takes a second and no test sleeps.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator

import pytest

from cimedge.edge import sun
from tests.rules.rig import Rig
from cimedge.tools.sim import lamp_pole, pump_pair, tunnel

S = 1_000_000_000


def starts_and_stops(rig: Rig, action: str) -> list[tuple[int, str, str, str]]:
    """(t, verb, point, why) of every start and stop of an action."""
    out = []
    for e in rig.events:
        if e.rule != action or e.kind != "action":
            continue
        verb, point = e.msg.split(": ", 1)[1].split()[:2]
        if verb in ("start", "stop") and point != "held:":
            out.append((e.ts_ns, verb, point, e.msg.rsplit("(", 1)[1].rstrip(")")))
    return out


# -- pump station --------------------------------------------------------------------------
MIN_RUN, MIN_REST, MAX_STARTS = 40, 90, 3


@pytest.fixture
async def pumps(tmp_path) -> AsyncIterator[tuple[Rig, pump_pair.PumpPair]]:
    pp = await pump_pair.serve(speed=0, seed=7)
    assert pp.station is not None
    rig = Rig(tmp_path, "pump_station", {
        "ps1_host": "127.0.0.1", "ps1_port": pp.station.port, "ps2_host": "127.0.0.1",
        "ps2_port": pp.standby.port, "pump_min_run_s": MIN_RUN, "pump_min_rest_s": MIN_REST,
        "pump_max_starts": MAX_STARTS}, pp.step)
    rig.watch = lambda: {"level": pp.state.level, "p1": pp.state.running,
                         "p2": pp.standby.coil["pump_cmd"]}
    await rig.open()
    try:
        yield rig, pp
    finally:
        await rig.close()
        await pp.close()


async def test_pump_cycles_with_the_level_and_respects_every_interlock(pumps):
    rig, pp = pumps
    await rig.run(600, dt=1.0)
    level = dict(rig.trace)
    moves = starts_and_stops(rig, "pumps")
    starts = [m for m in moves if m[1] == "start"]
    assert len(starts) == 2 * MAX_STARTS, moves
    assert [p for _, _, p, _ in starts] == ["ps1.pump_cmd", "ps2.pump_cmd"] * MAX_STARTS
    assert (pp.state.pump_starts, pp.standby.starts) == (MAX_STARTS, MAX_STARTS)
    assert pp.state.manual, "take_control put the station in manual (gateway) mode"
    for t, state in rig.trace:
        assert not (state["p1"] and state["p2"]), f"both pumps ran at {t}"
        if state["p1"] or state["p2"]:
            assert state["level"] > pump_pair.pump_station.DRY_LEVEL, "a pump ran dry"
    for t, verb, point, why in moves:
        if verb == "start":
            assert level[t]["level"] >= 3.5 and why == "pump_demand on"
        elif why == "pump_demand off":
            assert level[t]["level"] <= 1.2
        else:
            assert why == "interlock dry_run" and level[t]["level"] <= 0.3
    for point in ("ps1.pump_cmd", "ps2.pump_cmd"):
        mine = [(t, verb) for t, verb, p, why in moves if p == point]
        for (t1, v1), (t2, v2) in zip(mine, mine[1:], strict=False):
            if (v1, v2) == ("start", "stop") and "interlock" not in dict(
                    (m[0], m[3]) for m in moves)[t2]:
                assert t2 - t1 >= MIN_RUN * S
            if (v1, v2) == ("stop", "start"):
                assert t2 - t1 >= MIN_REST * S
    held = " ".join(e.msg for e in rig.events if "held" in e.msg)
    for interlock in ("stop held: min run", "start held: min rest", "starts in the last hour"):
        assert interlock in held
    # the first start came in the very poll whose level crossed 3.5 (tick to action: 0 polls)
    first = next(t for t, s in rig.trace if s["level"] >= 3.5)
    assert starts[0][0] == first
    assert rig.kinds("flood") == ["raise"], "latched: stays raised until acknowledged"
    assert len(rig.stored_events()) == len(rig.events)


# -- utility tunnel ------------------------------------------------------------------------
@pytest.fixture
async def tun(tmp_path) -> AsyncIterator[tuple[Rig, tunnel.Tunnel]]:
    sim = await tunnel.serve(speed=0, seed=3)
    rig = Rig(tmp_path, "utility_tunnel", {"ut1_host": "127.0.0.1", "ut1_port": sim.port,
                                           "fan_min_run_s": 30}, sim.step)
    rig.watch = lambda: {"ch4": sim.ch4, "fan": sim.coil["fan_on"], "sump": sim.sump,
                         "pump": sim.coil["sump_pump_on"]}
    await rig.open()
    try:
        yield rig, sim
    finally:
        await rig.close()
        await sim.close()


async def test_tunnel_fan_follows_the_gas_and_the_sump_pump_the_water(tun):
    rig, sim = tun
    await rig.run(1500, dt=2.0)
    fan = starts_and_stops(rig, "fan")
    assert len([m for m in fan if m[1] == "start"]) >= 2, fan
    was, on_since = False, 0
    for t, s in rig.trace:
        read = rig.seen[t]["ut1.ch4"]
        if s["fan"] and not was:
            on_since = t
            assert read >= 20.0, "the fan started only when methane reached 20 %LEL"
        if was and not s["fan"]:
            assert read <= 10.0 and t - on_since >= 30 * S
        was = s["fan"]
    assert max(s["ch4"] for _, s in rig.trace) < 21.5, "ventilation holds the gas at the limit"
    assert rig.kinds("gas_high")[:4] == ["raise", "clear", "raise", "clear"]
    pump = starts_and_stops(rig, "sump_pump")
    assert [m[1] for m in pump][:4] == ["start", "stop", "start", "stop"]
    assert max(s["sump"] for _, s in rig.trace) < 0.85


async def test_restart_mid_alarm_neither_repeats_nor_loses_a_transition(tun):
    rig, sim = tun
    sim.leak = 0.5  # gas over the limit within a minute
    await rig.run(60, dt=2.0)
    assert rig.kinds("gas_high") == ["raise"] and sim.coil["fan_on"]
    await rig.restart()  # mid-alarm, the fan running
    await rig.run(10, dt=2.0)
    assert rig.kinds("gas_high") == ["raise"], "no second raise after the restart"
    assert [m[1] for m in starts_and_stops(rig, "fan")] == ["start"], "the fan kept running"
    sim.leak = 0.0
    await rig.restart()
    await rig.run(120, dt=2.0)
    assert rig.kinds("gas_high") == ["raise", "clear"]
    stored = [k for k, rule, _ in rig.stored_events() if rule == "gas_high"]
    assert stored == ["raise", "clear"], "exactly one of each in the buffer"


# -- lamp pole -----------------------------------------------------------------------------
async def test_lamp_schedule_switches_at_the_computed_times(tmp_path):
    pole = await lamp_pole.serve(speed=0, seed=5)
    zone = zoneinfo.ZoneInfo("Asia/Shanghai")
    noon = dt.datetime(2026, 3, 1, 12, 0, tzinfo=zone)
    rig = Rig(tmp_path, "lamp_pole", {"lp1_host": "127.0.0.1", "lp1_port": pole.port},
              pole.step, start_ns=int(noon.timestamp()) * S)
    await rig.open()
    try:
        await rig.run(2, dt=1.0)
        assert not pole.coil["lamp_on"]
        lat, lon = rig.site.where.lat, rig.site.where.lon
        assert lat is not None and lon is not None
        _, sunset = sun.sun_times(noon.date(), lat, lon)
        sunrise, _ = sun.sun_times(noon.date() + dt.timedelta(days=1), lat, lon)
        expected = [(sunset, True, 100), (noon.replace(hour=23, minute=30), True, 50),
                    (noon.replace(day=2, hour=5, minute=0), True, 100), (sunrise, False, 0)]
        timetable = rig.control.rules.conds["lamp_schedule"].timetable
        for when, lit, dim in expected:
            at = int(when.timestamp()) * S + when.microsecond * 1000
            assert timetable.next_change(rig.clock()) == at
            rig.clock.ns = at - S  # a second before: not yet
            pole.step(1.0)
            await rig.poll()
            assert (pole.coil["lamp_on"], pole.reg["dim_level"]) != (lit, dim)
            await rig.run(1, dt=1.0)  # the poll at the switching time
            assert (pole.coil["lamp_on"], pole.reg["dim_level"]) == (lit, dim)
            await rig.run(1, dt=1.0)  # and the lamp's current follows its switch and dim
            amps = rig.value("lp1.lamp_current")
            assert amps == pytest.approx(0.1 + 0.9 * dim / 100, rel=0.05) if lit else amps == 0
        switches = [e for e in rig.events if e.rule == "lamp_switch" and "start" in e.msg]
        assert switches[0].ts_ns == int(sunset.timestamp()) * S + sunset.microsecond * 1000
        # a lamp that is on but draws nothing: the fault rule after its 10 s delay
        rig.clock.ns = int(sunset.timestamp() + 86400) * S + 3600 * S
        await rig.run(2)
        pole.broken = True
        await rig.run(9)
        assert rig.kinds("lamp_fault") == []
        await rig.run(3)
        assert rig.kinds("lamp_fault") == ["raise"]
        pole.broken = False
        await rig.run(2)
        assert rig.kinds("lamp_fault") == ["raise", "clear"]
    finally:
        await rig.close()
        await pole.close()


# -- roadside unit -------------------------------------------------------------------------
async def test_roadside_fan_starts_on_overheat_and_stops_with_hysteresis(tmp_path):
    from cimedge.tools.sim import roadside

    sim = await roadside.serve(speed=0, seed=4)
    rig = Rig(tmp_path, "roadside_unit", {"rsu1_host": "127.0.0.1", "rsu1_port": sim.port},
              sim.step)
    rig.watch = lambda: {"temp": sim.temp, "fan": sim.coil["fan_on"]}
    await rig.open()
    try:
        await rig.run(1800, dt=5.0)
    finally:
        await rig.close()
        await sim.close()
    fan = starts_and_stops(rig, "fan")
    assert [m[1] for m in fan][:4] == ["start", "stop", "start", "stop"], fan
    for t, verb, _, _ in fan:
        read = rig.seen[t]["rsu1.cabinet_temp"]
        assert read >= 45.0 if verb == "start" else read <= 38.0
    assert max(s["temp"] for _, s in rig.trace) < 46.5
