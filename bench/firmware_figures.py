"""Figures for firmware/README.md: size, heap, response time, update-signature cost, RTU timing.

Everything runs the real firmware under the MicroPython WebAssembly port (tools/sim/node.py),
polled over its pseudo-terminal:

1. size: every file a node holds, as source and as .mpy (mpy-cross, the firmware's release);
2. heap: in use after start, and after ``--requests`` requests over the pseudo-terminal
   (the lowest of five readings after gc.collect(), since MicroPython's GC is conservative);
3. request-to-response time seen by the master at the 9600 baud setting (requests 30 ms
   apart) and at 115200 (back to back, ``--requests`` of them); a pseudo-terminal has no line
   speed, so the time is the node's 3.5-character wait, its poll and its work; and handle()
   alone (bench/firmware_handle_time.py, which also runs on a board);
4. signature cost: LMS (H10, W4) verification with loader/lms.py, and Ed25519 with
   bench/firmware_ed25519.py, both inside the node; code size of each as .mpy;
5. the RTU timing budget at 9600 and 115200 baud, by calculation (see the README).

    .venv/bin/python bench/firmware_figures.py                 # 10,000 requests
    .venv/bin/python bench/firmware_figures.py --requests 2000 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cimedge.drivers.modbus.rtu import crc16  # noqa: E402
from cimedge.tools.sim.node import FIRMWARE, SimNode, fwimage, sim_board  # noqa: E402

BENCH = Path(__file__).resolve().parent
# An assumption, not a measurement: a 125-240 MHz ESP32 or RP2040 runs MicroPython bytecode this
# many times slower than the WebAssembly port on this machine. Replace it with what
# bench/firmware_handle_time.py prints on the board.
BOARD_SLOWDOWN = 20


def frame(unit: int, pdu: bytes) -> bytes:
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def sizes() -> dict[str, Any]:
    """Source and .mpy bytes of each file a node holds."""
    fw = fwimage()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted([*FIRMWARE.glob("loader/*.py"), *FIRMWARE.glob("app/*.py")]):
            mpy = fw.compile_mpy(src, Path(tmp)).stat().st_size
            rows[f"{src.parent.name}/{src.name}"] = (src.stat().st_size, mpy)
        ed = fw.compile_mpy(BENCH / "firmware_ed25519.py", Path(tmp)).stat().st_size
    total = tuple(sum(v[i] for v in rows.values()) for i in (0, 1))
    return {"files": rows, "total": total, "ed25519_mpy": ed}


def stable_heap(node: SimNode) -> int:
    return min(node.heap()["alloc"] for _ in range(5))


def exchange_times(node: SimNode, port: Any, count: int, gap: float = 0.0) -> list[float]:  # noqa: ANN401
    """Seconds from the request's last byte written to the answer's last byte read.

    With ``gap``, each request finds the node idle; without, back to back, a request can
    wait while the node lets the previous answer's wire time pass before dropping the
    driver-enable pin (a pseudo-terminal delivers the answer at once; a wire would not).
    """
    req = frame(1, struct.pack(">BHH", 4, 100, 4))
    want = 5 + 8
    out = []
    for _ in range(count):
        t = time.perf_counter()
        port.write(req)
        got = port.read(want)
        out.append(time.perf_counter() - t)
        assert len(got) == want, got
        if gap:
            time.sleep(gap)
    return out


def summary(ts: list[float]) -> dict[str, float]:
    ts = sorted(ts)
    return {"median_ms": statistics.median(ts) * 1000, "p99_ms": ts[int(len(ts) * 0.99)] * 1000,
            "max_ms": ts[-1] * 1000}


def signature_costs(node: SimNode, tmp: Path) -> dict[str, float]:
    """Verification time inside the node: LMS H10/W4 (the firmware's) and Ed25519."""
    fw = fwimage()
    key = fw.LmsKey.generate(tmp / "bench.key", height=10, w=4)
    pub = key.public()
    msgs = [b"manifest %d" % i for i in range(3)]
    sigs = [key.sign(m) for m in msgs]
    cases = [(pub.hex(), m.hex(), s.hex()) for m, s in zip(msgs, sigs, strict=True)]
    code = ("import lms, time, json\nfrom binascii import unhexlify as u\nts = []\n"
            f"for p, m, s in {cases!r}:\n"
            "    t = time.ticks_ms()\n    assert lms.verify(u(p), u(m), u(s))\n"
            "    ts.append(time.ticks_diff(time.ticks_ms(), t))\n_r = json.dumps(ts)")
    lms_ms = json.loads(node.exec(code))

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    epub = k.public_key().public_bytes_raw()
    esig = k.sign(msgs[0])
    h = hashlib.sha512(esig[:32] + epub + msgs[0]).digest()
    src = (BENCH / "firmware_ed25519.py").read_text()
    code = (src + "\nimport time, json\nfrom binascii import unhexlify as u\n"
            "t = time.ticks_ms()\n"
            f"ok = verify(u({epub.hex()!r}), u({esig.hex()!r}), u({h.hex()!r}))\n"
            "_r = json.dumps([ok, time.ticks_diff(time.ticks_ms(), t)])")
    ok, ed_ms = json.loads(node.exec(code))
    assert ok
    return {"lms_h10_w4_ms": statistics.median(lms_ms), "lms_sig_bytes": len(sigs[0]),
            "ed25519_ms_without_sha512": ed_ms}


def rtu_budget(handle_ms: float) -> list[dict[str, float]]:
    """Modbus RTU timing at 9600 and 115200 baud for a 6-register read and a 125-register one."""
    rows = []
    for baud in (9600, 115200):
        char_ms = 11_000 / baud  # the spec's 11-bit character (8N1 sends 10)
        t35 = 1.75 if baud > 19200 else 3.5 * char_ms  # noqa: PLR2004
        for regs in (6, 125):
            answer = 5 + 2 * regs
            t15 = 1.5 * char_ms if baud <= 19200 else 0.75  # noqa: PLR2004
            rows.append({
                "baud": baud, "registers": regs, "t1.5_ms": t15, "t3.5_ms": t35,
                "request_wire_ms": 8 * char_ms, "answer_wire_ms": answer * char_ms,
                "node_turnaround_ms": t35 + 1.0 + handle_ms,  # wait, 1 ms poll, work
                "total_ms": 8 * char_ms + t35 + 1.0 + handle_ms + answer * char_ms,
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    import serial

    out: dict[str, Any] = {"size": sizes()}
    with tempfile.TemporaryDirectory() as tmp:
        node = SimNode(Path(tmp) / "flash", board=sim_board(2, wdt_ms=600_000))
        node.start()
        try:
            port = serial.Serial(node.port, 9600, timeout=2)
            time.sleep(1.0)
            out["heap_after_start"] = stable_heap(node)
            out["at_9600"] = summary(exchange_times(node, port, 300, gap=0.03))
            port.write(frame(1, bytes.fromhex("06 00 c9 00 07")))  # 115200: t3.5 = 1.75 ms
            assert port.read(8)
            t = time.perf_counter()
            times = exchange_times(node, port, a.requests)
            out["at_115200"] = summary(times) | {"requests": a.requests,
                                                 "seconds": time.perf_counter() - t}
            out["heap_after_requests"] = stable_heap(node)
            out["handle_us"] = json.loads(node.exec((BENCH / "firmware_handle_time.py")
                                                    .read_text()))
            out["signatures"] = signature_costs(node, Path(tmp))
            port.close()
        finally:
            node.close()
    worst = max(v for k, v in out["handle_us"].items() if "loop" not in k) / 1000
    out["rtu_budget_board"] = rtu_budget(worst * BOARD_SLOWDOWN)
    print(json.dumps(out, indent=1) if a.json else render(out))
    return 0


def render(o: dict[str, Any]) -> str:
    lines = ["file                      source   .mpy"]
    lines += [f"{name:<24} {s:7d} {m:6d}" for name, (s, m) in o["size"]["files"].items()]
    lines.append(f"{'total':<24} {o['size']['total'][0]:7d} {o['size']['total'][1]:6d}")
    lines.append(f"heap in use after start: {o['heap_after_start']} B; after "
                 f"{o['at_115200']['requests']} requests: {o['heap_after_requests']} B")
    for key in ("at_9600", "at_115200"):
        s = o[key]
        lines.append(f"request to response {key}: median {s['median_ms']:.2f} ms, p99 "
                     f"{s['p99_ms']:.2f} ms, max {s['max_ms']:.2f} ms")
    lines += [f"handle(): {k}: {v:.1f}" + ("" if "(ms)" in k else " us")
              for k, v in o["handle_us"].items()]
    sig = o["signatures"]
    lines.append(f"RTU timing, handle() assumed {BOARD_SLOWDOWN}x slower on the board than here:")
    lines += [f"  {r['baud']:6d} baud, {r['registers']:3d} registers: t3.5 {r['t3.5_ms']:.2f} ms, "
              f"request {r['request_wire_ms']:.2f} ms, node turnaround "
              f"{r['node_turnaround_ms']:.2f} ms, answer {r['answer_wire_ms']:.2f} ms, "
              f"total {r['total_ms']:.2f} ms" for r in o["rtu_budget_board"]]
    lines.append(f"LMS H10/W4 verify {sig['lms_h10_w4_ms']} ms ({sig['lms_sig_bytes']} B "
                 f"signature, lms.mpy {o['size']['files']['loader/lms.py'][1]} B); Ed25519 "
                 f"{sig['ed25519_ms_without_sha512']} ms without SHA-512 "
                 f"(.mpy {o['size']['ed25519_mpy']} B)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
