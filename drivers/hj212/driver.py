"""HJ 212-2017 station driver: the platform end stations report to, or a poller; the only I/O module.

``mode = "listen"``: the station connects to the gateway (``listen_host``/``listen_port``,
shared with other HJ 212 devices there; each packet goes to the device of its MN) and
uploads real-time (2011), minute (2051), hour (2061) and day (2031) data; a packet asking
for an answer gets 9014. ``mode = "poll"``: the gateway connects to the station
(``host``/``port``) and asks for each kind of data a point needs at every poll (9011 request
answer, the data, 9012 execution result).

Every packet is checked (CRC, length, PW, MN); a bad one is counted and dropped, the link
goes on. Real-time values are stamped by their DataTime; hour and day averages when their
period ends, minute data on arrival (the station's minute interval is its own setting). Split messages (PNUM/PNO) are joined before use. A value's data flag sets its
quality (``frame.FLAGS``). A station whose clock is more than ``max_clock_skew_s`` off has
its readings stamped on arrival instead, and (``set_clock``) is sent the time (1012); a
station asking for the time (1013) gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
import zoneinfo
from typing import Self

from cimedge.drivers import tcp_listen
from cimedge.drivers.health import Silence
from cimedge.drivers.hj212 import frame
from cimedge.drivers.hj212.config import DeviceConfig, read_password
from cimedge.drivers.latest import Latest
from cimedge.edge.errors import BadFrame, DeviceException, DriverError, Timeout
from cimedge.edge.model import DeviceHealth, Quality, Reading, Value
from cimedge.stop import reraise_cancelled

log = logging.getLogger(__name__)
_NS = 1_000_000_000
SET_CLOCK_EVERY_S = 600.0  # at most one clock setting per station this often
TIME_FMT = "%Y%m%d%H%M%S"
PERIOD_NS = {frame.CN_HOUR: 3600 * _NS, frame.CN_DAY: 86400 * _NS}  # minute data: on arrival


class Driver:
    """One HJ 212 station (see ``drivers.base.Driver``); its points are read-only."""

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; the password file is read and the socket opened in ``__aenter__``."""
        config.check()
        self.device, self.config = device, config
        self.tz = zoneinfo.ZoneInfo(config.timezone)
        self.latest = Latest(device, {n: config.stale_s(p) for n, p in config.points.items()},
                             config.offline_after)
        self.password = ""
        self.assembler = frame.Assembler()
        self.silence = Silence(config.backoff_max_s)
        self.listener: tcp_listen.Listener | None = None
        self.counts = {"packets": 0, "refused": 0, "ignored": 0, "clock_off": 0,
                       "clock_set": 0}  # fmt: skip
        self._conn: tcp_listen.Conn | None = None  # the station's connection (listen mode)
        self._waiting: dict[str, asyncio.Queue[frame.Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._last_qn = ""
        self._clock_set_at = 0.0
        self._trouble = ""  # the last problem with what the station sent, for health

    @property
    def where(self) -> str:
        """The station, for messages."""
        return f"{self.device} (HJ 212 MN {self.config.mn})"

    async def __aenter__(self) -> Self:
        """Read the password and listen (listen mode); trouble shows in health, not here."""
        await self._open()
        return self

    async def _open(self) -> None:
        """Read the password file (again, until it can be read), then listen in listen mode.

        A missing or bad password file leaves this device reading COMM with the reason in
        its health, and the rest of the gateway running; fixing the file takes effect at
        the next poll.
        """
        if not self.password:
            try:
                self.password = read_password(self.config.password_file)
            except ValueError as exc:
                self._trouble = str(exc)
                return
            self._trouble = ""
        if self.config.mode == "listen" and self.listener is None:
            cfg = self.config
            self.listener = await tcp_listen.acquire(
                cfg.listen_host, cfg.listen_port, cfg.mn, self,
                lambda: tcp_listen.Listener(cfg.listen_host, cfg.listen_port, frame.Split(),
                                            max_connections=cfg.max_connections,
                                            idle_s=cfg.idle_timeout_s))
            self.latest.why_not = self.listener.error

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening or disconnect, also when cancelled."""
        if self.listener is not None:
            listener, self.listener = self.listener, None
            await tcp_listen.release(listener, self.config.mn)
        await self._disconnect()

    def health(self) -> DeviceHealth:
        """A copy of what this driver knows of the station."""
        return self.latest.book.copy()

    async def write(self, point: str, value: Value) -> None:
        """HJ 212 points are measurements: not writable."""
        msg = f"{self.device}.{point}: HJ 212 points are read-only ({value!r})"
        raise ValueError(msg)

    async def read(self) -> list[Reading]:
        """One Reading per configured point, in config order (the last value reported)."""
        async with self._lock:
            await self._open()
            if not self.password:
                self.latest.why_not = self._trouble
            elif self.config.mode == "poll":
                try:
                    await self._poll()
                except DriverError as exc:
                    self.latest.book.count(exc)
                    self.latest.why_not = str(exc)
                else:
                    self.latest.why_not = ""
            elif self.listener is not None:
                if self.listener.error and await self.listener.start():
                    log.info("%s: listening on %s:%s", self.where, self.listener.host,
                             self.listener.bound_port)
                self.latest.why_not = self.listener.error or self._trouble or (
                    "" if self._conn is not None else "station not connected")
            return self.latest.readings()

    # -- what arrives -------------------------------------------------------------------

    def on_frame(self, raw: bytes, conn: tcp_listen.Conn | None) -> None:
        """One checked packet from the station (``drivers.tcp_listen.Station``)."""
        msg = frame.parse(raw)  # the listener checked it: this cannot fail
        if msg.mn != self.config.mn or msg.pw != self.password:
            self.counts["refused"] += 1
            self.latest.book.health.crc_errors += 1
            self._trouble = f"packet with wrong PW or MN from {conn.peer if conn else '?'}"
            return
        self.counts["packets"] += 1
        if conn is not None:
            self._conn = conn
        if msg.cn in (frame.CN_REQUEST_ANSWER, frame.CN_EXECUTE_RESULT):
            queue = self._waiting.get(msg.qn)
            if queue is not None:
                queue.put_nowait(msg)
            return
        if msg.cn in frame.DATA_CNS:
            if msg.wants_answer and conn is not None:
                conn.send(frame.encode(frame.answer(msg, frame.CN_DATA_ANSWER, "")))
            self._data(msg, conn)
            queue = self._waiting.get(msg.qn)
            if queue is not None:
                queue.put_nowait(msg)
            return
        if msg.cn == frame.CN_TIME_CALIBRATION and conn is not None:
            self._set_clock(conn, force=True)
            return
        self.counts["ignored"] += 1

    def on_bad(self, count: int) -> None:
        """Bad packets on this station's connection (``drivers.tcp_listen.Station``)."""
        self.latest.book.health.crc_errors += count

    def on_close(self, conn: tcp_listen.Conn) -> None:
        """The station's connection ended (``drivers.tcp_listen.Station``)."""
        if self._conn is conn:
            self._conn = None

    def _data(self, msg: frame.Message, conn: tcp_listen.Conn | None) -> None:
        try:
            whole = self.assembler.add(msg)
            if whole is None:
                return
            cp = frame.parse_cp(whole.cp)
        except BadFrame as exc:
            self.latest.book.count(exc)
            self._trouble = str(exc)
            return
        self.latest.heard += 1
        self._trouble = ""
        now = time.time_ns()
        ts = self._stamp(cp.data_time, now)
        if ts is None:  # no usable DataTime, or the station's clock is off: stamp on arrival
            ts = now
            if whole.cn == frame.CN_RTD and conn is not None:
                self._set_clock(conn)
        elif whole.cn != frame.CN_RTD:
            # An average is known when its period ends (DataTime is its start): stamp it
            # then, so a period's value never sorts before the poll that had none yet.
            ts = min(now, ts + PERIOD_NS.get(whole.cn, 0)) if whole.cn in PERIOD_NS else now
        for name, p in self.config.points.items():
            if p.cn != whole.cn:
                continue
            got = cp.value(p.code, p.field)
            if got is not None:
                value, quality = _value(got, p.scale, p.offset)
                self.latest.put(name, value, ts, quality)

    def _stamp(self, data_time: str, now_ns: int) -> int | None:
        try:
            local = dt.datetime.strptime(data_time, TIME_FMT).replace(tzinfo=self.tz)
        except ValueError:
            return None
        ts = int(local.timestamp()) * _NS
        if abs(ts - now_ns) > self.config.max_clock_skew_s * _NS:
            self.counts["clock_off"] += 1
            self._trouble = f"station clock off by {(ts - now_ns) / _NS:+.0f} s"
            return None
        return ts

    def _set_clock(self, conn: tcp_listen.Conn, *, force: bool = False) -> None:
        if not (self.config.set_clock or force):
            return
        now = time.monotonic()
        if not force and now - self._clock_set_at < SET_CLOCK_EVERY_S:
            return
        self._clock_set_at = now
        self.counts["clock_set"] += 1
        conn.send(frame.encode(self._request(frame.CN_SET_TIME, f"SystemTime={self._now()}")))

    # -- poll mode ----------------------------------------------------------------------

    def _now(self) -> str:
        return dt.datetime.now(self.tz).strftime(TIME_FMT)

    def _qn(self) -> str:
        qn = dt.datetime.now(self.tz).strftime("%Y%m%d%H%M%S%f")[:17]
        if qn <= self._last_qn:  # two requests in one millisecond: keep QNs unique
            qn = str(int(self._last_qn) + 1)
        self._last_qn = qn
        return qn

    def _request(self, cn: int, cp: str) -> frame.Message:
        return frame.Message(qn=self._qn(), st=self.config.st or "22", cn=cn, pw=self.password,
                             mn=self.config.mn, flag=frame.VERSION_2017 | frame.FLAG_ANSWER,
                             cp=cp)

    async def _poll(self) -> None:
        wait = self.silence.wait_left()
        if wait > 0:
            raise DriverError(f"{self.where}: no answer to {self.silence.tries} tries; next "
                              f"try in {wait:.1f} s")
        await self._connect()
        for cn in sorted({p.cn for p in self.config.points.values()}):
            cp = ""
            if cn != frame.CN_RTD:
                span = max(self.config.stale_s(p) for p in self.config.points.values()
                           if p.cn == cn)
                begin = dt.datetime.now(self.tz) - dt.timedelta(seconds=span)
                cp = f"BeginTime={begin.strftime(TIME_FMT)};EndTime={self._now()}"
            await self._ask(self._request(cn, cp))

    async def _ask(self, request: frame.Message) -> None:
        """Send one request; wait for its 9012 (data packets are taken as they come)."""
        queue: asyncio.Queue[frame.Message] = asyncio.Queue(maxsize=256)
        self._waiting[request.qn] = queue
        what = f"{self.where}: CN {request.cn}"
        try:
            assert self._writer is not None  # noqa: S101  # _connect()
            self._writer.write(frame.encode(request))
            async with asyncio.timeout(self.config.timeout_s):
                while True:
                    got = await queue.get()
                    if got.cn == frame.CN_REQUEST_ANSWER:
                        rtn = _code(got, "QnRtn")
                        if rtn != frame.QN_READY:
                            raise DeviceException(rtn, f"{what}: request refused (QnRtn={rtn})")
                    elif got.cn == frame.CN_EXECUTE_RESULT:
                        rtn = _code(got, "ExeRtn")
                        if rtn not in (frame.EXE_OK, frame.EXE_NO_DATA):
                            raise DeviceException(rtn, f"{what}: failed (ExeRtn={rtn})")
                        break
        except TimeoutError:
            self.silence.missed()
            await self._disconnect()
            raise Timeout(f"{what}: no answer within {self.config.timeout_s:g} s") from None
        finally:
            self._waiting.pop(request.qn, None)
        self.silence.heard()

    async def _connect(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            return
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.timeout_s):
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except (OSError, TimeoutError) as exc:
            self.silence.missed()
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise DriverError(f"{self.where}: cannot connect to {cfg.host}:{cfg.port}: {why}") \
                from None
        self._writer = writer
        self._reader = asyncio.create_task(self._read_loop(reader), name=f"hj212[{self.device}]")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        split, buf = frame.Split(), bytearray()
        with contextlib.suppress(OSError):
            while data := await reader.read(4096):
                buf += data
                frames, bad = split.split(buf)
                if len(buf) > 16384:  # noqa: PLR2004  # a packet that never ends
                    buf.clear()
                    bad += 1
                if bad:
                    self.on_bad(bad)
                for raw in frames:
                    self.on_frame(raw, None)

    async def _disconnect(self) -> None:
        writer, self._writer = self._writer, None
        reader, self._reader = self._reader, None
        if writer is not None:
            writer.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            reraise_cancelled()  # the child's end must not swallow our own stop


def _value(got: frame.Value, scale: float, offset: float) -> tuple[Value, Quality]:
    quality = frame.FLAGS.get(got.flag, Quality.GOOD if not got.flag else Quality.COMM)
    try:
        number = float(got.text)
    except ValueError:
        return None, Quality.COMM
    if not math.isfinite(number):
        return None, Quality.RANGE
    return number * scale + offset, quality


def _code(msg: frame.Message, key: str) -> int:
    try:
        return int(frame.parse_cp(msg.cp).other.get(key, "0"))
    except (BadFrame, ValueError):
        return 0
