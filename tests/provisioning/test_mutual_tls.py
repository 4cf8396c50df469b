"""Mutual TLS end to end: `cimedge run` through a Mosquitto that wants client certificates.

The broker turns each certificate's CN into the MQTT user and its ACL lets user X use only
cim/v1/X/ (`cimedge ca mosquitto`). The receiver sits on the broker's plain loopback
listener, as the backend's side of this test.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import BACKEND_CN, DEV
from provkit import Backend, Cli, cimedge, status, wait_for

from cimedge.provisioning import ca, certs
from cimedge.provisioning.mqttprobe import ProbeError, probe

OTHER = "ps-other"


def client_for(tls_broker, tmp_path, dev: str) -> mqtt.Client:
    """A paho client with a certificate for ``dev`` from the broker's CA."""
    key = certs.new_key()
    certs.write_private(tmp_path / f"{dev}.key", certs.key_pem(key))
    (tmp_path / f"{dev}.csr").write_bytes(certs.csr_for(key, dev, "pump_station"))
    ca.sign_csr(tls_broker.ca_dir, tmp_path / f"{dev}.csr", tmp_path / f"{dev}.crt")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{dev}",
                    protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(tls_broker.ca_dir / "ca.pem"), certfile=str(tmp_path / f"{dev}.crt"),
              keyfile=str(tmp_path / f"{dev}.key"))
    return c


@pytest.fixture
def running(gw, tmp_path, tls_broker, ingest_key):
    backend = Backend(tmp_path, tls_broker.url, gw / "enrollment.json", ingest_key=ingest_key)
    gateway = Cli(tmp_path / "gateway.log", "run", "--config", gw / "site.toml")
    try:
        yield backend, gateway
    finally:
        gateway.stop()
        backend.proc.stop()


def test_gateway_delivers_through_mutual_tls_and_a_foreign_device_is_refused(
        running, gw, tmp_path, tls_broker):
    backend, gateway = running
    wait_for(lambda: backend.stats(DEV).get("last_seq", 0) >= 2, timeout=30,
             what="batches stored by the receiver through the TLS listener")
    st = wait_for(lambda: (s := status(gw))["running"] and s["daemon"]["connected"] and s,
                  what="status.json (written every second) to show the link up")
    assert st["daemon"]["broker"] == tls_broker.tls_url
    assert backend.stats(DEV)["rejects"] == {}

    # doctor beside the running gateway: devices and serial lines from its status, not polled
    out = cimedge("doctor", "--state-dir", gw, "--timeout", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    pid = st["daemon"]["pid"]
    assert f"PASS  device m1        answers (the running gateway, pid {pid}, polls it)" in \
        out.stdout.splitlines()

    # Another device's certificate: publishing on ps-0042's topics is refused by the ACL
    # (PUBACK "Not authorized"), and subscribing there delivers nothing.
    other = client_for(tls_broker, tmp_path, OTHER)
    acks: dict[int, str] = {}
    got: list[str] = []
    done = threading.Event()
    other.on_publish = lambda c, u, mid, rc, p: (acks.__setitem__(mid, str(rc)), done.set())
    other.on_message = lambda c, u, msg: got.append(msg.topic)
    other.connect("127.0.0.1", tls_broker.tls_port)
    other.loop_start()
    try:
        sub = other.subscribe(f"cim/v1/{DEV}/#", qos=1)
        assert sub[0] == mqtt.MQTT_ERR_SUCCESS
        info = other.publish(f"cim/v1/{DEV}/batch", b"forged", qos=1)
        assert done.wait(5)
        assert acks[info.mid] == "Not authorized"
        done.clear()
        own = other.publish(f"cim/v1/{OTHER}/status", b"\xa0", qos=1)  # its own prefix: allowed
        assert done.wait(5)
        assert acks[own.mid] in ("Success", "No matching subscribers")
        seq = backend.stats(DEV)["last_seq"]
        wait_for(lambda: backend.stats(DEV)["last_seq"] >= seq + 2, timeout=20,
                 what="more batches from the gateway while the other device listens")
    finally:
        other.loop_stop()
        other.disconnect()
    assert [t for t in got if t.startswith(f"cim/v1/{DEV}/")] == []
    assert backend.stats(DEV)["rejects"] == {}  # the forged batch never reached the receiver


def test_a_client_without_a_certificate_is_refused(tls_broker):
    context = ssl.create_default_context(cafile=str(tls_broker.ca_dir / "ca.pem"))
    with pytest.raises(ProbeError) as e:
        probe("127.0.0.1", tls_broker.tls_port, tls=context, client_id="anonymous",
              timeout=3)
    assert e.value.kind == "tls_refused"  # an alert or a closed socket, as timing has it
    assert str(e.value).startswith("the broker refused this gateway's certificate (")


def certificate(tls_broker, tmp_path, cn: str) -> tuple[Path, Path]:  # noqa: ANN001
    """A backend client key (0600) and certificate with this CN (`cimedge ca client`)."""
    crt = ca.client_cert(tls_broker.ca_dir, cn, tmp_path)
    return crt, tmp_path / f"{cn}.key"


def test_the_receiver_ingests_through_mutual_tls(gw, tmp_path, tls_broker,  # noqa: ANN001
                                                ingest_key) -> None:
    # Gateway and receiver both on the TLS listener; the receiver's certificate CN is the
    # ACL's backend user, allowed every device's topics.
    crt, key = certificate(tls_broker, tmp_path, BACKEND_CN)
    backend = Backend(tmp_path, tls_broker.tls_url, gw / "enrollment.json", ingest_key=ingest_key,
                      options=(
        "--ca-file", tls_broker.ca_dir / "ca.pem", "--cert-file", crt, "--key-file", key))
    gateway = Cli(tmp_path / "gateway.log", "run", "--config", gw / "site.toml")
    try:
        wait_for(lambda: backend.stats(DEV).get("last_seq", 0) >= 2, timeout=30,
                 what="batches stored by a receiver on the TLS listener")
        assert backend.stats(DEV)["rejects"] == {}
    finally:
        gateway.stop()
        backend.proc.stop()


def test_receiver_tls_files_are_checked_first(tmp_path, tls_broker) -> None:  # noqa: ANN001
    out = cimedge("receiver", "run", "--broker", tls_broker.tls_url, "--db",
                  tmp_path / "rx.sqlite", "--ca-file", tmp_path / "missing.pem")
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (f"cimedge: cannot load the TLS files ({tmp_path / 'missing.pem'}): "
                          "No such file or directory\n")
    assert not (tmp_path / "registry.sqlite").exists()  # nothing opened before the check
