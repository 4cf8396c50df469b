"""The gateway as an HJ 212 station reporting to tools.sim.hj212_platform."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cimedge.drivers.hj212 import frame
from cimedge.drivers.hj212.north import NorthConfig, Reporter
from cimedge.edge import config as site_config
from cimedge.edge.errors import ConfigError
from cimedge.edge.model import Quality, Reading
from cimedge.edge.store import Store
from cimedge.tools.sim.hj212_platform import TZ, Platform

MN = "LP0001GW01"
HOUR = 3600 * 10**9


def north(pw: Path, port: int, **change: Any) -> NorthConfig:
    table = {"protocol": "hj212", "host": "127.0.0.1", "port": port, "mn": MN,
             "password_file": str(pw), "interval_s": 0.2, "timeout_s": 2.0,
             "backoff_max_s": 0.05,
             "points": {"aq1.pm25": "a34004", "lp1.noise": "LA", "aq1.pm10": "a34002"}} | change
    return msgspec.convert(table, NorthConfig)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Platform, Reporter, Store, dict]]:
    pw = tmp_path / "north.pw"
    pw.write_text("gw123")
    platform = Platform(MN, "gw123")
    port = await platform.serve()
    store = await Store(tmp_path / "buffer.sqlite").__aenter__()
    now = time.time_ns()
    last = {"aq1.pm25": Reading("aq1.pm25", now, 35.5),
            "lp1.noise": Reading("lp1.noise", now, 99.0, Quality.RANGE),
            "aq1.pm10": Reading("aq1.pm10", now, None, Quality.COMM)}
    reporter = Reporter("env", north(pw, port), store, last)
    task = asyncio.create_task(reporter.run())
    yield platform, reporter, store, last
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await platform.close()
    await store.__aexit__(None, None, None)


async def test_uploads_realtime_with_flags_and_gets_answers(rig: Any) -> None:
    platform, reporter, _, _ = rig
    await platform.until(lambda: len(platform.of(frame.CN_RTD)) >= 2)
    await platform.until(lambda: reporter.stats.answered >= 2)
    upload = platform.of(frame.CN_RTD)[0]
    cp = frame.parse_cp(upload.cp)
    assert (upload.st, upload.mn, upload.pw, upload.wants_answer) == ("22", MN, "gw123", True)
    assert cp.value("a34004", "Rtd") == frame.Value("35.5", "N")
    assert cp.value("LA", "Rtd") == frame.Value("99", "T")
    assert cp.pollutants["a34002"] == {"Flag": "B"}  # no value: the flag alone
    assert platform.of(frame.CN_TIME_CALIBRATION), "asks the platform for the time (1013)"


async def test_answers_time_get_and_set(rig: Any) -> None:
    platform, reporter, _, _ = rig
    await platform.until(lambda: platform.of(frame.CN_RTD))
    got = await platform.ask(frame.CN_GET_TIME)
    assert [p.cn for p in got] == [9011, 1011, 9012]
    when = dt.datetime.strptime(frame.parse_cp(got[1].cp).other["SystemTime"], "%Y%m%d%H%M%S")
    assert abs(when.replace(tzinfo=TZ).timestamp() - time.time()) < 5
    near = dt.datetime.now(TZ).strftime("%Y%m%d%H%M%S")
    far = (dt.datetime.now(TZ) + dt.timedelta(hours=3)).strftime("%Y%m%d%H%M%S")
    ok = await platform.ask(frame.CN_SET_TIME, f"SystemTime={near}")
    refused = await platform.ask(frame.CN_SET_TIME, f"SystemTime={far}")
    assert ok[-1].cp == "ExeRtn=1" and refused[-1].cp == "ExeRtn=2"
    assert reporter.stats.platform_skew_s == pytest.approx(3 * 3600, abs=5)


async def test_history_comes_from_the_buffer(rig: Any) -> None:
    platform, _, store, _ = rig
    base = (time.time_ns() // HOUR - 3) * HOUR
    await store.append([Reading("aq1.pm25", base + i * 600 * 10**9, float(v))
                        for i, v in enumerate([10, 20, 30, 40, 50, 60])]
                       + [Reading("aq1.pm25", base + HOUR + 60 * 10**9, None, Quality.COMM),
                          Reading("lp1.noise", base + 2 * HOUR, 55.0)])
    begin = dt.datetime.fromtimestamp(base / 1e9, TZ).strftime("%Y%m%d%H%M%S")
    end = dt.datetime.fromtimestamp((base + 2 * HOUR) / 1e9, TZ).strftime("%Y%m%d%H%M%S")
    await platform.until(lambda: platform.of(frame.CN_RTD))
    got = await platform.ask(frame.CN_HOUR, f"BeginTime={begin};EndTime={end}")
    assert [p.cn for p in got] == [9011, 2061, 2061, 9012] and got[-1].cp == "ExeRtn=1"
    first, second = (frame.parse_cp(p.cp) for p in got[1:3])
    assert first.data_time == begin and first.pollutants["a34004"] == {
        "Min": "10", "Avg": "35", "Max": "60", "Flag": "N"}
    assert second.value("LA", "Avg") == frame.Value("55", "N")
    empty = await platform.ask(frame.CN_DAY, "BeginTime=20200101000000;EndTime=20200102000000")
    assert empty[-1].cp == "ExeRtn=100"


async def test_wrong_password_and_unknown_requests_are_refused(rig: Any) -> None:
    platform, reporter, _, _ = rig
    await platform.until(lambda: platform.of(frame.CN_RTD))
    bad = await platform.ask(frame.CN_GET_TIME, password="nope")
    other = await platform.ask(3020)
    assert bad[-1].cp == "QnRtn=3" and other[-1].cp == "QnRtn=2"
    assert reporter.stats.refused == 1


async def test_reconnects_after_the_platform_drops(rig: Any) -> None:
    platform, reporter, _, _ = rig
    await platform.until(lambda: reporter.stats.connections == 1 and platform.of(frame.CN_RTD))
    assert platform._writer is not None  # noqa: SLF001
    platform._writer.close()  # noqa: SLF001
    await platform.until(lambda: reporter.stats.connections >= 2)


def test_north_section_loads_and_names_bad_keys(tmp_path: Path) -> None:
    head = ('[gateway]\ndevice_id = "lp-test-01"\n\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\n\n'
            '[devices.aq1]\ndriver = "hj212"\nmode = "listen"\nmn = "A1"\n'
            'password_file = "x"\nlisten_host = "127.0.0.1"\npoints.pm25 = { code = "a34004" }\n\n')
    good = head + ('[north.env]\nprotocol = "hj212"\nhost = "platform.env.invalid"\nport = 6000\n'
                   'mn = "LP0001GW01"\npassword_file = "/etc/cimedge/north.pw"\n'
                   'points = { "aq1.pm25" = "a34004" }\n')
    site = site_config.loads(good, "site.toml")
    assert site.north["env"].points == {"aq1.pm25": "a34004"} and site.north["env"].st == "22"
    with pytest.raises(ConfigError) as err:
        site_config.loads(good.replace('"aq1.pm25" = ', '"aq1.pm2" = '), "site.toml")
    assert err.value.key == "north.env.points.aq1.pm2" and "no configured point" in err.value.reason
    with pytest.raises(ConfigError) as err:
        site_config.loads(good.replace('protocol = "hj212"', 'protocol = "mqtt"'), "site.toml")
    assert err.value.key == "north.env.protocol"
