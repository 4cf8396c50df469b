"""CPU per reading of the HJ 212, SL 651 and IEC 104 drivers; bus time per poll of CJ/T 188.

Push protocols (HJ 212, SL 651, IEC 104) cost the gateway CPU per value received: each
figure is the process CPU time to split, check and take ``N`` prebuilt packets (sockets
left out, so only our code is measured), divided by the values they carry, with the size
of each packet given. CJ/T 188 costs bus time: a poll is one read-data exchange at 2400
baud 8E1 with the 3-byte preamble, measured over a PTY whose simulator delivers at line
speed, against the wire minimum (every request and answer byte at 11 bits and a 3.5
character gap before each). Also the import time and resident memory the IEC 104 driver
adds, against c104's (the library it does not use), each in a fresh interpreter.

Run: ``.venv/bin/python bench/field_protocols_bench.py`` (one run; the machine is shared,
so read the figures as ratios within it). Prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from cimedge.drivers import cjt188, hj212, iec104, sl651
from cimedge.drivers.hj212 import frame as hjf
from cimedge.drivers.iec104 import apci
from cimedge.drivers.sl651 import frame as slf
from cimedge.tools.sim.cjt188_meter import Meter, MeterLine
from cimedge.tools.sim.hj212_station import TZ, Station

PACKETS = 3000


class _Conn:
    peer = "bench"

    def send(self, data: bytes) -> bool:
        del data
        return True


def cpu_per_value(run: Any, values: int) -> float:
    """Microseconds of process CPU per value for ``run()`` (best of three)."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        run()
        best = min(best, time.process_time() - t)
    return best / values * 1e6


def hj212_figure(tmp: Path) -> tuple[str, float, int]:
    (tmp / "pw").write_text("pw1")
    points = {f"p{i}": {"code": c} for i, c in enumerate(
        ["a34004", "a34002", "a01001", "a01002", "a21026", "a21004", "LA"])}
    cfg = msgspec.convert({"driver": "hj212", "mode": "listen", "mn": "M1",
                           "password_file": str(tmp / "pw"), "listen_host": "127.0.0.1",
                           "points": points}, hj212.DeviceConfig)
    drv = hj212.Driver("aq", cfg)
    drv.password = "pw1"
    station = Station("M1", "pw1")
    packet = station.report()[0]
    stream = packet * PACKETS

    def run() -> None:
        buf = bytearray(stream)
        raws, _ = hjf.Split().split(buf)
        for raw in raws:
            drv.on_frame(raw, _Conn())  # type: ignore[arg-type]

    return "HJ 212 2011 upload, 7 pollutants", cpu_per_value(run, PACKETS * 7), len(packet)


def sl651_figure(tmp: Path) -> tuple[str, float, int]:
    (tmp / "slpw").write_text("1234")
    points = {"level": {"element": "water_level"}, "rain": {"element": "rainfall_now"},
              "total": {"element": "rainfall_total"}, "v": {"element": "voltage"},
              "door": {"element": "status", "bit": 7}}
    cfg = msgspec.convert({"driver": "sl651", "station": "0012345678",
                           "password_file": str(tmp / "slpw"), "listen_host": "127.0.0.1",
                           "points": points}, sl651.DeviceConfig)
    drv = sl651.Driver("hs", cfg)
    drv.password = "1234"
    now = dt.datetime.now(TZ)
    body = slf.report_body(1, now, "0012345678", 0x48, now, slf.element(0x39, 1.25, 4, 3)
                           + slf.element(0x20, 0.5, 3, 1) + slf.element(0x26, 120.5, 3, 1)
                           + slf.element(0x38, 12.6, 2, 2) + b"\x45\x20\x00\x00\x00\x80")
    packet = slf.encode(slf.Frame(centre=1, station="0012345678", password="1234", fc=0x32,
                                  body=body))

    def run() -> None:
        buf = bytearray(packet * PACKETS)
        raws, _ = slf.Split().split(buf)
        for raw in raws:
            drv.on_frame(raw, _Conn())  # type: ignore[arg-type]

    return "SL 651 timed report, 5 elements", cpu_per_value(run, PACKETS * 5), len(packet)


def iec104_figure() -> tuple[str, float, int]:
    points = {f"m{i}": {"ioa": 1000 + i} for i in range(20)}
    cfg = msgspec.convert({"driver": "iec104", "host": "127.0.0.1", "points": points},
                          iec104.DeviceConfig)
    drv = iec104.Driver("plc", cfg)
    objects = b"".join(struct.pack("<fB", 1.5 + i, 0) for i in range(20))
    asdu = bytes((apci.M_ME_NC_1, 0x80 | 20, apci.COT_SPONTANEOUS, 0, 1, 0)) + \
        (1000).to_bytes(3, "little") + objects
    frames = b"".join(apci.i_frame(i % 32768, 0, asdu) for i in range(PACKETS))

    class _Link:
        rsn = 0
        unacked_rx = 0
        acked = 0
        test_due = None
        closed = False
        why = ""

        class writer:  # noqa: N801
            @staticmethod
            def write(data: bytes) -> None:
                del data

        class window:  # noqa: N801
            @staticmethod
            def set() -> None:
                pass

    def run() -> None:
        link = _Link()
        buf = bytearray(frames)
        apdus, _ = apci.split(buf)
        for apdu in apdus:
            drv._take(link, apdu)  # type: ignore[arg-type]  # noqa: SLF001

    return "IEC 104 M_ME_NC_1, 20 floats per ASDU (SQ)", cpu_per_value(run, PACKETS * 20), \
        len(frames) // PACKETS


async def cjt188_figure() -> tuple[float, float]:
    meter = Meter("00201510270588")
    async with MeterLine([meter], baudrate=2400, line_timing=True) as line:
        cfg = msgspec.convert({"driver": "cjt188", "port": line.path,
                               "address": meter.address, "timeout_s": 1.0,
                               "points": {"v": {"field": "flow_total"}}}, cjt188.DeviceConfig)
        async with cjt188.Driver("wm", cfg) as drv:
            await drv.read()
            polls = 10
            t = time.monotonic()
            for _ in range(polls):
                await drv.read()
            per_poll = (time.monotonic() - t) / polls
    request, answer = 3 + 16, 2 + 13 + 22
    minimum = (request + answer + 2 * 3.5) * 11 / 2400
    return per_poll, minimum


def import_cost(module: str, extra: str = "", prelude: str = "") -> tuple[float, float]:
    """(ms to import, MiB of resident memory added) in a fresh interpreter, best of three.

    ``prelude`` is imported first and not counted (what the daemon has loaded anyway).
    Current RSS from /proc (ru_maxrss would carry the parent's peak across exec).
    """
    code = (f"{prelude}\nimport time\n"
            "rss = lambda: int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
            f"r0 = rss()\nt = time.perf_counter()\nimport {module}\n{extra}\n"
            "dt = time.perf_counter() - t\nprint(dt * 1000, (rss() - r0) / 1024)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(3)]
    return min(float(r[0]) for r in runs), min(float(r[1]) for r in runs)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [hj212_figure(Path(tmp)), sl651_figure(Path(tmp)), iec104_figure()]
    per_poll, minimum = asyncio.run(cjt188_figure())
    print("| protocol | what | bytes a packet | CPU per value |")
    print("|---|---|---|---|")
    for what, us, size in rows:
        print(f"| {what.split(' ', 2)[0]} {what.split(' ', 2)[1]} | {what.split(' ', 2)[2]} "
              f"| {size} | {us:.1f} us |")
    print(f"\nCJ/T 188 at 2400 8E1: {per_poll:.3f} s a poll (one exchange), wire minimum "
          f"{minimum:.3f} s, ratio {per_poll / minimum:.2f}")
    daemon = "import asyncio, msgspec, cimedge.edge.model, cimedge.drivers.health"
    ours = import_cost("cimedge.drivers.iec104.driver", prelude=daemon)
    try:
        theirs = import_cost("c104", "c104.Client()", prelude=daemon)
    except subprocess.CalledProcessError:
        theirs = None
    print(f"\nimport cimedge.drivers.iec104 (asyncio, msgspec loaded): {ours[0]:.0f} ms, "
          f"+{ours[1]:.1f} MiB RSS")
    if theirs:
        print(f"import c104 + one Client (same): {theirs[0]:.0f} ms, +{theirs[1]:.1f} MiB RSS")


if __name__ == "__main__":
    main()
