"""Time the node firmware's request handling where it runs: a board, or the WebAssembly port.

This file is MicroPython. On a flashed board (after interrupting it with mpremote):

    mpremote connect /dev/ttyACM0 run bench/firmware_handle_time.py

bench/firmware_figures.py runs the same file inside the simulated node. It times
``RtuSlave.handle()`` (CRC check, dispatch, answer built in place, answer CRC) for the
requests a gateway makes of an 8-channel node, and an empty loop to compare machines by.
"""

import json
import sys
import time

for slot in ("/flash/a", "/a"):  # the simulator's slot a; a board's
    if slot not in sys.path:
        sys.path.insert(0, slot)

import nodecfg  # noqa: E402
import regs  # noqa: E402
import rtu  # noqa: E402
from crc16 import crc16  # noqa: E402

ROUNDS = 500


class NullBus:
    """Nothing on the line: handle() is timed alone."""

    def any(self):
        return 0


def frame(unit, pdu):
    b = bytes((unit,)) + pdu
    c = crc16(b, len(b))
    return b + bytes((c & 0xFF, c >> 8))


def per_call_us(slave, f):
    rx = slave._rx
    for i in range(len(f)):
        rx[i] = f[i]
    n = len(f)
    t = time.ticks_us()
    for _ in range(ROUNDS):
        slave.handle(n)
    return time.ticks_diff(time.ticks_us(), t) / ROUNDS


def main():
    n = 8
    r = regs.Registers(n, nodecfg.defaults(n, 1))
    s = rtu.RtuSlave(NullBus(), r)
    cases = (
        ("read info, 6 input registers", frame(1, b"\x04\x00\x00\x00\x06")),
        ("read 8 channels, 16 input registers", frame(1, b"\x04\x00\x64\x00\x10")),
        ("read configuration, 42 holding registers", frame(1, b"\x03\x00\xc8\x00\x2a")),
        ("frame for another unit", frame(2, b"\x04\x00\x00\x00\x06")),
        ("bad CRC", frame(1, b"\x04\x00\x00\x00\x06")[:-1] + b"\x00"),
    )
    out = {name: per_call_us(s, f) for name, f in cases}
    t = time.ticks_ms()
    for _ in range(1000000):
        pass
    out["empty loop, 1M iterations (ms)"] = time.ticks_diff(time.ticks_ms(), t)
    return out


_r = json.dumps(main())
print(_r)
