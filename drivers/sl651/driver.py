"""SL 651-2014 central-station end for one telemetry station; the package's only I/O module.

The station connects to ``listen_host``/``listen_port`` (shared with other SL 651 devices
there; each message goes to the device of its station address) and reports: timed (0x32),
added (0x33), hourly (0x34), test (0x30), equal-interval (0x31) and manual (0x35) reports
are confirmed (same function code, ESC: stay online); a multi-packet report (SYN ... ETB)
has each packet acknowledged and is used once whole. With ``query = true`` every poll also
asks the station for its current data (0x37). ``history()`` asks for an element's values
over a time range (0x38). A station whose send time is more than ``max_clock_skew_s`` off
has its values stamped on arrival and (``set_clock``) is sent the time (0x4A).

Every message is checked (CRC, length, direction, password, station); a bad one is counted
and dropped and the link goes on. A value of all FF bytes (no data) is COMM with no value.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zoneinfo
from typing import Self

from cimedge.drivers import tcp_listen
from cimedge.drivers.latest import Latest
from cimedge.drivers.sl651 import frame
from cimedge.drivers.sl651.config import DeviceConfig, read_password
from cimedge.edge.errors import BadFrame, DriverError, Timeout
from cimedge.edge.model import DeviceHealth, Quality, Reading, Value

_NS = 1_000_000_000
SET_CLOCK_EVERY_S = 600.0
MAX_PENDING = 4  # multi-packet messages being put together at once


class Driver:
    """One SL 651 telemetry station (see ``drivers.base.Driver``); its points are read-only."""

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; the password file is read and the port bound in ``__aenter__``."""
        config.check()
        self.device, self.config = device, config
        self.station = config.station.upper()
        self.tz = zoneinfo.ZoneInfo(config.timezone)
        self.points = {n: (p.identifier(), p.bit, p.scale, p.offset)
                       for n, p in config.points.items()}
        self.latest = Latest(device, dict.fromkeys(config.points, config.stale_after_s),
                             config.offline_after)
        self.password = ""
        self.listener: tcp_listen.Listener | None = None
        self.counts = {"messages": 0, "refused": 0, "confirmed": 0, "clock_off": 0,
                       "clock_set": 0, "ignored": 0}  # fmt: skip
        self._conn: tcp_listen.Conn | None = None
        self._parts: dict[tuple[int, int], dict[int, bytes]] = {}
        self._answers: dict[int, asyncio.Queue[frame.Frame]] = {}
        self._serial = 0
        self._clock_set_at = 0.0
        self._trouble = ""
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        """The station, for messages."""
        return f"{self.device} (SL 651 station {self.station})"

    async def __aenter__(self) -> Self:
        """Read the password and listen; trouble (no password, port taken) shows in health."""
        await self._open()
        return self

    async def _open(self) -> None:
        """Read the password file (again, until it can be read), then listen."""
        if not self.password:
            try:
                self.password = read_password(self.config.password_file)
            except ValueError as exc:
                self._trouble = str(exc)
                return
            self._trouble = ""
        if self.listener is None:
            cfg = self.config
            self.listener = await tcp_listen.acquire(
                cfg.listen_host, cfg.listen_port, self.station, self,
                lambda: tcp_listen.Listener(cfg.listen_host, cfg.listen_port, frame.Split(),
                                            max_connections=cfg.max_connections,
                                            idle_s=cfg.idle_timeout_s))

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening, also when cancelled."""
        if self.listener is not None:
            listener, self.listener = self.listener, None
            await tcp_listen.release(listener, self.station)

    def health(self) -> DeviceHealth:
        """A copy of what this driver knows of the station."""
        return self.latest.book.copy()

    async def write(self, point: str, value: Value) -> None:
        """SL 651 points are measurements: not writable."""
        msg = f"{self.device}.{point}: SL 651 points are read-only ({value!r})"
        raise ValueError(msg)

    async def read(self) -> list[Reading]:
        """One Reading per configured point, in config order (the last value reported)."""
        async with self._lock:
            await self._open()
            listener = self.listener
            if listener is not None and listener.error:
                await listener.start()
            if self.config.query and self._conn is not None:
                try:
                    answer = await self._ask(frame.FC_QUERY_NOW, b"")
                    self._take(answer, self._conn)
                except DriverError as exc:
                    self.latest.book.count(exc)
                    self._trouble = str(exc)
            self.latest.why_not = (listener.error if listener else "") or self._trouble or (
                "" if self._conn is not None else "station not connected")
            return self.latest.readings()

    async def history(self, ident: int, definition: int, start: dt.datetime, end: dt.datetime,
                      step_s: int) -> list[tuple[int, float | None]]:
        """Values of element ``ident`` from ``start`` to ``end`` (whole hours), ``step_s`` apart.

        Raises DriverError when the station is not connected, Timeout when it does not answer.
        """
        body = (frame.time_bytes(start, 4) + frame.time_bytes(end, 4) + b"\x04\x18"
                + frame.step_bytes(step_s) + bytes((ident, definition)))
        async with self._lock:
            answer = await self._ask(frame.FC_QUERY_HISTORY, body)
        observed, step, _, got_def, values = frame.history_series(answer.body)
        first = frame.parse_time(observed, self.tz)
        gap = frame.step_seconds(step)
        del got_def
        return [(int((first + dt.timedelta(seconds=i * gap)).timestamp()) * _NS, v)
                for i, v in enumerate(values)]

    async def set_clock(self) -> None:
        """Set the station's clock to ours (0x4A) and wait for its answer."""
        async with self._lock:
            await self._ask(frame.FC_SET_CLOCK, b"")
        self.counts["clock_set"] += 1

    # -- what arrives -------------------------------------------------------------------

    def on_frame(self, raw: bytes, conn: tcp_listen.Conn) -> None:
        """One checked message from the station (``drivers.tcp_listen.Station``)."""
        msg = frame.parse(raw)
        if msg.password != self.password or msg.centre != self.config.centre:
            self.counts["refused"] += 1
            self.latest.book.health.crc_errors += 1
            self._trouble = f"message with wrong password or centre address from {conn.peer}"
            return
        self.counts["messages"] += 1
        self._conn = conn
        if msg.packets:
            whole = self._join(msg, conn)
            if whole is None:
                return
            msg = whole
        queue = self._answers.get(msg.fc)
        if queue is not None:
            queue.put_nowait(msg)
            return
        if msg.fc in frame.REPORTS:
            self._confirm(msg, conn, frame.ESC)
            self._take(msg, conn)
        elif msg.fc != frame.FC_LINK:
            self.counts["ignored"] += 1

    def on_bad(self, count: int) -> None:
        """Bad messages on this station's connection (``drivers.tcp_listen.Station``)."""
        self.latest.book.health.crc_errors += count

    def on_close(self, conn: tcp_listen.Conn) -> None:
        """The station's connection ended (``drivers.tcp_listen.Station``)."""
        if self._conn is conn:
            self._conn = None

    def _join(self, msg: frame.Frame, conn: tcp_listen.Conn) -> frame.Frame | None:
        self._confirm(msg, conn, frame.ACK)  # each packet is acknowledged as it comes
        key = (msg.fc, msg.packets)
        parts = self._parts.pop(key, {})
        parts[msg.packet] = msg.body
        if len(parts) < msg.packets:
            self._parts[key] = parts
            while len(self._parts) > MAX_PENDING:
                del self._parts[next(iter(self._parts))]
            return None
        body = b"".join(parts[i] for i in range(1, msg.packets + 1))
        return frame.Frame(centre=msg.centre, station=msg.station, password=msg.password,
                           fc=msg.fc, body=body, end=frame.ETX)

    def _take(self, msg: frame.Frame, conn: tcp_listen.Conn) -> None:
        try:
            report = frame.parse_report(msg.body)
            sent = frame.parse_time(report.sent, self.tz)
            if report.observed:
                frame.parse_time(report.observed, self.tz)  # checked: a garbled one is a bad frame
        except BadFrame as exc:
            self.latest.book.count(exc)
            self._trouble = str(exc)
            return
        if report.station and report.station != self.station:
            self._trouble = f"report names station {report.station}"
            return
        self.latest.heard += 1
        self._trouble = ""
        now = time.time_ns()
        # Stamped by the send time: the observation time is whole minutes (or the hour of an
        # hourly report), and a value must not sort before the poll that had none yet.
        ts = int(sent.timestamp()) * _NS
        skew = ts - now
        if abs(skew) > self.config.max_clock_skew_s * _NS:
            self.counts["clock_off"] += 1
            self._trouble = f"station clock off by {skew / _NS:+.0f} s"
            ts = now
            self._send_clock(conn)
        for name, (ident, bit, scale, offset) in self.points.items():
            if bit is not None:
                raw = report.binary.get(ident)
                if raw is not None:
                    self.latest.put(name, bool(int.from_bytes(raw, "big") >> bit & 1), ts)
                continue
            values = report.values.get(ident)
            if values:
                v = values[-1]
                self.latest.put(name, None if v is None else v * scale + offset, ts,
                                Quality.COMM if v is None else Quality.GOOD)

    def _send_clock(self, conn: tcp_listen.Conn) -> None:
        if not self.config.set_clock:
            return
        now = time.monotonic()
        if now - self._clock_set_at < SET_CLOCK_EVERY_S:
            return
        self._clock_set_at = now
        self.counts["clock_set"] += 1
        conn.send(frame.encode(self._down(frame.FC_SET_CLOCK, b"", frame.ENQ)))

    def _confirm(self, msg: frame.Frame, conn: tcp_listen.Conn, end: int) -> None:
        serial = msg.body[:2] if len(msg.body) >= 2 else b"\x00\x00"  # noqa: PLR2004
        body = serial + frame.time_bytes(dt.datetime.now(self.tz))
        conn.send(frame.encode(frame.Frame(centre=self.config.centre, station=self.station,
                                           password=self.password, fc=msg.fc, up=False,
                                           body=body, end=end)))
        self.counts["confirmed"] += 1

    def _down(self, fc: int, rest: bytes, end: int) -> frame.Frame:
        self._serial = self._serial % 0xFFFF + 1
        body = self._serial.to_bytes(2, "big") + frame.time_bytes(dt.datetime.now(self.tz)) + rest
        return frame.Frame(centre=self.config.centre, station=self.station,
                           password=self.password, fc=fc, up=False, body=body, end=end)

    async def _ask(self, fc: int, rest: bytes) -> frame.Frame:
        conn = self._conn
        if conn is None:
            raise DriverError(f"{self.where}: not connected")
        queue: asyncio.Queue[frame.Frame] = asyncio.Queue(maxsize=16)
        self._answers[fc] = queue
        try:
            conn.send(frame.encode(self._down(fc, rest, frame.ENQ)))
            async with asyncio.timeout(self.config.timeout_s):
                return await queue.get()
        except TimeoutError:
            raise Timeout(f"{self.where}: no answer to function {fc:02X}H within "
                          f"{self.config.timeout_s:g} s") from None
        finally:
            self._answers.pop(fc, None)
