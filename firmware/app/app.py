"""The node application: registers, the RTU slave, the sampler, and the watchdog's supervisor."""

import asyncio
import gc
from time import ticks_diff, ticks_ms

from micropython import const

import hw
import nodecfg
import regs as r
from rtu import RtuSlave
from sampler import Sampler

_TICK_MS = const(500)


class Node:
    """One sensor node, built from ``board.json`` and the stored configuration."""

    def __init__(self, boot):
        board = hw.board()
        self.channels = hw.channels(board)
        n = len(self.channels)
        words, found = nodecfg.load(n, board.get("unit", 1))
        self.regs = r.Registers(n, words)
        self.regs.set_status(r.CONFIG_INVALID, found == nodecfg.INVALID)
        self.regs.set_status(r.WATCHDOG_RESET, hw.reset_cause() == "wdt")
        self.bus = hw.bus(board, self.regs.baud())
        self.slave = RtuSlave(self.bus, self.regs)
        self.sampler = Sampler(self.channels, self.regs)
        self.boot = boot
        self._confirm_s = board.get("confirm_s", 30)
        self._wdt_ms = board.get("wdt_ms", 8000)
        self.uptime_s = 0
        self.mem_free = 0
        self.mem_alloc = 0

    def healthy(self, now, loops):
        """True while the slave loop turns and the sampler finished a round in time."""
        late = ticks_diff(now, self.sampler.last)
        return self.slave.loops != loops and late < 2 * self.regs.period_ms() + 1000

    async def supervise(self):
        """Keep uptime, feed the watchdog only while healthy, confirm a trial boot, collect."""
        wdt = hw.watchdog(self._wdt_ms)
        loops = self.slave.loops
        prev = ticks_ms()
        ms = 0
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            now = ticks_ms()
            ms += ticks_diff(now, prev)
            prev = now
            while ms >= 1000:
                ms -= 1000
                self.uptime_s += 1
            self.regs.set_uptime(self.uptime_s)
            if self.healthy(now, loops):
                wdt.feed()
                if self.boot.trial and self.uptime_s >= self._confirm_s:
                    self.boot.confirm()
            loops = self.slave.loops
            gc.collect()  # the one place the heap is collected: a known, idle moment
            self.mem_free = gc.mem_free()
            self.mem_alloc = gc.mem_alloc()


async def main(boot):
    """Run the node until reset. ``boot`` is the loader's ``fwboot.Boot``."""
    node = Node(boot)
    asyncio.create_task(node.slave.serve())
    asyncio.create_task(node.sampler.run())
    hw.ready(node)
    await node.supervise()
