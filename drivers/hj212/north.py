"""The gateway as an HJ 212-2017 station: it reports its readings to an environmental platform.

A ``[north.NAME]`` table with ``protocol = "hj212"`` names the platform (TCP, plaintext as
the standard is), the gateway's MN and password file, the system code (22 air quality,
23 noise) and which gateway points go out under which pollutant codes. The reporter keeps
one connection (reconnecting with jittered backoff) and:

- uploads real-time data (2011) every ``interval_s`` from the points' last readings, asking
  for the platform's 9014 answer (counted: ``answered``, ``unanswered``);
- answers the platform's requests, each with 9011 (QnRtn) first and 9012 (ExeRtn) last:
  real-time data (2011), minute (2051), hour (2061) and day (2031) data for ``BeginTime`` to
  ``EndTime``, averaged per period from what the gateway's buffer holds (its unacknowledged
  readings: the fleet retention is not there yet), the time (1011: SystemTime), and a time
  setting (1012), which it confirms when the gateway's clock already agrees within
  ``max_clock_skew_s`` and refuses otherwise (the gateway's clock is kept by NTP, not by a
  platform);
- asks the platform for the time once per connection (1013); the platform answers with a
  time setting (1012), taken as above, and how far off it was is kept (``platform_skew_s``).

Reading quality becomes the data flag: GOOD N, RANGE T, STALE and COMM B (communication
failure), a COMM reading with no value sending the flag alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import statistics
import time
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from cimedge.drivers.hj212 import frame
from cimedge.drivers.hj212.config import read_password
from cimedge.edge.errors import BadFrame
from cimedge.edge.model import Quality, Reading
from cimedge.stop import reraise_cancelled

log = logging.getLogger(__name__)
_NS = 1_000_000_000
FMT = "%Y%m%d%H%M%S"
PERIOD_S = {frame.CN_HOUR: 3600, frame.CN_DAY: 86400}
FLAG = {Quality.GOOD: "N", Quality.RANGE: "T", Quality.STALE: "B", Quality.COMM: "B"}


class NorthConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[north.NAME]`` table with ``protocol = "hj212"``."""

    protocol: Literal["hj212"]
    host: Annotated[str, msgspec.Meta(min_length=1)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    mn: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,24}$")]
    password_file: Annotated[str, msgspec.Meta(min_length=1)]
    points: Annotated[dict[str, Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,12}$")]],
                      msgspec.Meta(min_length=1)]
    st: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{2}$")] = "22"
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 60.0
    minute_interval_s: Annotated[int, msgspec.Meta(ge=60, le=3600)] = 600
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    max_clock_skew_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 60.0
    timezone: str = "Asia/Shanghai"
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0

    def problem(self, units: Mapping[str, str]) -> tuple[str, str] | None:
        """The first cross-check this table fails, as (key, reason), or None."""
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return "timezone", f"{self.timezone!r} is not a time zone"
        for point in self.points:
            if point not in units:
                return f"points.{point}", f"no configured point named {point!r}"
        return None


class Stats(msgspec.Struct):
    """What the reporter has done; the status and the tests read it."""

    connections: int = 0
    uploads: int = 0
    answered: int = 0  # 9014 answers to our uploads
    requests: int = 0  # platform requests taken
    refused: int = 0  # platform packets with a wrong PW or MN, or that failed their checks
    history_messages: int = 0
    platform_skew_s: float | None = None
    error: str = ""


class Reporter:
    """One platform link; ``run()`` until cancelled."""

    def __init__(self, name: str, config: NorthConfig, store: Any,
                 last: Mapping[str, Reading]) -> None:
        self.name, self.config, self.store, self.last = name, config, store, last
        self.tz = zoneinfo.ZoneInfo(config.timezone)
        self.stats = Stats()
        self._writer: asyncio.StreamWriter | None = None
        self._qn = ""
        self._tries = 0
        self._rng = random.Random()  # backoff jitter, not a secret

    async def run(self) -> None:
        """Connect, report and answer; reconnect after any failure, backed off."""
        while True:
            try:
                password = read_password(self.config.password_file)
                await self._session(password)
                self._tries = 0
            except (OSError, TimeoutError, ValueError) as exc:
                self.stats.error = str(exc) or type(exc).__name__
                log.warning("north %s: %s", self.name, self.stats.error)
            finally:
                await self._drop()
            self._tries += 1
            cap = min(self.config.backoff_max_s, 1.5 ** min(10, self._tries))
            await asyncio.sleep(self._rng.uniform(0, cap))

    async def _session(self, password: str) -> None:
        cfg = self.config
        async with asyncio.timeout(cfg.timeout_s):
            reader, self._writer = await asyncio.open_connection(cfg.host, cfg.port)
        self.stats.connections += 1
        self.stats.error = ""
        self._send(self._message(frame.CN_TIME_CALIBRATION, "", password, answer=True))
        upload = asyncio.create_task(self._upload_loop(password), name=f"north[{self.name}]")
        try:
            split, buf = frame.Split(), bytearray()
            while data := await reader.read(4096):
                buf += data
                packets, bad = split.split(buf)
                self.stats.refused += bad
                if len(buf) > 16384:  # noqa: PLR2004
                    buf.clear()
                for raw in packets:
                    await self._take(frame.parse(raw), password)
            raise ConnectionError("the platform closed the connection")
        finally:
            upload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upload
            reraise_cancelled()  # the child's end must not swallow our own stop

    async def _upload_loop(self, password: str) -> None:
        while True:
            self._send(self._message(frame.CN_RTD, self._rtd_cp(), password, answer=True))
            self.stats.uploads += 1
            await asyncio.sleep(self.config.interval_s)

    def _send(self, msg: frame.Message) -> None:
        if self._writer is not None:
            for packet in frame.split_packets(msg):
                self._writer.write(frame.encode(packet))

    async def _drop(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _qn_now(self) -> str:
        qn = dt.datetime.now(self.tz).strftime("%Y%m%d%H%M%S%f")[:17]
        if qn <= self._qn:
            qn = str(int(self._qn) + 1)
        self._qn = qn
        return qn

    def _message(self, cn: int, cp: str, password: str, *, answer: bool = False,
                 qn: str = "") -> frame.Message:
        flag = frame.VERSION_2017 | (frame.FLAG_ANSWER if answer else 0)
        return frame.Message(qn=qn or self._qn_now(), st=self.config.st, cn=cn, pw=password,
                             mn=self.config.mn, flag=flag, cp=cp)

    # -- what the platform sends ----------------------------------------------------------

    async def _take(self, msg: frame.Message, password: str) -> None:
        if msg.mn != self.config.mn:
            self.stats.refused += 1
            return
        if msg.cn == frame.CN_DATA_ANSWER:
            self.stats.answered += 1
            return
        self.stats.requests += 1
        if msg.pw != password:
            self.stats.refused += 1
            self._reply(msg, frame.CN_REQUEST_ANSWER, f"QnRtn={frame.QN_BAD_PASSWORD}", password)
            return
        handlers = {frame.CN_GET_TIME: self._get_time, frame.CN_SET_TIME: self._set_time,
                    frame.CN_RTD: self._rtd_now}
        if msg.cn in handlers:
            self._reply(msg, frame.CN_REQUEST_ANSWER, f"QnRtn={frame.QN_READY}", password)
            exe = handlers[msg.cn](msg, password)
        elif msg.cn in (frame.CN_MINUTE, frame.CN_HOUR, frame.CN_DAY):
            self._reply(msg, frame.CN_REQUEST_ANSWER, f"QnRtn={frame.QN_READY}", password)
            exe = await self._history(msg, password)
        else:
            self._reply(msg, frame.CN_REQUEST_ANSWER, f"QnRtn={frame.QN_REFUSED}", password)
            return
        self._reply(msg, frame.CN_EXECUTE_RESULT, f"ExeRtn={exe}", password)

    def _reply(self, request: frame.Message, cn: int, cp: str, password: str) -> None:
        self._send(frame.Message(qn=request.qn, st="91", cn=cn, pw=password, mn=self.config.mn,
                                 flag=frame.VERSION_2017, cp=cp))

    def _time_of(self, msg: frame.Message) -> float | None:
        try:
            text = frame.parse_cp(msg.cp).other.get("SystemTime", "")
            return dt.datetime.strptime(text, FMT).replace(tzinfo=self.tz).timestamp()
        except (BadFrame, ValueError):
            return None

    def _get_time(self, msg: frame.Message, password: str) -> int:
        now = dt.datetime.now(self.tz).strftime(FMT)
        self._send(self._message(frame.CN_GET_TIME, f"SystemTime={now}", password, qn=msg.qn))
        return frame.EXE_OK

    def _set_time(self, msg: frame.Message, password: str) -> int:
        del password
        when = self._time_of(msg)
        if when is None:
            return frame.EXE_FAILED
        skew = when - time.time()
        self.stats.platform_skew_s = skew
        if abs(skew) <= self.config.max_clock_skew_s:
            return frame.EXE_OK
        log.warning("north %s: the platform would set the clock %+.0f s; the gateway's clock "
                    "is kept by NTP and was not changed", self.name, skew)
        return frame.EXE_FAILED

    def _rtd_now(self, msg: frame.Message, password: str) -> int:
        self._send(self._message(frame.CN_RTD, self._rtd_cp(), password, qn=msg.qn))
        return frame.EXE_OK

    def _rtd_cp(self) -> str:
        now = dt.datetime.now(self.tz).strftime(FMT)
        items: list[list[tuple[str, str]]] = [[("DataTime", now)]]
        for point, code in self.config.points.items():
            r = self.last.get(point)
            if r is None:
                continue
            flag = FLAG.get(r.quality, "B")
            if isinstance(r.value, bool | int | float) and r.value is not None:
                items.append([(f"{code}-Rtd", _num(float(r.value))), (f"{code}-Flag", flag)])
            else:
                items.append([(f"{code}-Flag", flag)])
        return frame.build_cp(items)

    async def _history(self, msg: frame.Message, password: str) -> int:
        try:
            cp = frame.parse_cp(msg.cp)
            begin = dt.datetime.strptime(cp.other["BeginTime"], FMT).replace(tzinfo=self.tz)
            end = dt.datetime.strptime(cp.other["EndTime"], FMT).replace(tzinfo=self.tz)
        except (BadFrame, KeyError, ValueError):
            return frame.EXE_FAILED
        period = PERIOD_S.get(msg.cn, self.config.minute_interval_s)
        start_ns = int(begin.timestamp()) * _NS
        end_ns = (int(end.timestamp()) + period) * _NS
        readings = await self.store.readings_between(list(self.config.points), start_ns, end_ns)
        buckets: dict[int, dict[str, list[float]]] = {}
        for r in readings:
            if r.quality is Quality.GOOD and isinstance(r.value, int | float):
                slot = r.ts_ns // _NS // period * period
                buckets.setdefault(slot, {}).setdefault(r.point, []).append(float(r.value))
        for slot in sorted(buckets):
            when = dt.datetime.fromtimestamp(slot, self.tz)
            items: list[list[tuple[str, str]]] = [[("DataTime", when.strftime(FMT))]]
            for point, values in buckets[slot].items():
                code = self.config.points[point]
                items.append([(f"{code}-Min", _num(min(values))),
                              (f"{code}-Avg", _num(statistics.fmean(values))),
                              (f"{code}-Max", _num(max(values))), (f"{code}-Flag", "N")])
            self._send(self._message(msg.cn, frame.build_cp(items), password, qn=msg.qn))
            self.stats.history_messages += 1
        return frame.EXE_OK if buckets else frame.EXE_NO_DATA


def _num(value: float) -> str:
    return f"{value:.6g}"
