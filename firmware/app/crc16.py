"""CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF), table-driven, allocation-free."""

from array import array

# 512 bytes of RAM, built once at import: about 8x faster per byte than the bitwise loop,
# which matters at 256-byte frames on a 125 MHz core.
_TABLE = array("H", bytes(512))


def _build():
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        _TABLE[i] = c


_build()


def crc16(buf, n):
    """The CRC of ``buf[0:n]``; on the wire it goes low byte first."""
    c = 0xFFFF
    t = _TABLE
    for i in range(n):
        c = (c >> 8) ^ t[(c ^ buf[i]) & 0xFF]
    return c
