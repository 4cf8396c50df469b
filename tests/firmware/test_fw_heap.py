"""The heap: answering a request allocates nothing, and serving 10,000 of them leaks nothing."""

from __future__ import annotations

import json

from conftest import frame

H = bytes.fromhex

# Frames a gateway or a noisy bus sends, answered or not; none may allocate.
FRAMES = [
    frame(1, H("04 00 00 00 06")),  # info block
    frame(1, H("04 00 64 00 04")),  # channel values
    frame(1, H("03 00 c8 00 12")),  # whole configuration
    frame(1, H("04 00 06 00 01")),  # exception 2
    frame(1, H("2b 0e 01 00")),  # exception 1
    frame(1, H("08 00 0b 00 00")),  # a diagnostics counter
    frame(1, H("08 00 00 12 34")),  # echo
    frame(2, H("04 00 00 00 06")),  # another unit
    frame(1, H("04 00 00 00 06"))[:-1] + b"\x00",  # bad CRC
]

LOCKED = """
import hw_sim, micropython, time, json


def run(s, frames, rounds):
    # In a function: a new global would grow the module's dict, an allocation of the test's own.
    rx = s._rx
    micropython.heap_lock()
    try:
        for k in range(rounds):
            for f in frames:
                n = len(f)
                for i in range(n):
                    rx[i] = f[i]
                s.handle(n)
    finally:
        micropython.heap_unlock()


def answers(s, frames):
    out = []
    for f in frames:
        for i in range(len(f)):
            s._rx[i] = f[i]
        out.append(s.handle(len(f)))
    return out


s = hw_sim.node.slave
frames = [bytes.fromhex(h) for h in {frames!r}]
t0 = time.ticks_ms()
run(s, frames, {rounds})
ms = time.ticks_diff(time.ticks_ms(), t0)
_r = json.dumps({{"answers": answers(s, frames), "ms": ms}})
"""


def stable_heap(node) -> int:  # noqa: ANN001
    """Heap in use after collection: the lowest of a few readings (the GC is conservative)."""
    return min(node.heap()["alloc"] for _ in range(5))


def test_answering_allocates_nothing(sim) -> None:  # noqa: ANN001
    node = sim()
    rounds = 200
    got = json.loads(node.exec(LOCKED.format(frames=[f.hex() for f in FRAMES], rounds=rounds)))
    # MemoryError under heap_lock() would have failed the exec: nothing was allocated.
    assert got["answers"] == [17, 13, 41, 5, 5, 8, 8, 0, 0]


def test_ten_thousand_requests_leak_nothing(sim, rtu) -> None:  # noqa: ANN001
    node = sim()
    bus = rtu(node)
    assert bus.ask(1, H("06 00 c9 00 07")) == H("06 00 c9 00 07")  # 115200: t3.5 = 1.75 ms
    locked = LOCKED.format(frames=[f.hex() for f in FRAMES], rounds=1000)
    node.exec(locked)  # warm-up: the test's own globals and functions now exist
    for i in range(100):
        bus.ask(1, FRAMES[i % 3][1:-2])
    before = stable_heap(node)
    # 9,000 in the interpreter, straight into the slave; 1,000 over the pseudo-terminal.
    node.exec(locked)
    for i in range(1000):
        bus.ask(1, FRAMES[i % 3][1:-2])
    after = stable_heap(node)
    assert after <= before + 512, (before, after)
