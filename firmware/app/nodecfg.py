"""Node configuration: the holding-register block, its validation, and its atomic store on flash.

Holding registers (DESIGN.md section 6), offsets from 200, each 16 bits:

    200  unit address, 1-247
    201  baud code: 0 1200, 1 2400, 2 4800, 3 9600, 4 19200, 5 38400, 6 57600, 7 115200
    202  sample period, ms, 10-60000
    203-209  reserved: read as 0, only 0 may be written
    210+4i, 211+4i  channel i scale, float32, high word first (finite, not 0)
    212+4i, 213+4i  channel i offset, float32, high word first (finite)

The file ``config.bin`` holds ``b"CNF1"``, the word count (u16), the words (big-endian) and a
CRC-16 of all of it. A save writes ``config.new`` and renames it over ``config.bin``: a power
cut leaves either the old file or the new one, whole. ``load()`` finishes a save that was cut
between the write and the rename, and falls back to defaults (status bit 2) when nothing
stored is valid.
"""

import os
import struct
from array import array

from micropython import const

import hw
from crc16 import crc16

BASE = const(200)
ADDRESS = const(0)
BAUD = const(1)
PERIOD = const(2)
CHANNELS = const(10)  # offset of channel 0's scale
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DEFAULT_BAUD = const(3)  # 9600, DESIGN.md section 6
DEFAULT_PERIOD_MS = const(1000)

OK = const(0)
RECOVERED = const(1)  # a cut save was finished from config.new
DEFAULT = const(2)  # nothing stored yet
INVALID = const(3)  # something stored, none of it valid: defaults, status bit 2

_MAGIC = b"CNF1"
_FILE = "config.bin"
_NEW = "config.new"


def size(n):
    """Words in the holding block of a node with ``n`` channels."""
    return CHANNELS + 4 * n


def defaults(n, unit):
    """The factory configuration: ``unit``, 9600 baud, 1 s period, scale 1, offset 0."""
    w = array("H", bytes(2 * size(n)))
    w[ADDRESS] = unit
    w[BAUD] = DEFAULT_BAUD
    w[PERIOD] = DEFAULT_PERIOD_MS
    for c in range(n):
        put_float(w, CHANNELS + 4 * c, 1.0)
    return w


def get_float(w, i):
    """The float32 in words ``w[i]`` (high) and ``w[i+1]`` (low)."""
    return struct.unpack(">f", struct.pack(">HH", w[i], w[i + 1]))[0]


def put_float(w, i, v):
    """Store ``v`` as float32 in ``w[i]`` (high) and ``w[i+1]`` (low)."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", v))
    w[i] = hi
    w[i + 1] = lo


def _finite(v):
    return v - v == 0  # false for inf and nan, without math.isfinite (not on every port)


def validate(w, n):
    """None if ``w`` is a usable configuration for ``n`` channels, else the reason."""
    if len(w) != size(n):
        return "wrong size"
    if not 1 <= w[ADDRESS] <= 247:
        return "address not 1-247"
    if w[BAUD] >= len(BAUDS):
        return "unknown baud code"
    if not 10 <= w[PERIOD] <= 60000:
        return "sample period not 10-60000 ms"
    for i in range(PERIOD + 1, CHANNELS):
        if w[i]:
            return "reserved register not 0"
    for c in range(n):
        s = get_float(w, CHANNELS + 4 * c)
        if not _finite(s) or s == 0:
            return "scale not a finite, non-zero number"
        if not _finite(get_float(w, CHANNELS + 4 * c + 2)):
            return "offset not a finite number"
    return None


def encode(w):
    """The bytes of ``config.bin`` for words ``w``."""
    n = len(w)
    b = bytearray(6 + 2 * n + 2)
    b[0:4] = _MAGIC
    struct.pack_into(">H", b, 4, n)
    for i in range(n):
        struct.pack_into(">H", b, 6 + 2 * i, w[i])
    struct.pack_into(">H", b, 6 + 2 * n, crc16(b, 6 + 2 * n))
    return b


def decode(b, n):
    """The words stored in ``b`` if it is a whole, valid file for ``n`` channels, else None."""
    k = size(n)
    if len(b) != 6 + 2 * k + 2 or b[0:4] != _MAGIC:
        return None
    if struct.unpack_from(">H", b, 4)[0] != k:
        return None
    if struct.unpack_from(">H", b, 6 + 2 * k)[0] != crc16(b, 6 + 2 * k):
        return None
    w = array("H", bytes(2 * k))
    for i in range(k):
        w[i] = struct.unpack_from(">H", b, 6 + 2 * i)[0]
    return None if validate(w, n) else w


def _read(name, n):
    try:
        with open(hw.path(name), "rb") as f:
            return decode(f.read(), n)
    except OSError:
        return None


def _exists(name):
    try:
        os.stat(hw.path(name))
        return True
    except OSError:
        return False


def _remove(name):
    try:
        os.remove(hw.path(name))
    except OSError:
        pass


def _replace(src, dst):
    try:
        os.rename(hw.path(src), hw.path(dst))
    except OSError:
        # FAT will not rename over a file. A cut between these two steps leaves only the
        # complete config.new, which load() then finishes.
        _remove(dst)
        os.rename(hw.path(src), hw.path(dst))


def load(n, unit):
    """The stored configuration and how it was found: (words, OK|RECOVERED|DEFAULT|INVALID)."""
    w = _read(_FILE, n)
    if w is not None:
        _remove(_NEW)  # left by a save cut before its rename: never acknowledged
        return w, OK
    w = _read(_NEW, n)
    if w is not None:
        _replace(_NEW, _FILE)
        return w, RECOVERED
    found = _exists(_FILE) or _exists(_NEW)
    return defaults(n, unit), INVALID if found else DEFAULT


def save(w):
    """Store ``w`` (already validated) so that a power cut keeps the old or the new one whole."""
    data = encode(w)
    with open(hw.path(_NEW), "wb") as f:
        f.write(data)
    _replace(_NEW, _FILE)
