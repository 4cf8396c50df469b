"""The hardware layer: RS-485 port, sensor channels, watchdog, reset, and where flash files live.

On a board these wrap ``machine`` (UART, Pin, ADC, I2C, WDT). On a port without ``machine``
(the WebAssembly port under test) the same names come from ``hw_sim``, which the test host
provides. ``board.json`` on flash says which pins a board uses, for example::

    {"unit": 1, "uart": {"id": 1, "tx": 17, "rx": 16, "de": 4},
     "channels": [{"kind": "adc", "pin": 34},
                  {"kind": "i2c", "id": 0, "scl": 22, "sda": 21, "addr": 64, "reg": 0}],
     "wdt_ms": 8000, "grace_ms": 2000, "confirm_s": 30}

(``firmware/board.example.json``; ``cimedge node flash`` checks it before copying.)
"""

import json

try:
    import machine
except ImportError:
    machine = None
    import hw_sim as _sim

ROOT = "" if machine else _sim.ROOT
_board = None


def path(name):
    """The flash path of ``name``."""
    return ROOT + "/" + name


def board():
    """``board.json`` as a dict (empty when missing or unreadable)."""
    global _board
    if _board is None:
        try:
            with open(path("board.json")) as f:
                _board = json.load(f)
        except (OSError, ValueError):
            _board = {}
    return _board


class Rs485:
    """A UART with an optional driver-enable pin, 8N1."""

    def __init__(self, cfg, baud):
        pin = machine.Pin
        de = cfg.get("de")
        self._de = None if de is None else pin(de, pin.OUT, value=0)
        self._uart = machine.UART(
            cfg.get("id", 1), baudrate=baud, bits=8, parity=None, stop=1,
            tx=pin(cfg["tx"]), rx=pin(cfg["rx"]), txbuf=512, rxbuf=1024,
        )

    def any(self):
        """Bytes waiting in the receive buffer."""
        return self._uart.any()

    def readinto(self, buf, n):
        """Read ``n`` waiting bytes into ``buf``."""
        return self._uart.readinto(buf, n) or 0

    def write(self, buf, n):
        """Send ``buf[:n]`` (queued in the driver's buffer, so no gap inside the frame)."""
        if self._de is not None:
            self._de.on()
        self._uart.write(buf, n)

    def drain(self):
        """Block until the last stop bit has left the wire."""
        self._uart.flush()

    def release(self):
        """Let go of the bus (driver enable off)."""
        if self._de is not None:
            self._de.off()

    def set_baud(self, baud):
        """Change the line speed."""
        self._uart.init(baudrate=baud)


class Adc:
    """An analogue input, 0-65535."""

    def __init__(self, pin):
        self._adc = machine.ADC(machine.Pin(pin))

    def read(self):
        """The raw reading."""
        return self._adc.read_u16()


class I2cWord:
    """A 16-bit big-endian register of an I2C sensor; a bus error raises OSError."""

    def __init__(self, i2c, addr, reg):
        self._i2c, self._addr, self._reg = i2c, addr, reg
        self._b = bytearray(2)

    def read(self):
        """The raw reading."""
        self._i2c.readfrom_mem_into(self._addr, self._reg, self._b)
        return self._b[0] << 8 | self._b[1]


def _channel(c, buses):
    if c["kind"] == "adc":
        return Adc(c["pin"])
    key = c.get("id", 0)
    if key not in buses:
        pin = machine.Pin
        buses[key] = machine.I2C(key, scl=pin(c["scl"]), sda=pin(c["sda"]), freq=100000)
    return I2cWord(buses[key], c["addr"], c.get("reg", 0))


def channels(cfg):
    """The sensor channels ``board.json`` lists, in register order."""
    if machine is None:
        return _sim.channels(cfg)
    buses = {}
    return [_channel(c, buses) for c in cfg.get("channels", ())]


def bus(cfg, baud):
    """The RS-485 port at ``baud``."""
    if machine is None:
        return _sim.Rs485(cfg.get("uart", {}), baud)
    return Rs485(cfg.get("uart", {"id": 1, "tx": 17, "rx": 16}), baud)


def watchdog(ms):
    """Start the hardware watchdog; it cannot be stopped. RP2040 allows at most 8388 ms."""
    return _sim.Watchdog(ms) if machine is None else machine.WDT(timeout=ms)


def reset_cause():
    """Why the node last started: "wdt", "soft" or "power"."""
    if machine is None:
        return _sim.reset_cause()
    cause = machine.reset_cause()
    if cause == machine.WDT_RESET:
        return "wdt"
    return "soft" if cause == machine.SOFT_RESET else "power"


def reset():
    """Restart the node."""
    if machine is None:
        _sim.reset()
    machine.reset()


def run(coro):
    """Run the application's main coroutine (on the WebAssembly port the host's loop runs it)."""
    if machine is None:
        _sim.run(coro)
        return
    import asyncio

    asyncio.run(coro)


def ready(node):
    """The application is serving (a hook for the test host)."""
    if machine is None:
        _sim.ready(node)
