"""Real processes for the signed-ack runs: a broker, the counting simulator, a gateway, receivers.

The gateway (`cimedge run`, contract 1 or 2) polls the pump-station simulator, whose
counter makes every value unique, with CIMEDGE_STORE_AUDIT=1 so its store copies every
committed reading into an audit table; the backend's ingest keys and the gateway's
backend.json are made here with `cimedge backend keygen`. `ForgedAcks` is the attacker: a
client on the broker with no backend key, which reads each batch the gateway sends (seq
and signature prefix, as anyone on the broker can) and publishes an ``ok: true`` ack for
it, in every shape it can make. bench/forged_acks.py and the tests drive these.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cimedge.cloud_sync import backend_keys as bk
from cimedge.provisioning.demo import DEVICE_ID, site_toml
from cimedge.provisioning.identity import ensure_identity
from cimedge.tools.broker import Mosquitto
from cimedge.tools.crashtest import committed, stored

ROOT = Path(__file__).resolve().parents[1]


class AckRig:
    """The processes of one run, each started and stopped on demand."""

    def __init__(self, work: Path, *, contract: int = 2, poll: float = 0.1,
                 flush: float = 0.2, ack_timeout: float = 1.0) -> None:
        self.work, self.contract = work, contract
        self.poll, self.flush, self.ack_timeout = poll, flush, ack_timeout
        (work / "mosquitto").mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(workdir=work / "mosquitto")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "CIMEDGE_STORE_AUDIT": "1", "PYTHONPATH": str(ROOT)}
        self.backend = work / "backend.json"  # the operator's copy; the gateway has its own
        self.gw = work / "gw"

    # -- processes ------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=log,
                             stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        self.procs[name] = p
        return p

    def cli(self, *args: str | Path) -> str:
        """Run one `cimedge` command; its stdout, or RuntimeError with its stderr."""
        out = subprocess.run([sys.executable, "-m", "cimedge", *map(str, args)], env=self.env,
                             capture_output=True, text=True, check=False, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"cimedge {' '.join(map(str, args))}: {out.stderr.strip()}")
        return out.stdout

    def start(self, ingest: str = "ingest-a") -> None:
        """Broker, simulator, one ingest key listed in backend.json (on the gateway too), and
        the gateway; the receiver is started separately."""
        self.broker.start()
        sim = self._spawn("sim", ["-m", "cimedge.tools.sim.pump_station", "--port", "0",
                                  "--speed", "4", "--stats-file", str(self.work / "sim.json")])
        line = sim.stdout.readline().decode() if sim.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"simulator did not start: {line!r}")
        port = int(line.rsplit(":", 1)[1])
        _, self.enrollment = ensure_identity(self.gw, DEVICE_ID, "pump_station")
        self.keygen(ingest)
        self.install()
        text = site_toml(self.broker.url, port, poll=self.poll, flush=self.flush,
                         ack_timeout=self.ack_timeout)
        if "contract =" not in text and self.contract != 1:  # a config without it is v1
            text = text.replace("[sync]\n", f"[sync]\ncontract = {self.contract}\n", 1)
        (self.gw / "site.toml").write_text(text)
        self.start_gateway()

    # The operator's steps run the functions behind `cimedge backend keygen|remove|install`
    # in this process (tests/provisioning/test_backend_cli.py runs the commands themselves).
    def keygen(self, name: str, *, not_after: str | None = None) -> Path:
        """A new ingest key ``work/NAME.key``, listed in the operator's backend.json."""
        from cimedge.provisioning.backend import add_key

        key = bk.write_private_key(self.work / f"{name}.key")
        end = bk.parse_time("--not-after", not_after) if not_after else None
        add_key(self.backend, bk.entry_for(key, "ingest", end))
        return self.work / f"{name}.key"

    def remove(self, name: str) -> None:
        """Drop the ingest key ``work/NAME.key`` from the operator's backend.json."""
        kid = kid_of(self.work / f"{name}.key")
        bk.write(self.backend, bk.BackendKeys(tuple(
            k for k in bk.load(self.backend).keys if k.kid != kid)))

    def install(self) -> None:
        """Put the operator's backend.json on the gateway (a running one picks it up)."""
        from cimedge.provisioning.backend import install_path

        bk.write(install_path(self.gw), bk.load(self.backend))

    def start_gateway(self) -> None:
        self._spawn("gateway", ["-m", "cimedge", "run", "--config", str(self.gw / "site.toml")])

    def start_receiver(self, *keys: str, name: str = "receiver") -> None:
        """`cimedge receiver run` signing with the named ingest keys, once it is subscribed."""
        args = ["-m", "cimedge", "receiver", "run", "--broker", self.broker.url, "--db",
                str(self.work / "receiver.sqlite"), "--registry",
                str(self.work / "registry.sqlite"), "--enroll", str(self.enrollment)]
        for k in keys:
            args += ["--ingest-key", str(self.work / f"{k}.key")]
        p = self._spawn(name, args)
        line = p.stdout.readline().decode() if p.stdout else ""
        if " ready: " not in line:
            raise RuntimeError(f"receiver did not start: {line!r} "
                               f"{(self.work / f'{name}.log').read_text()[-400:]}")

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.broker.close()

    # -- what happened ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        import json

        try:
            return json.loads((self.gw / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def sync(self) -> dict[str, Any]:
        return self.status().get("sync") or {}

    def unacked(self) -> int:
        return int((self.status().get("buffer") or {}).get("batches_unacked", -1))

    def tally(self) -> dict[str, int]:
        """served, committed, stored, lost (committed, never stored), duplicated."""
        import json

        com, got = committed(self.gw), Counter(stored(self.work))
        out = {"committed": len(set(com)), "stored": len(got),
               "lost": len(set(com) - set(got)),
               "duplicated": sum(n - 1 for n in got.values() if n > 1)}
        try:
            stats = json.loads((self.work / "sim.json").read_text())
            out["served"] = stats["served"]
        except (OSError, ValueError):
            pass
        return out

    def drained(self) -> bool:
        """Every committed value stored, and nothing left unacked at the gateway."""
        return set(committed(self.gw)) <= set(stored(self.work)) and self.unacked() == 0

    def emptied(self) -> bool:
        """The gateway holds nothing more (what it deleted on a forged ack is lost, not held)."""
        buf = self.status().get("buffer") or {}
        return buf.get("readings") == 0 and buf.get("events") == 0 and self.unacked() == 0


def wait(cond: Any, timeout: float, what: str) -> Any:  # noqa: ANN401
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class ForgedAcks:
    """An attacker on the broker with no backend key: for every batch and event the gateway
    sends, it publishes ``ok: true`` acks for that seq in each shape it can make.

    ``shapes``: "v1" the plain v1 map; "bare" the v2 payload map unsigned; "own_key" a
    COSE_Sign1 with the right AAD and prefix under its own key; "copied_kid" the same with
    the ingest key's kid in the header; "garbage". With ``backend_key`` (what an insider or
    a leaked operations process could hold, for the tests) also "other_device", "wrong_prefix"
    and, with ``expired_key`` (an ingest key past its not_after), "expired".
    """

    SHAPES = ("v1", "bare", "own_key", "copied_kid", "garbage", "sweep")
    SWEEP_S = 0.5  # "sweep": every half second, a v1 ack for every seq up to the last seen + 8

    def __init__(self, port: int, dev: str, ingest_kid: bytes, *, backend_key: Any = None,
                 expired_key: Any = None) -> None:
        import paho.mqtt.client as mqtt
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.dev, self.ingest_kid = dev, ingest_kid
        self.mine = Ed25519PrivateKey.generate()
        self.backend_key, self.expired_key = backend_key, expired_key
        self.published: Counter[str] = Counter()
        self.seqs: set[int] = set()
        self._lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger",
                             protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        ready = threading.Event()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe([(f"cim/v1/{dev}/batch", 1), (f"cim/v1/{dev}/event", 1)])
        if not ready.wait(10):
            raise RuntimeError("the forger could not subscribe")
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="forger-sweep", daemon=True)
        self._sweeper.start()

    def _sweep(self) -> None:
        from cimedge.cloud_sync.ack import encode_ack

        while not self._stop.wait(self.SWEEP_S):
            with self._lock:
                top = max(self.seqs, default=0) + 8
            for seq in range(1, top + 1):
                if self.c.publish(f"cim/v1/{self.dev}/ack", encode_ack(seq, True), qos=1).rc == 0:
                    with self._lock:
                        self.published["sweep"] += 1

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:  # noqa: ANN401
        from cimedge.cloud_sync.cose import parse_sign1
        from cimedge.cloud_sync.payload2 import peek_contract

        try:
            sign1 = parse_sign1(bytes(msg.payload))
        except Exception:  # noqa: BLE001 - not ours to judge
            return
        import cbor2

        body = cbor2.loads(sign1.payload)
        seq = body[1] if peek_contract(sign1.payload) == 2 else body["seq"]  # noqa: PLR2004
        for shape, data in self.forge(seq, sign1.signature[:8]).items():
            info = client.publish(f"cim/v1/{self.dev}/ack", data, qos=1)
            if info.rc == 0:
                with self._lock:
                    self.published[shape] += 1
                    self.seqs.add(seq)

    def forge(self, seq: int, prefix: bytes) -> dict[str, bytes]:
        from cimedge.cloud_sync.ack import encode_ack, encode_signed_ack
        from cimedge.cloud_sync.cbor_limits import dumps_det

        out = {"v1": encode_ack(seq, True),
               "bare": dumps_det({1: seq, 2: True, 3: prefix}),
               "own_key": encode_signed_ack(self.mine, self.dev, seq, True, prefix),
               "copied_kid": encode_signed_ack(self.mine, self.dev, seq, True, prefix,
                                               kid=self.ingest_kid),
               "garbage": b"\xd2\x84garbage" + prefix}
        if self.backend_key is not None:
            out["other_device"] = encode_signed_ack(self.backend_key, "ps-demo-99", seq, True,
                                                    prefix)
            out["wrong_prefix"] = encode_signed_ack(self.backend_key, self.dev, seq, True,
                                                    bytes(b ^ 0x5A for b in prefix))
        if self.expired_key is not None:
            out["expired"] = encode_signed_ack(self.expired_key, self.dev, seq, True, prefix)
        return out

    def total(self) -> int:
        with self._lock:
            return sum(self.published.values())

    def close(self) -> None:
        self._stop.set()
        self._sweeper.join()
        self.c.loop_stop()
        self.c.disconnect()


# the kind a v2 gateway counts each shape as (cloud_sync/ackcheck.py)
EXPECTED_KIND = {"v1": "unsigned", "sweep": "unsigned", "bare": "unsigned", "own_key": "unknown_key",
                 "copied_kid": "bad_signature", "garbage": "malformed",
                 "other_device": "bad_signature", "wrong_prefix": "wrong_prefix",
                 "expired": "expired_key"}


def kid_of(key_file: Path) -> bytes:
    return bk.entry_for(bk.load_private_key(key_file), "ingest").kid

