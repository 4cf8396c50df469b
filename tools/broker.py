"""A private Mosquitto on a free loopback port, for the demo, tests and tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cimedge.cloud_sync.transport import MAX_PACKET_SIZE  # what every client asks for too
from cimedge.edge.errors import CimEdgeError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    """The mosquitto executable, or None when it is not installed.

    ``CIMEDGE_MOSQUITTO`` names another binary; set empty, it means "none" (to try the
    demo's fallback broker on a machine that has mosquitto).
    """
    if "CIMEDGE_MOSQUITTO" in os.environ:
        return os.environ["CIMEDGE_MOSQUITTO"] or None
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )


class Mosquitto:
    """One mosquitto process listening on 127.0.0.1 only; stop() ends it.

    The same port can be kept across stop()/start() so a test can restart the broker
    under a running gateway. Persistence is on, so QoS 1 sessions survive a restart.
    ``max_packet_size`` None leaves the broker without a size limit (a test that shows the
    clients' own limit at work needs a broker that would forward anything).
    """

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, extra_conf: str = "",
        max_packet_size: int | None = MAX_PACKET_SIZE,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            msg = "mosquitto is not installed: apt-get install mosquitto, or pass --broker"
            raise CimEdgeError(msg)
        self.binary = binary
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cimedge-mosq-"))
        self.extra_conf = extra_conf
        self.max_packet_size = max_packet_size
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Loopback only, for the demo and tests; production brokers use mutual TLS.
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 100000\n"
            + (f"max_packet_size {self.max_packet_size}\n" if self.max_packet_size else "")
            + "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n" + ("user root\n" if os.geteuid() == 0 else "") + self.extra_conf
            # As root, mosquitto drops to user "mosquitto", which cannot write the
            # persistence file into our work dir: stay the user who started it.
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and return once it accepts TCP connections."""
        conf = self._write_conf()
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / "mosquitto.log").read_text(errors="replace")[-400:]
                raise CimEdgeError(f"mosquitto exited at start on port {self.port}: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise CimEdgeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL mosquitto, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessBroker:
    """The demo's fallback when mosquitto is not installed: amqtt in this process.

    amqtt speaks MQTT 3.1.1 only (no shared subscriptions, no session properties), so the
    gateway and the receiver run with ``mqtt_version = "3.1.1"`` against it. It is for
    trying the demo on a machine without mosquitto, not for production.
    """

    mqtt_version = "3.1.1"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @staticmethod
    def available() -> bool:
        import importlib.util
        return importlib.util.find_spec("amqtt") is not None

    async def start(self) -> None:
        from amqtt.broker import Broker  # optional: pip install 'cimedge[demo]'

        self._broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            # loopback only, for the demo; the gateway's batches are signed regardless
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        })
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
