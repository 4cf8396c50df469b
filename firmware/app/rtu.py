"""Modbus RTU slave: frames end on 3.5 character times of silence; answers built in place.

Function codes 3, 4 (read holding, input), 6, 16 (write holding) and 8 (diagnostics:
sub-functions 0x00-0x02, 0x04, 0x0A-0x12). Frames with a bad CRC, or for another unit, get
no answer; broadcasts (unit 0) are carried out for writes and never answered. Reading and
answering a frame allocates nothing: the receive and transmit buffers are allocated once,
registers are copied byte by byte and the CRC is table-driven.
"""

import asyncio
from time import ticks_diff, ticks_us

from micropython import const

from crc16 import crc16

_MAX_ADU = const(256)
_POLL_MS = const(1)
_ILLEGAL_FUNCTION = const(1)
_ILLEGAL_ADDRESS = const(2)
_ILLEGAL_VALUE = const(3)

# Diagnostics (function 8) sub-functions, Modbus application protocol v1.1b3 section 6.8.
_ECHO = const(0x00)
_RESTART = const(0x01)
_DIAG_REGISTER = const(0x02)
_LISTEN_ONLY = const(0x04)
_CLEAR = const(0x0A)
_FIRST_COUNTER = const(0x0B)
_LAST_COUNTER = const(0x12)


def t35_us(baud):
    """3.5 character times (11 bits each); fixed at 1750 us above 19200 baud, as the spec says."""
    return 1750 if baud > 19200 else 38500000 // baud


class RtuSlave:
    """Answers Modbus RTU requests for ``regs`` on ``bus`` (a ``hw`` RS-485 port)."""

    def __init__(self, bus, regs):
        self._bus = bus
        self._regs = regs
        self._rx = bytearray(_MAX_ADU)
        self._tx = bytearray(_MAX_ADU)
        self.unit = regs.unit()
        self._t35 = t35_us(regs.baud())
        self._baud = regs.baud()
        # Counters 0x0B-0x12 in sub-function order: bus messages, CRC errors, exceptions,
        # messages for us, no answer given, NAK, busy, overruns. 16 bits, wrapping.
        self.counters = [0] * 8
        self.listen_only = False
        self.loops = 0  # serve() iterations: the supervisor's proof of life
        self.busy_us = 0  # time handle() took for the last frame

    def _count(self, i):
        self.counters[i] = (self.counters[i] + 1) & 0xFFFF

    def handle(self, n):
        """Process the ``n``-byte frame in the receive buffer; the length of the answer, or 0."""
        rx = self._rx
        if n < 4 or crc16(rx, n - 2) != rx[n - 2] | rx[n - 1] << 8:
            self._count(1)
            return 0
        self._count(0)
        unit = rx[0]
        if unit != self.unit and unit != 0:
            return 0
        self._count(3)
        fc = rx[1]
        if self.listen_only and not (fc == 8 and n == 8 and rx[2] == 0 and rx[3] == _RESTART):
            self._count(4)
            return 0
        m = self._pdu(fc, n - 2, unit == 0)
        if unit == 0 or m == 0:
            self._count(4)
            return 0
        tx = self._tx
        tx[0] = self.unit
        if m < 0:
            tx[1] = fc | 0x80
            tx[2] = -m
            m = 2
            self._count(2)
        c = crc16(tx, m + 1)
        tx[m + 1] = c & 0xFF
        tx[m + 2] = c >> 8
        return m + 3

    def _pdu(self, fc, n, broadcast):
        # The answer's PDU goes to tx[1:]; returns its length, 0 for no answer, or -code.
        rx, tx = self._rx, self._tx
        if fc == 3 or fc == 4:
            if broadcast:
                return 0
            if n != 6:
                return -_ILLEGAL_VALUE
            count = rx[4] << 8 | rx[5]
            if not 1 <= count <= 125:
                return -_ILLEGAL_VALUE
            if not self._regs.fill(fc == 3, rx[2] << 8 | rx[3], count, tx, 3):
                return -_ILLEGAL_ADDRESS
            tx[1] = fc
            tx[2] = 2 * count
            return 2 + 2 * count
        if fc == 6:
            if n != 6:
                return -_ILLEGAL_VALUE
            code = self._regs.write(rx[2] << 8 | rx[3], 1, rx, 4, broadcast)
            return -code if code else self._echo(6)
        if fc == 16:
            count = rx[4] << 8 | rx[5] if n >= 7 else 0
            if not 1 <= count <= 123 or rx[6] != 2 * count or n != 7 + 2 * count:
                return -_ILLEGAL_VALUE
            code = self._regs.write(rx[2] << 8 | rx[3], count, rx, 7, broadcast)
            return -code if code else self._echo(6)
        if fc == 8:
            return self._diagnostics(n, broadcast)
        return -_ILLEGAL_FUNCTION

    def _echo(self, m):
        rx, tx = self._rx, self._tx
        for i in range(1, m):
            tx[i] = rx[i]
        return m - 1

    def _diagnostics(self, n, broadcast):
        rx = self._rx
        if n < 6:
            return -_ILLEGAL_VALUE
        sub = rx[2] << 8 | rx[3]
        data = rx[4] << 8 | rx[5]
        if sub == _ECHO:
            return self._echo(n)
        if n != 6:
            return -_ILLEGAL_VALUE
        if sub == _RESTART:
            if data not in (0, 0xFF00):
                return -_ILLEGAL_VALUE
            was_listening = self.listen_only
            self.listen_only = False
            self._clear()
            return 0 if was_listening else self._echo(n)
        if sub == _LISTEN_ONLY:
            self.listen_only = True  # until a restart (0x01); this request gets no answer
            return 0
        if data != 0:
            return -_ILLEGAL_VALUE
        if sub == _CLEAR:
            self._clear()
            return self._echo(n)
        if sub == _DIAG_REGISTER or _FIRST_COUNTER <= sub <= _LAST_COUNTER:
            v = 0 if sub == _DIAG_REGISTER else self.counters[sub - _FIRST_COUNTER]
            self._echo(4)
            self._tx[4] = v >> 8
            self._tx[5] = v & 0xFF
            return 5
        return -_ILLEGAL_FUNCTION

    def _clear(self):
        for i in range(8):
            self.counters[i] = 0

    async def serve(self):
        """Receive frames forever: a frame ends when the byte count stops growing for 3.5 chars."""
        bus = self._bus
        rx = self._rx
        seen = 0
        since = 0
        while True:
            self.loops += 1
            n = bus.any()
            if n:
                now = ticks_us()
                if n != seen:
                    seen, since = n, now
                elif ticks_diff(now, since) >= self._t35:
                    seen = 0
                    if n > _MAX_ADU:
                        self._drain(n)
                        continue
                    bus.readinto(rx, n)
                    m = self.handle(n)
                    self.busy_us = ticks_diff(ticks_us(), now)
                    if m:
                        await self._send(m)
                    if self._regs.line_changed:
                        self._apply_line()
                    continue
            await asyncio.sleep_ms(_POLL_MS)

    def _drain(self, n):
        # Longer than any legal frame: noise or two frames run together. Drop it all.
        self._count(7)
        while n > 0:
            k = n if n < _MAX_ADU else _MAX_ADU
            self._bus.readinto(self._rx, k)
            n -= k

    async def _send(self, m):
        # The master may talk 3.5 characters after our last bit (1.75 ms at 115200 baud), so
        # the driver-enable pin must drop right after it: sleep through most of the frame (the
        # sampler runs meanwhile), then wait out the last 2 ms in drain(), which blocks.
        bus = self._bus
        bus.write(self._tx, m)
        wire_ms = m * 10000 // self._baud  # 8N1: 10 bits a character
        if wire_ms > 2:
            await asyncio.sleep_ms(wire_ms - 2)
        bus.drain()
        bus.release()

    def _apply_line(self):
        regs = self._regs
        regs.line_changed = False
        self.unit = regs.unit()
        self._t35 = t35_us(regs.baud())
        self._baud = regs.baud()
        self._bus.set_baud(regs.baud())
