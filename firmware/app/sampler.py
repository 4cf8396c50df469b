"""The sampling loop: read each channel, scale it, publish it to the input registers."""

import asyncio
from time import ticks_diff, ticks_ms

import regs as r


class Sampler:
    """Samples ``channels`` (``hw`` channel objects) every configured period into ``regs``."""

    def __init__(self, channels, regs):
        self._channels = channels
        self._regs = regs
        self._nan = float("nan")
        self.last = ticks_ms()  # when the last round finished: the supervisor's proof of life
        self.rounds = 0

    def sample(self):
        """One round. A channel that fails reads NaN and sets the sensor-fault status bit."""
        regs = self._regs
        fault = False
        for c in range(len(self._channels)):
            try:
                raw = self._channels[c].read()
            except OSError:
                fault = True
                regs.set_channel(c, self._nan)
                continue
            # The only allocation in the steady state: one float per channel per period.
            regs.set_channel(c, raw * regs.scale[c] + regs.offset[c])
        regs.set_status(r.SENSOR_FAULT, fault)
        self.last = ticks_ms()
        self.rounds += 1

    async def run(self):
        """Sample forever; a round that overruns the period starts the next one at once."""
        while True:
            start = ticks_ms()
            self.sample()
            wait = self._regs.period_ms() - ticks_diff(ticks_ms(), start)
            await asyncio.sleep_ms(wait if wait > 0 else 1)
