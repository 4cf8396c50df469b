"""A small synchronous MQTT 5 client for broker tests: every call waits for the broker's answer."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from cimedge.provisioning import ca, certs


def device_cert(ca_dir: Path, out: Path, dev: str) -> tuple[Path, Path]:
    """A gateway's TLS key and certificate (CN = dev), as `cimedge provision --ca-dir` makes."""
    key = certs.new_key()
    certs.write_private(out / f"{dev}.key", certs.key_pem(key))
    (out / f"{dev}.csr").write_bytes(certs.csr_for(key, dev, "pump_station"))
    ca.sign_csr(ca_dir, out / f"{dev}.csr", out / f"{dev}.crt")
    return out / f"{dev}.crt", out / f"{dev}.key"


class Client:
    """paho in its own thread; publish/subscribe return the broker's reason codes."""

    def __init__(self, port: int, client_id: str, *, ca_file: Path | None = None,
                 cert: tuple[Path, Path] | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        if cert is not None:
            self.c.tls_set(ca_certs=str(ca_file), certfile=str(cert[0]), keyfile=str(cert[1]),
                           cert_reqs=ssl.CERT_REQUIRED)
        self.answers: dict[object, object] = {}
        self.got: list[tuple[str, bytes]] = []
        self.disconnects: list[str] = []
        self._cv = threading.Condition()
        self.c.on_connect = lambda c, u, f, rc, p: self._answer("connect", str(rc))
        self.c.on_publish = lambda c, u, mid, rc, p: self._answer(mid, str(rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._answer(mid, [str(r) for r in rcs])
        self.c.on_message = lambda c, u, m: self._answer(None, (m.topic, bytes(m.payload)))
        self.c.on_disconnect = lambda c, u, f, rc, p: self._answer("disconnect", str(rc))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.connack = self.wait("connect")

    def _answer(self, key: object, value: object) -> None:
        with self._cv:
            if key is None:
                self.got.append(value)  # type: ignore[arg-type]
            elif key == "disconnect":
                self.disconnects.append(str(value))
            else:
                self.answers[key] = value
            self._cv.notify_all()

    def wait(self, key: object, timeout: float = 10.0) -> object:
        with self._cv:
            if not self._cv.wait_for(lambda: key in self.answers, timeout):
                raise AssertionError(f"no answer from the broker for {key!r}")
            return self.answers.pop(key)

    def wait_message(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: (topic, payload) in self.got, timeout):
                raise AssertionError(f"{topic} {payload!r} never arrived; got {self.got}")

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> str:
        """The PUBACK reason: "Success", "No matching subscribers", "Not authorized", ..."""
        return str(self.wait(self.c.publish(topic, payload, qos=1).mid, timeout))

    def subscribe(self, topic: str) -> list[str]:
        _, mid = self.c.subscribe(topic, qos=1)
        return self.wait(mid)  # type: ignore[return-value]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
