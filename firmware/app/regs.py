"""The register map of DESIGN.md section 6 as preallocated 16-bit arrays, read without allocating.

Input registers: 0-1 version, 2-3 uptime (u32, high word first), 4 status bits, 5 channel
count N, 100..100+2N-1 channel values (float32, high word first). Holding registers 200..:
see ``nodecfg``. A read must lie inside one block; anything else is an illegal address.
"""

import struct
from array import array

from micropython import const

import nodecfg
import version

INPUT_INFO = const(0)
INPUT_CHANNELS = const(100)
STATUS = const(4)
SENSOR_FAULT = const(1)  # status bit 0
WATCHDOG_RESET = const(2)  # status bit 1
CONFIG_INVALID = const(4)  # status bit 2

ILLEGAL_ADDRESS = const(2)
ILLEGAL_VALUE = const(3)
DEVICE_FAILURE = const(4)


class Registers:
    """Input and holding registers of a node with ``n`` channels."""

    def __init__(self, n, words):
        self.n = n
        self.info = array("H", bytes(12))
        self.info[0] = version.MAJOR
        self.info[1] = version.MINOR * 256 + version.PATCH
        self.info[5] = n
        self.chan = array("H", bytes(4 * n))
        self.hold = array("H", words)
        self._cand = array("H", words)  # a write is built here, checked, then copied over
        self._f4 = bytearray(4)
        self.scale = [1.0] * n
        self.offset = [0.0] * n
        self.line_changed = False  # address or baud written: apply after the answer
        self.refused = None  # why the last refused write was refused
        self._decode()
        nan = float("nan")
        for c in range(n):
            self.set_channel(c, nan)  # nothing sampled yet

    def _decode(self):
        for c in range(self.n):
            self.scale[c] = nodecfg.get_float(self.hold, nodecfg.CHANNELS + 4 * c)
            self.offset[c] = nodecfg.get_float(self.hold, nodecfg.CHANNELS + 4 * c + 2)

    def set_status(self, bit, on):
        """Set or clear status bit mask ``bit`` (SENSOR_FAULT, WATCHDOG_RESET, CONFIG_INVALID)."""
        s = self.info[STATUS]
        self.info[STATUS] = s | bit if on else s & ~bit

    def set_uptime(self, s):
        """Uptime in seconds, as u32 high word first."""
        self.info[2] = (s >> 16) & 0xFFFF
        self.info[3] = s & 0xFFFF

    def set_channel(self, c, v):
        """Channel ``c``'s scaled value as float32, high word first."""
        f = self._f4
        struct.pack_into(">f", f, 0, v)
        self.chan[2 * c] = f[0] << 8 | f[1]
        self.chan[2 * c + 1] = f[2] << 8 | f[3]

    def fill(self, holding, start, count, out, off):
        """Copy ``count`` registers from ``start`` into ``out[off:]``, big-endian; False if unmapped."""
        if holding:
            a, base = self.hold, nodecfg.BASE
        elif start < INPUT_CHANNELS:
            a, base = self.info, INPUT_INFO
        else:
            a, base = self.chan, INPUT_CHANNELS
        i = start - base
        if i < 0 or i + count > len(a):
            return False
        for k in range(i, i + count):
            w = a[k]
            out[off] = w >> 8
            out[off + 1] = w & 0xFF
            off += 2
        return True

    def write(self, start, count, src, off, broadcast):
        """Write ``count`` big-endian words from ``src[off:]`` at ``start``: 0 or an exception code.

        The whole write is checked against the whole resulting configuration and stored on
        flash before it is used; a write that fails either leaves everything as it was.
        """
        hold, cand = self.hold, self._cand
        i = start - nodecfg.BASE
        if i < 0 or i + count > len(hold):
            return ILLEGAL_ADDRESS
        for k in range(len(hold)):
            cand[k] = hold[k]
        for k in range(count):
            cand[i + k] = src[off + 2 * k] << 8 | src[off + 2 * k + 1]
        if broadcast and cand[nodecfg.ADDRESS] != hold[nodecfg.ADDRESS]:
            self.refused = "address change by broadcast"
            return ILLEGAL_VALUE
        why = nodecfg.validate(cand, self.n)
        if why:
            self.refused = why
            return ILLEGAL_VALUE
        if cand == hold:
            return 0
        try:
            nodecfg.save(cand)
        except OSError:
            self.refused = "flash write failed"
            return DEVICE_FAILURE
        a, b = nodecfg.ADDRESS, nodecfg.BAUD
        self.line_changed = cand[a] != hold[a] or cand[b] != hold[b]
        for k in range(len(hold)):
            hold[k] = cand[k]
        self._decode()
        self.set_status(CONFIG_INVALID, False)
        return 0

    def unit(self):
        """The configured unit address."""
        return self.hold[nodecfg.ADDRESS]

    def baud(self):
        """The configured baud rate."""
        return nodecfg.BAUDS[self.hold[nodecfg.BAUD]]

    def period_ms(self):
        """The configured sample period."""
        return self.hold[nodecfg.PERIOD]
