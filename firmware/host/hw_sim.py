"""Simulated hardware for the WebAssembly port: the host's UART device, channel values, watchdog.

``run_node.mjs`` registers the JavaScript module ``cimhost`` and the character device
``/dev/uart0`` (bytes to and from the pseudo-terminal), mounts the node's flash at ``/flash``,
and puts this file on ``sys.path``. It is never copied to a board.
"""

import asyncio

import cimhost

ROOT = "/flash"
node = None  # the running app.Node, for the host's inspection


class Rs485:
    """The UART: reads and writes go to ``/dev/uart0`` without allocating."""

    def __init__(self, cfg, baud):
        self._f = open("/dev/uart0", "r+b")
        self._any = cimhost.uart_any
        cimhost.uart_baud(baud)

    def any(self):
        """Bytes waiting."""
        return self._any()

    def readinto(self, buf, n):
        """Read ``n`` waiting bytes into ``buf``."""
        return self._f.readinto(buf, n) or 0

    def write(self, buf, n):
        """Send ``buf[:n]``."""
        self._f.write(buf, n)

    def drain(self):
        """The pseudo-terminal takes a frame at once."""

    def release(self):
        """No driver-enable pin."""

    def set_baud(self, baud):
        """Tell the host (it reports the line speed; a pseudo-terminal has none)."""
        cimhost.uart_baud(baud)


class Channel:
    """Channel ``i``: the value the host was given for it.

    The host answers a number, None (the sensor does not answer: OSError), "crash" (a bug:
    the sampler task dies) or "hang" (the sensor driver never returns: the whole interpreter
    stalls, as a stuck I2C read does on a board).
    """

    def __init__(self, i):
        self._i = i
        self._read = cimhost.channel

    def read(self):
        """The raw reading."""
        v = self._read(self._i)
        if v is None:
            raise OSError(5)
        if v == "crash":
            raise RuntimeError("simulated sampler bug")
        if v == "hang":
            while True:
                pass
        return v


class Watchdog:
    """The host restarts the node unless fed within ``ms``."""

    def __init__(self, ms):
        cimhost.wdt_start(ms)

    def feed(self):
        """Feed."""
        cimhost.wdt_feed()


def channels(cfg):
    """One simulated channel per ``board.json`` channel entry."""
    return [Channel(i) for i in range(len(cfg.get("channels", ())))]


def reset_cause():
    """Why the host started this run: "power", "soft" or "wdt"."""
    return cimhost.reset_cause()


def reset():
    """Ask the host for a soft reset (it ends this process and starts the next boot)."""
    cimhost.reset()


def run(coro):
    """The host's event loop runs asyncio here; there is no ``asyncio.run``."""
    asyncio.create_task(coro)


def ready(n):
    """Keep the node for inspection and tell the host it serves."""
    global node
    node = n
    cimhost.ready()
