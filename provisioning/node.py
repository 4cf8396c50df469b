"""`cimedge node ...`: flash, scan, configure and inspect sensor nodes (DESIGN.md section 6).

``scan``, ``info`` and ``config`` speak Modbus RTU on the RS-485 adapter's serial port;
``flash`` copies the firmware to a board over its USB serial port with mpremote.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from cimedge.edge.errors import CimEdgeError

RAW = argparse.RawDescriptionHelpFormatter
FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)  # index = baud code (register 201)
STATUS_BITS = ("sensor fault", "watchdog reset seen", "config invalid")
HOLD, CHANNELS = 200, 10  # the holding block's start; channel 0's scale within it


class NodeError(CimEdgeError):
    """A node, its port or a setting could not be used; the message says which and why."""


class NoAnswer(NodeError):
    """No node answered at that address."""

    def __init__(self, port: str, unit: int, baud: int, timeout: float) -> None:
        super().__init__(f"no answer from unit {unit} on {port} at {baud} baud within "
                         f"{timeout:g} s (check the address, the baud rate and the A/B wiring)")


# ---- a small synchronous RTU master (frames from drivers.modbus.rtu) ---------------------------


class Bus:
    """A Modbus RTU master on one serial port."""

    def __init__(self, port: str, baud: int, timeout: float, retries: int = 1) -> None:
        import serial  # type: ignore[import-untyped]  # pyserial ships no types

        self.name, self.baud, self.timeout, self.retries = port, baud, timeout, retries
        try:
            self.port = serial.Serial(port, baud, timeout=0)
        except (serial.SerialException, OSError) as e:
            why = os.strerror(e.errno) if isinstance(e.errno, int) else str(e)
            msg = f"cannot open {port}: {why}"
            raise NodeError(msg) from None

    def close(self) -> None:
        """Close the port."""
        self.port.close()

    def rebaud(self, baud: int) -> None:
        """Talk at ``baud`` from now on."""
        self.baud = self.port.baudrate = baud

    def exchange(self, unit: int, request: bytes, fc: int) -> bytes:
        """Send ``request``; the checked answer frame, or NoAnswer after ``retries`` resends.

        A resend covers a frame lost to noise on the line (or, on a simulated line, to a
        scheduling gap that split it): without it a scan misses a node that is there.
        """
        from cimedge.drivers.modbus import rtu

        for _ in range(self.retries + 1):
            self.port.reset_input_buffer()
            self.port.write(request)
            buf = bytearray()
            end = time.monotonic() + self.timeout + len(request) * 11 / self.baud
            while time.monotonic() < end:
                buf += self.port.read(256)
                found = rtu.scan(buf, unit, fc)
                if found.frame is not None:
                    return found.frame
                time.sleep(0.002)
        raise NoAnswer(self.name, unit, self.baud, self.timeout)

    def read(self, unit: int, table: str, start: int, count: int) -> list[int]:
        """``count`` registers of ``table`` ("input" or "holding") from ``start``."""
        from cimedge.drivers.modbus import rtu

        req = rtu.read_request(unit, table, start, count)  # type: ignore[arg-type]
        answer = self.exchange(unit, req, rtu.READ_FC[table])  # type: ignore[index]
        what = f"unit {unit} {table} {start}"
        return rtu.read_values(answer, table, count, what)  # type: ignore[arg-type,return-value]

    def write(self, unit: int, start: int, words: Sequence[int]) -> None:
        """Function 16; raises DeviceException when the node refuses."""
        from cimedge.drivers.modbus import rtu

        req = rtu.write_registers(unit, start, list(words))
        answer = self.exchange(unit, req, rtu.WRITE_REGISTERS)
        rtu.check_echo(answer, req, f"unit {unit} holding {start}")


def _float(hi: int, lo: int) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", hi, lo))[0])


def _words(v: float) -> tuple[int, int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", v))
    return hi, lo


def identify(bus: Bus, unit: int) -> dict[str, Any]:
    """Version, uptime, status and channel count of the node at ``unit``."""
    major, minor_patch, up_hi, up_lo, status, n = bus.read(unit, "input", 0, 6)
    return {"unit": unit, "version": f"{major}.{minor_patch >> 8}.{minor_patch & 0xFF}",
            "uptime_s": up_hi << 16 | up_lo, "status": status,
            "status_bits": [name for i, name in enumerate(STATUS_BITS) if status >> i & 1],
            "channels": n}


def read_config(bus: Bus, unit: int, n: int) -> dict[str, Any]:
    """The node's holding block as settings: address, baud, period_ms, chN.scale, chN.offset."""
    w = bus.read(unit, "holding", HOLD, CHANNELS + 4 * n)
    cfg: dict[str, Any] = {"address": w[0], "baud": BAUDS[w[1]] if w[1] < len(BAUDS) else None,
                           "period_ms": w[2]}
    for c in range(n):
        at = CHANNELS + 4 * c
        cfg[f"ch{c}.scale"] = _float(w[at], w[at + 1])
        cfg[f"ch{c}.offset"] = _float(w[at + 2], w[at + 3])
    return cfg


def check_setting(key: str, text: str, n: int) -> tuple[str, int | float]:
    """A ``--set KEY=VALUE`` checked against the node's own rules: (key, value) or NodeError."""
    ints = {"address": (1, 247), "period_ms": (10, 60000)}
    try:
        if key in ints:
            low, high = ints[key]
            v: int | float = int(text)
            if not low <= v <= high:
                raise ValueError
            return key, v
        if key == "baud":
            v = int(text)
            if v not in BAUDS:
                raise ValueError
            return key, v
        ch, _, what = key.partition(".")
        if ch.startswith("ch") and ch[2:].isdigit() and int(ch[2:]) < n and what in ("scale",
                                                                                    "offset"):
            v = float(text)
            f32 = _float(*_words(v))
            if not math.isfinite(f32) or (what == "scale" and f32 == 0):
                raise ValueError
            return key, v
    except (ValueError, OverflowError):
        pass
    else:
        known = "address, baud, period_ms, " + ", ".join(f"ch{c}.scale, ch{c}.offset"
                                                         for c in range(n))
        msg = f"{key}: no such setting on this node (it has {known})"
        raise NodeError(msg)
    rules = {"address": "a whole number 1-247", "period_ms": "a whole number 10-60000",
             "baud": "one of " + ", ".join(map(str, BAUDS))}
    rule = rules.get(key, "a finite number other than 0" if key.endswith("scale")
                     else "a finite number")
    msg = f"{key}={text}: must be {rule}"
    raise NodeError(msg)


def encode_config(cfg: dict[str, Any], n: int) -> list[int]:
    """The holding block for settings ``cfg``."""
    w = [cfg["address"], BAUDS.index(cfg["baud"]), cfg["period_ms"]] + [0] * 7
    for c in range(n):
        w += [*_words(cfg[f"ch{c}.scale"]), *_words(cfg[f"ch{c}.offset"])]
    return w


# ---- flash -------------------------------------------------------------------------------------


def _fwimage() -> ModuleType:
    name = "cimedge_fwimage"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIRMWARE / "host" / "fwimage.py")
        if spec is None or spec.loader is None:
            msg = f"the firmware sources are missing from {FIRMWARE}"
            raise NodeError(msg)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


HASHES = """import hashlib, binascii, json
out = {{}}
for name in {names!r}:
    h = hashlib.sha256()
    try:
        with open(name, 'rb') as f:
            while True:
                b = f.read(512)
                if not b:
                    break
                h.update(b)
        out[name] = binascii.hexlify(h.digest()).decode()
    except OSError:
        out[name] = None
print(json.dumps(out))
"""

PREPARE = """import os
for d in ('a', 'b'):
    try:
        os.mkdir(d)
    except OSError:
        pass
for name in ('b/manifest.json', 'update.bin', 'slot.new', 'main.py'):
    try:
        os.remove(name)
    except OSError:
        pass
"""


def flash_plan(port: str, files: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """The mpremote commands of a flash, as (what, argv) pairs, in order.

    A hard reset first: a running node's watchdog cannot be stopped, but the loader waits
    ``grace_ms`` before starting it, and the next command's Ctrl-C lands in that wait.
    ``main.py`` goes away first and comes back last, so a copy cut short leaves a board that
    boots to its REPL.
    """
    mp = ["mpremote", "connect", port]
    plan = [("reset", [*mp, "reset"]), ("prepare", [*mp, "exec", PREPARE])]
    plan += [(name, [*mp, "fs", "cp", str(src), ":" + name]) for name, src in files.items()]
    plan.append(("verify", [*mp, "exec", HASHES.format(names=list(files))]))
    plan.append(("boot", [*mp, "reset"]))
    return plan


Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        msg = "mpremote is not installed: pip install -e '.[node]' (it flashes over USB)"
        raise NodeError(msg)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


class Progress:
    """A one-line progress bar on stderr (a line per tenth when stderr is not a terminal)."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.done, self.what = max(total, 1), 0, what
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def step(self, n: int, label: str) -> None:
        """Advance by ``n`` units, showing ``label``."""
        self.done += n
        share = min(self.done / self.total, 1.0)
        if not self.tty and int(share * 10) == self.shown:
            return
        self.shown = int(share * 10)
        bar = "#" * int(share * 30)
        line = f"{self.what} [{bar:<30}] {share:4.0%} {label}"
        sys.stderr.write(f"\r{line:<78}" if self.tty else line + "\n")
        if self.tty and share >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def flash(port: str, board: dict[str, Any], pub: bytes | None, image: bytes | None, *,
          mpy: bool = False, run: Runner = _run, retries: int = 3) -> dict[str, Any]:
    """Copy the firmware (and a signed update image) to the board on ``port``, then verify."""
    fw = _fwimage()
    files = fw.flash_files(board, pub, mpy=mpy)
    if image is not None:
        fw.image_info(image)  # a file that is not an image at all stops here, not on the node
        files = {**{k: v for k, v in files.items() if k != "main.py"}, "update.bin": image,
                 "main.py": files["main.py"]}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i, (name, data) in enumerate(files.items()):
            paths[name] = Path(tmp) / f"{i:02d}-{name.replace('/', '_')}"
            paths[name].write_bytes(data)
        plan = flash_plan(port, paths)
        bar = Progress(sum(len(d) for d in files.values()) + 4, f"flash {port}")
        for what, argv in plan:
            done = _attempt(run, argv, retries if what in ("prepare", "boot") else 1)
            if done.returncode != 0:
                why = (done.stderr or done.stdout).strip().splitlines()
                msg = f"mpremote failed at {what} on {port}: {why[-1] if why else 'no output'}"
                raise NodeError(msg)
            if what == "verify":
                _verify(port, files, done.stdout)
            bar.step(len(files.get(what, b"x")), what)
    return {"port": port, "files": len(files), "bytes": sum(len(d) for d in files.values()),
            "version": ".".join(map(str, fw.app_version())), "update_staged": image is not None}


def _attempt(run: Runner, argv: list[str], tries: int) -> subprocess.CompletedProcess[str]:
    for n in range(tries):
        done = run(argv)
        if done.returncode == 0 or n == tries - 1:
            return done
        time.sleep(0.5)  # the board is still coming back from its reset
    return done


def _verify(port: str, files: dict[str, bytes], out: str) -> None:
    try:
        got = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        msg = f"could not read back the files from {port}: {out.strip()[:80]!r}"
        raise NodeError(msg) from None
    for name, data in files.items():
        if got.get(name) != hashlib.sha256(data).hexdigest():
            state = "is missing" if got.get(name) is None else "differs from what was sent"
            msg = f"read-back of {name} on {port} {state}: flash again"
            raise NodeError(msg)


# ---- handlers ----------------------------------------------------------------------------------


def _print(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _scan(args: argparse.Namespace) -> int:
    if not 1 <= args.first <= args.last <= 247:  # noqa: PLR2004  # Modbus's last unit address
        msg = f"--first {args.first} --last {args.last}: need 1 <= first <= last <= 247"
        raise NodeError(msg)
    from cimedge.edge.errors import DeviceException

    bus = Bus(args.port, args.baud, args.timeout, args.retries)
    found, bar = [], Progress(args.last - args.first + 1, f"scan {args.port}")
    try:
        for unit in range(args.first, args.last + 1):
            try:
                found.append(identify(bus, unit))
            except NoAnswer:
                pass
            except DeviceException as e:
                found.append({"unit": unit, "error": f"not a CIM Edge node ({e})"})
            bar.step(1, f"unit {unit}, {len(found)} found")
    finally:
        bus.close()
    lines = [f"unit {n['unit']:3d}  " + (n.get("error") or
             f"firmware {n['version']}, {n['channels']} channels, status "
             + (", ".join(n["status_bits"]) or "ok")) for n in found]
    _print(args, found, "\n".join(lines) or f"no node answered on {args.port} at {args.baud} baud")
    return 0


def _info(args: argparse.Namespace) -> int:
    bus = Bus(args.port, args.baud, args.timeout, args.retries)
    try:
        node = identify(bus, args.unit)
        n = node["channels"]
        words = bus.read(args.unit, "input", 100, 2 * n) if n else []
        cfg = read_config(bus, args.unit, n)
    finally:
        bus.close()
    values = [_float(words[2 * c], words[2 * c + 1]) for c in range(n)]
    node["values"] = [None if math.isnan(v) else v for v in values]
    node["config"] = cfg
    up = node["uptime_s"]
    text = [f"unit {args.unit} on {args.port} at {args.baud} baud",
            f"firmware  {node['version']}",
            f"uptime    {up // 86400} d {up % 86400 // 3600:02d}:{up % 3600 // 60:02d}:"
            f"{up % 60:02d}",
            f"status    {', '.join(node['status_bits']) or 'ok'}",
            f"channels  {n} (sampled every {cfg['period_ms']} ms)"]
    text += [f"  ch{c}     {'no reading' if v is None else f'{v:g}'}"
             f"   (scale {cfg[f'ch{c}.scale']:g}, offset {cfg[f'ch{c}.offset']:g})"
             for c, v in enumerate(node["values"])]
    _print(args, node, "\n".join(text))
    return 0


def _config(args: argparse.Namespace) -> int:
    from cimedge.edge.errors import DeviceException

    bus = Bus(args.port, args.baud, args.timeout, args.retries)
    try:
        n = identify(bus, args.unit)["channels"]
        old = read_config(bus, args.unit, n)
        new = dict(old)
        for item in args.set or ():
            key, eq, text = item.partition("=")
            if not eq:
                msg = f"--set {item}: write it as KEY=VALUE, for example period_ms=500"
                raise NodeError(msg)
            k, v = check_setting(key.strip(), text.strip(), n)
            new[k] = v
        if new != old:
            try:
                bus.write(args.unit, HOLD, encode_config(new, n))
            except DeviceException as e:
                msg = f"unit {args.unit} refused the configuration ({e}); it keeps the old one"
                raise NodeError(msg) from None
            time.sleep(0.05)  # the node changes address and baud after its answer
            bus.rebaud(new["baud"])
            back = read_config(bus, new["address"], n)
            if back != {**new, **{k: _float(*_words(new[k])) for k in new if k.startswith("ch")}}:
                msg = f"read-back from unit {new['address']} differs from what was written: {back}"
                raise NodeError(msg)
            old = back
    finally:
        bus.close()
    _print(args, old, "\n".join(f"{k:<12} {v:g}" if isinstance(v, float) else f"{k:<12} {v}"
                                for k, v in old.items()))
    return 0


def _flash(args: argparse.Namespace) -> int:
    board = _json_file(args.board)
    check_board(board, str(args.board))
    pub = None
    if args.key:
        try:
            pub = bytes.fromhex(args.key.read_text().strip())
        except (OSError, ValueError) as e:
            msg = f"{args.key}: not a firmware public key in hex ({e})"
            raise NodeError(msg) from None
    image = args.image.read_bytes() if args.image else None
    if image is not None and pub is None and not args.allow_no_key:
        msg = "--image needs --key: without the firmware key the node refuses every update"
        raise NodeError(msg)
    done = flash(args.port, board, pub, image, mpy=args.mpy)
    _print(args, done, f"flashed firmware {done['version']} to {args.port}: {done['files']} files, "
                       f"{done['bytes']} bytes, read back and verified"
                       + ("; update staged for the next boot" if image else ""))
    return 0


def check_board(board: dict[str, Any], where: str) -> None:
    """Refuse a ``board.json`` the loader could not start with, naming the key and the rule."""
    def fail(key: str, rule: str) -> NoReturn:
        msg = f"{where}: {key} must be {rule}"
        raise NodeError(msg)

    def need(ok: bool, key: str, rule: str) -> None:  # noqa: FBT001
        if not ok:
            fail(key, rule)

    def whole(v: object, low: int, high: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    uart = board.get("uart")
    if not isinstance(uart, dict):
        fail("uart", 'an object such as {"id": 1, "tx": 17, "rx": 16}')
    for key in ("tx", "rx"):
        need(whole(uart.get(key), 0, 99), f"uart.{key}", "a GPIO number")
    need(uart.get("de") is None or whole(uart.get("de"), 0, 99), "uart.de", "a GPIO number")
    channels = board.get("channels")
    if not isinstance(channels, list) or not 1 <= len(channels) <= 32:  # noqa: PLR2004
        fail("channels", "a list of 1-32 channels")
    for i, c in enumerate(channels):
        kind = c.get("kind") if isinstance(c, dict) else None
        need(kind in ("adc", "i2c"), f"channels[{i}].kind", '"adc" or "i2c"')
        pins = ("pin",) if kind == "adc" else ("scl", "sda")
        for key in pins:
            need(whole(c.get(key), 0, 99), f"channels[{i}].{key}", "a GPIO number")
        if kind == "i2c":
            need(whole(c.get("addr"), 8, 119), f"channels[{i}].addr", "an I2C address 8-119")
    limits = {"unit": (1, 247), "wdt_ms": (1000, 8388), "grace_ms": (500, 10000),
              "confirm_s": (1, 3600)}
    for key, (low, high) in limits.items():
        if key in board:
            need(whole(board[key], low, high), key, f"a whole number {low}-{high}")


def _json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        msg = f"{path}: not a readable JSON board description ({e})"
        raise NodeError(msg) from None
    if not isinstance(data, dict):
        msg = f"{path}: a board description is a JSON object"
        raise NodeError(msg)
    return data


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``cimedge node flash|scan|config|info``."""
    group = sub.add_parser("node", help="flash, scan, configure and inspect sensor nodes",
                           description=__doc__.split("\n")[0].split(": ", 1)[1],
                           epilog="example: cimedge node info --port /dev/ttyUSB0 --unit 1",
                           formatter_class=RAW)
    nsub = group.add_subparsers(dest="node_command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str, example: str, handler: Callable[..., int], *,
            bus: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = nsub.add_parser(
            name, help=help_, description=help_, formatter_class=RAW, epilog=f"example: {example}")
        p.add_argument("--port", required=True, metavar="DEV",
                       help="serial port (the RS-485 adapter; for flash, the board's USB)")
        if bus:
            p.add_argument("--baud", type=int, default=9600, choices=BAUDS,
                           help="line speed (default 9600, the node's factory setting)")
            p.add_argument("--timeout", type=float, default=0.3, metavar="S",
                           help="seconds to wait for each answer (default 0.3)")
            p.add_argument("--retries", type=int, default=1, choices=range(6), metavar="N",
                           help="resend a request that got no answer N times (default 1)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(handler=handler)
        return p

    f = cmd("flash", "copy the node firmware to a board over USB with mpremote, then verify it",
            "cimedge node flash --port /dev/ttyACM0 --board board.json --key city-fw.pub",
            _flash, bus=False)
    f.add_argument("--board", type=Path, metavar="FILE", required=True,
                   help="board.json: UART pins, channels, watchdog (see firmware/README.md)")
    f.add_argument("--key", type=Path, metavar="FILE", help="the city's firmware public key (hex)")
    f.add_argument("--image", type=Path, metavar="FILE",
                   help="also stage this signed update image; the node checks it at boot")
    f.add_argument("--allow-no-key", action="store_true", help=argparse.SUPPRESS)
    f.add_argument("--mpy", action="store_true",
                   help="copy .mpy files compiled by mpy-cross (less RAM on the node)")

    s = cmd("scan", "find the nodes on an RS-485 bus",
            "cimedge node scan --port /dev/ttyUSB0 --baud 9600 --first 1 --last 32", _scan)
    s.add_argument("--first", type=int, default=1, metavar="UNIT")
    s.add_argument("--last", type=int, default=247, metavar="UNIT")
    s.set_defaults(timeout=0.1)

    i = cmd("info", "show a node's firmware, uptime, status bits and channel values",
            "cimedge node info --port /dev/ttyUSB0 --unit 3", _info)
    i.add_argument("--unit", type=int, default=1, metavar="UNIT")

    c = cmd("config", "read a node's configuration, or change it (validated, then read back)",
            "cimedge node config --port /dev/ttyUSB0 --unit 3 --set period_ms=500 "
            "--set ch0.scale=0.01", _config)
    c.add_argument("--unit", type=int, default=1, metavar="UNIT")
    c.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="address, baud, period_ms, chN.scale or chN.offset; repeatable")
