"""IEC 60870-5-104 client for one RTU or PLC (controlling station end); the only I/O module.

The link: TCP to ``host:port`` (t0 to connect), STARTDT, then the clock synchronisation
command (103) and a general interrogation (100, QOI 20); afterwards the RTU sends its values
as they change (spontaneous), cyclically and in answer to interrogations, every one kept as
the point's last value with its quality (IV invalid -> COMM, OV -> RANGE, NT/SB/BL -> STALE)
and its time tag where the type has one. Flow control as the standard's: at most ``k``
unacknowledged I-frames sent, an S-frame after ``w`` received or ``t2``, TESTFR after ``t3``
of silence, and a link whose acknowledgement or test confirmation does not come in ``t1``
is closed. A dropped link is reconnected at the next poll, backed off with full jitter.

``read()`` never waits for the RTU beyond a reconnection attempt: it returns the last
values (GOOD while the link is up, then STALE once ``stale_after_s`` has passed). A command
point is written with single (45) or double (46) commands, select before operate when
``select`` is set (select, ACTCON, execute, ACTCON), then verified by the point's own
monitored value coming back to the commanded state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import zoneinfo
from typing import Self

from cimedge.drivers.health import Silence
from cimedge.drivers.iec104 import apci
from cimedge.drivers.iec104.config import DeviceConfig, PointConfig
from cimedge.drivers.latest import Latest
from cimedge.edge.errors import BadFrame, DeviceException, DriverError, Timeout
from cimedge.edge.model import DeviceHealth, Reading, Value
from cimedge.stop import reraise_cancelled

log = logging.getLogger(__name__)
_NS = 1_000_000_000


class Link:
    """One open connection: sequence numbers, windows, timers, and the task reading it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ssn = self.rsn = 0
        self.acked = 0  # the peer has received everything before this send number
        self.unacked_rx = 0  # I-frames received since our last acknowledgement
        self.last_rx = time.monotonic()
        self.window = asyncio.Event()
        self.started = asyncio.Event()
        self.test_due: float | None = None  # monotonic deadline of a TESTFR con
        self.closed = False
        self.why = ""

    @property
    def outstanding(self) -> int:
        """I-frames sent and not yet acknowledged."""
        return (self.ssn - self.acked) % 32768


class Driver:
    """One RTU (see ``drivers.base.Driver``); command points are writable."""

    def __init__(self, device: str, config: DeviceConfig) -> None:
        """Prepare; the link opens at the first ``read()``."""
        config.check()
        self.device, self.config = device, config
        self.tz = zoneinfo.ZoneInfo(config.timezone)
        self.by_ioa = {p.ioa: name for name, p in config.points.items()}
        self.latest = Latest(device, dict.fromkeys(config.points, config.stale_after_s),
                             config.offline_after)
        self.silence = Silence(config.backoff_max_s)
        self.counts = {"asdus": 0, "ignored": 0, "links": 0, "interrogations": 0,
                       "clock_syncs": 0, "commands": 0}  # fmt: skip
        self.link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._replies: dict[tuple[int, int], asyncio.Queue[apci.Asdu]] = {}
        self._changed = asyncio.Event()
        self._gi_at = self._sync_at = 0.0
        self._counters = any(p.counter for p in config.points.values())

    @property
    def where(self) -> str:
        """The RTU, for messages."""
        return f"{self.device} (IEC 104 {self.config.host}:{self.config.port} " \
               f"CA {self.config.common_address})"

    async def __aenter__(self) -> Self:
        """Nothing to open yet: the first read connects (so a dead RTU never holds start-up)."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the link, also when cancelled."""
        await self._close("closed")

    def health(self) -> DeviceHealth:
        """A copy of what this driver knows of the RTU."""
        return self.latest.book.copy()

    async def read(self) -> list[Reading]:
        """One Reading per configured point, in config order."""
        async with self._lock:
            try:
                await self._ensure_link()
                await self._periodic()
            except DriverError as exc:
                self.latest.book.count(exc)
                self.latest.why_not = str(exc)
            link = self.link
            if link is not None and not link.closed:
                self._touch()
                self.latest.why_not = ""
            return self.latest.readings()

    async def write(self, point: str, value: Value) -> None:
        """Send the point's command (select before operate when set) and verify it came true."""
        p = self.config.points.get(point)
        if p is None or not p.command or p.command_ioa is None:
            msg = f"{self.device}.{point} is not a command point (command and command_ioa)"
            raise ValueError(msg)
        if not isinstance(value, bool | int | float):
            msg = f"{self.device}.{point}: a command takes true or false, not {value!r}"
            raise ValueError(msg)
        want = bool(value)
        async with self._lock:
            try:
                await self._ensure_link()
                await self._command(p, want, point)
            except DriverError as exc:
                self.latest.book.count(exc)
                raise

    # -- commands -------------------------------------------------------------------------

    async def _command(self, p: PointConfig, want: bool, name: str) -> None:
        assert p.command_ioa is not None  # noqa: S101  # write() checked
        type_id = apci.C_SC_NA_1 if p.command == "single" else apci.C_DC_NA_1
        encode = apci.single_command if p.command == "single" else apci.double_command
        what = f"{self.where}: {name} = {want}"
        self.counts["commands"] += 1
        steps = [True, False] if p.select else [False]
        for select in steps:
            reply = await self._ask(type_id, p.command_ioa, encode(want, select), what)
            if reply.negative:
                stage = "select" if select else "execute"
                raise DeviceException(reply.cot, f"{what}: {stage} refused (negative ACTCON)")
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.command_timeout_s):
                while self._value_of(name) is not want:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            msg = f"{what}: executed, but the point reads {self._value_of(name)!r}"
            raise DriverError(msg) from None

    def _value_of(self, name: str) -> Value:
        held = self.latest.values.get(name)
        return held[0] if held else None

    async def _ask(self, type_id: int, ioa: int, element: bytes, what: str, *,
                   term: bool = False) -> apci.Asdu:
        """Send an activation and wait for its ACTCON (or a negative one).

        With ``term`` (interrogations) a positive ACTCON is followed by the values and then
        ACTTERM: wait for that too, so the poll that connected already has them; an RTU that
        never terminates costs the command timeout once, not an error.
        """
        queue: asyncio.Queue[apci.Asdu] = asyncio.Queue(maxsize=8)
        key = (type_id, ioa)
        self._replies[key] = queue
        confirmed: apci.Asdu | None = None
        try:
            await self._send_asdu(apci.asdu(type_id, apci.COT_ACT, self.config.common_address,
                                            ioa, element, self.config.originator))
            async with asyncio.timeout(self.config.command_timeout_s):
                while True:
                    reply = await queue.get()
                    if reply.cot == apci.COT_ACTCON:
                        confirmed = reply
                        if reply.negative or not term:
                            return reply
                    elif reply.cot == apci.COT_ACTTERM and confirmed is not None:
                        return confirmed
        except TimeoutError:
            if confirmed is not None:
                return confirmed
            raise Timeout(f"{what}: no confirmation within "
                          f"{self.config.command_timeout_s:g} s") from None
        finally:
            self._replies.pop(key, None)

    # -- the link -------------------------------------------------------------------------

    async def _ensure_link(self) -> None:
        if self.link is not None and not self.link.closed:
            return
        if self.link is not None:  # dropped since the last poll: reap its task
            await self._close(self.link.why)
        wait = self.silence.wait_left()
        if wait > 0:
            raise DriverError(f"{self.where}: link down ({self.latest.why_not or 'no answer'}); "
                              f"next try in {wait:.1f} s")
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.t0_s):
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except (OSError, TimeoutError) as exc:
            self.silence.missed()
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise Timeout(f"{self.where}: cannot connect: {why}") from None
        link = self.link = Link(reader, writer)
        self.counts["links"] += 1
        self._task = asyncio.create_task(self._run(link), name=f"iec104[{self.device}]")
        writer.write(apci.u_frame(apci.STARTDT_ACT))
        try:
            async with asyncio.timeout(cfg.t1_s):
                await link.started.wait()
        except TimeoutError:
            self.silence.missed()
            await self._close("no STARTDT confirmation")
            raise Timeout(f"{self.where}: no STARTDT confirmation within {cfg.t1_s:g} s") \
                from None
        self.silence.heard()
        self._gi_at = self._sync_at = 0.0
        await self._periodic()

    async def _periodic(self) -> None:
        """Clock synchronisation and general interrogation when due (at once after connecting)."""
        cfg, now = self.config, time.monotonic()
        if cfg.clock_sync and now >= self._sync_at:
            self._sync_at = now + cfg.clock_sync_interval_s
            when = apci.cp56(dt.datetime.now(self.tz))
            reply = await self._ask(apci.C_CS_NA_1, 0, when, f"{self.where}: clock sync")
            if not reply.negative:
                self.counts["clock_syncs"] += 1
        if now >= self._gi_at:
            self._gi_at = now + cfg.interrogation_interval_s if cfg.interrogation_interval_s \
                else float("inf")
            reply = await self._ask(apci.C_IC_NA_1, 0, b"\x14", f"{self.where}: interrogation",
                                    term=True)
            if reply.negative:
                raise DeviceException(reply.cot, f"{self.where}: interrogation refused")
            self.counts["interrogations"] += 1
            if self._counters:  # integrated totals come with a counter interrogation (101)
                await self._ask(apci.C_CI_NA_1, 0, b"\x05", f"{self.where}: counters",
                                term=True)

    async def _send_asdu(self, asdu: bytes) -> None:
        link = self.link
        if link is None or link.closed:
            raise DriverError(f"{self.where}: link down")
        try:
            async with asyncio.timeout(self.config.t1_s):
                while link.outstanding >= self.config.k and not link.closed:
                    link.window.clear()
                    await link.window.wait()
        except TimeoutError:
            await self._close("k unacknowledged frames for t1")
            raise Timeout(f"{self.where}: {self.config.k} frames unacknowledged for t1") \
                from None
        if link.closed:
            raise DriverError(f"{self.where}: link down ({link.why})")
        link.writer.write(apci.i_frame(link.ssn, link.rsn, asdu))
        link.ssn = (link.ssn + 1) % 32768
        link.unacked_rx = 0

    async def _run(self, link: Link) -> None:
        """Read the link until it closes; answer tests, acknowledge, dispatch ASDUs."""
        buf = bytearray()
        cfg = self.config
        try:
            while not link.closed:
                timeout = min(cfg.t2_s, cfg.t3_s, cfg.t1_s) / 2
                try:
                    async with asyncio.timeout(timeout):
                        data = await link.reader.read(4096)
                except TimeoutError:
                    data = None
                if data == b"":
                    link.why = "the RTU closed the connection"
                    break
                if data:
                    link.last_rx = time.monotonic()
                    buf += data
                    apdus, bad = apci.split(buf)
                    if bad:
                        self.latest.book.health.crc_errors += bad
                    for apdu in apdus:
                        self._take(link, apdu)
                    if len(buf) > 4 * apci.MAX_APDU:  # noqa: PLR2004
                        link.why = "garbled stream"
                        break
                if not self._timers(link):
                    break
        except OSError as exc:
            link.why = exc.strerror or str(exc)
        finally:
            link.closed = True
            link.window.set()
            link.writer.close()
            self.latest.why_not = f"link closed: {link.why}"
            self._changed.set()

    def _timers(self, link: Link) -> bool:
        """Keep the link's timers; False when it must close."""
        cfg, now = self.config, time.monotonic()
        if link.unacked_rx and now - link.last_rx >= cfg.t2_s / 4:
            self._ack(link)
        if link.test_due is not None and now > link.test_due:
            link.why = "no TESTFR confirmation within t1"
            return False
        if link.test_due is None and now - link.last_rx >= cfg.t3_s:
            link.writer.write(apci.u_frame(apci.TESTFR_ACT))
            link.test_due = now + cfg.t1_s
        return True

    def _ack(self, link: Link) -> None:
        link.writer.write(apci.s_frame(link.rsn))
        link.unacked_rx = 0

    def _take(self, link: Link, apdu: apci.Apdu) -> None:
        if apdu.format == "U":
            if apdu.function == apci.TESTFR_ACT:
                link.writer.write(apci.u_frame(apci.TESTFR_CON))
            elif apdu.function == apci.TESTFR_CON:
                link.test_due = None
            elif apdu.function == apci.STARTDT_CON:
                link.started.set()
            return
        link.acked = apdu.rsn
        link.window.set()
        link.test_due = None
        if apdu.format == "S":
            return
        if apdu.ssn != link.rsn:
            link.why = f"I-frame {apdu.ssn} out of sequence (expected {link.rsn})"
            link.closed = True
            return
        link.rsn = (link.rsn + 1) % 32768
        link.unacked_rx += 1
        if link.unacked_rx >= self.config.w:
            self._ack(link)
        try:
            self._asdu(apci.parse_asdu(apdu.asdu))
        except BadFrame as exc:
            self.latest.book.count(exc)

    def _asdu(self, a: apci.Asdu) -> None:
        self.counts["asdus"] += 1
        if a.ca != self.config.common_address:
            self.counts["ignored"] += 1
            return
        if a.type_id in apci.MONITOR:
            now = time.time_ns()
            for p in apci.monitored(a, self.tz):
                name = self.by_ioa.get(p.ioa)
                if name is None:
                    continue
                cfg = self.config.points[name]
                value: Value = p.value
                if isinstance(value, int | float) and not isinstance(value, bool):
                    value = value * cfg.scale + cfg.offset
                self.latest.put(name, value, p.time_ns or now, apci.quality(p.qualifier))
            self.latest.heard += 1
            self._changed.set()
            return
        if a.type_id in (apci.C_SC_NA_1, apci.C_DC_NA_1, apci.C_IC_NA_1, apci.C_CI_NA_1,
                         apci.C_CS_NA_1):
            ioa = int.from_bytes(a.body[:3], "little") if len(a.body) >= 3 else -1  # noqa: PLR2004
            queue = self._replies.get((a.type_id, ioa))
            if queue is not None and not queue.full():
                queue.put_nowait(a)
            return
        self.counts["ignored"] += 1

    def _touch(self) -> None:
        """While the link is up, held values are current: the RTU would have sent a change."""
        now = time.time_ns()
        for name, (value, ts, q, _) in list(self.latest.values.items()):
            self.latest.values[name] = (value, ts, q, now)

    async def _close(self, why: str) -> None:
        link, self.link = self.link, None
        task, self._task = self._task, None
        if link is not None and not link.closed:
            link.why = why
            link.closed = True
            link.writer.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            reraise_cancelled()  # the child's end must not swallow our own stop
