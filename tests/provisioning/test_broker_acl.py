"""The broker config `cimedge ca mosquitto` writes, against the real Mosquitto.

A device publishes only its own batch, event and status and reads only its own ack and cmd;
the backend the reverse (so a device cannot ack its own batches, and the backend cannot
forge one). The client id is the certificate's CN, so another device's certificate cannot
take over a gateway's session. Packets past the contract's size are refused at the broker.
(Mosquitto grants every SUBSCRIBE and applies "read" when it delivers: a topic a client may
not read stays silent to it, which is what these tests check.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import BACKEND_CN, DEV
from mqttkit import Client, device_cert
from provkit import Backend, Cli, status, wait_for

from cimedge.provisioning import ca

OTHER = "ps-other"
OK = ("Success", "No matching subscribers")


@pytest.fixture
def clients(tls_broker, tmp_path):
    """A device, another device and a backend client, each on the TLS listener."""
    ca_file = tls_broker.ca_dir / "ca.pem"
    made: list[Client] = []

    def make(name: str, client_id: str | None = None) -> Client:
        if "." in name:  # a backend name
            ca.client_cert(tls_broker.ca_dir, name, tmp_path)
            cert = (tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        else:
            cert = device_cert(tls_broker.ca_dir, tmp_path, name)
        c = Client(tls_broker.tls_port, client_id or f"test-{name}", ca_file=ca_file, cert=cert)
        assert c.connack == "Success"
        made.append(c)
        return c
    try:
        yield make
    finally:
        for c in made:
            c.close()


def test_a_device_publishes_only_its_batch_event_and_status(clients) -> None:
    dev = clients(DEV)
    for kind in ("batch", "event", "status"):
        assert dev.publish(f"cim/v1/{DEV}/{kind}", b"\xa0") in OK, kind
    for kind in ("ack", "cmd"):  # an ack it sent itself would erase its own buffer
        assert dev.publish(f"cim/v1/{DEV}/{kind}", b"\xa0") == "Not authorized", kind
    for kind in ("batch", "ack"):
        assert dev.publish(f"cim/v1/{OTHER}/{kind}", b"\xa0") == "Not authorized", kind


def test_a_device_reads_only_its_ack_and_cmd(clients) -> None:
    dev, other, backend = clients(DEV), clients(OTHER), clients(BACKEND_CN)
    for topic in (f"cim/v1/{DEV}/#", f"cim/v1/{OTHER}/#", "cim/v1/#"):
        dev.subscribe(topic)
    assert other.publish(f"cim/v1/{OTHER}/batch", b"other's batch") in OK
    assert dev.publish(f"cim/v1/{DEV}/batch", b"own batch") in OK  # it may not read it back
    assert backend.publish(f"cim/v1/{OTHER}/ack", b"other's ack") in OK
    assert backend.publish(f"cim/v1/{DEV}/cmd", b"own cmd") in OK
    assert backend.publish(f"cim/v1/{DEV}/ack", b"own ack") in OK
    dev.wait_message(f"cim/v1/{DEV}/ack", b"own ack")  # published last: the rest came first
    assert sorted(set(dev.got)) == [(f"cim/v1/{DEV}/ack", b"own ack"),
                                    (f"cim/v1/{DEV}/cmd", b"own cmd")]


def test_the_backend_sends_acks_and_commands_and_reads_the_rest(clients) -> None:
    dev, backend = clients(DEV), clients(BACKEND_CN)
    for kind in ("batch", "event", "status"):  # it cannot forge a gateway's message
        assert backend.publish(f"cim/v1/{DEV}/{kind}", b"\xa0") == "Not authorized", kind
    for kind in ("ack", "cmd"):
        assert backend.publish(f"cim/v1/{DEV}/{kind}", b"\xa0") in OK, kind
    backend.subscribe("$share/cim-ingest/cim/v1/+/batch")
    backend.subscribe("cim/v1/+/status")
    backend.subscribe("cim/v1/+/ack")
    backend.subscribe("cim/v1/+/cmd")
    assert backend.publish(f"cim/v1/{DEV}/ack", b"an ack") in OK
    assert backend.publish(f"cim/v1/{DEV}/cmd", b"a cmd") in OK
    assert dev.publish(f"cim/v1/{DEV}/status", b"status") in OK
    assert dev.publish(f"cim/v1/{DEV}/batch", b"batch") in OK
    backend.wait_message(f"cim/v1/{DEV}/batch", b"batch")
    assert sorted(set(backend.got)) == [(f"cim/v1/{DEV}/batch", b"batch"),
                                        (f"cim/v1/{DEV}/status", b"status")]


def test_packets_past_the_contract_size_are_refused_at_the_broker(clients) -> None:
    dev, backend = clients(DEV), clients(BACKEND_CN)
    backend.subscribe("cim/v1/+/batch")
    big = dev.c.publish(f"cim/v1/{DEV}/batch", b"x" * (2 << 20), qos=1)
    with dev._cv:  # noqa: SLF001 - the broker closes the connection instead of a PUBACK
        assert dev._cv.wait_for(lambda: dev.disconnects, 10)  # noqa: SLF001
    assert big.mid not in dev.answers
    sender = clients(DEV, "test-again")
    assert sender.publish(f"cim/v1/{DEV}/batch", b"x" * (1 << 20)) in OK  # 1 MiB still goes
    backend.wait_message(f"cim/v1/{DEV}/batch", b"x" * (1 << 20))
    assert [len(p) for _, p in backend.got] == [1 << 20]


def test_another_certificate_cannot_take_over_a_gateways_client_id(
        gw, tmp_path, tls_broker, clients, ingest_key) -> None:
    """The real gateway on mutual TLS: a client with another device's certificate and the
    gateway's client id connects (five times) and the gateway is not disconnected; with
    the gateway's own certificate the same connect does take the session over, so the test
    sees a takeover when there is one."""
    backend = Backend(tmp_path, tls_broker.url, gw / "enrollment.json", ingest_key=ingest_key)
    gateway = Cli(tmp_path / "gateway.log", "run", "--config", gw / "site.toml")
    try:
        st = wait_for(lambda: (s := status(gw))["running"] and s["daemon"]["connected"] and s,
                      what="the gateway to connect")
        assert st["daemon"]["connects"] == 1
        for _ in range(5):
            intruder = clients(OTHER, f"gw-{DEV}")  # the gateway's own client id
            assert intruder.publish(f"cim/v1/{OTHER}/status", b"\xa0") in OK
            intruder.close()
        attacked = time.time()
        seq = backend.stats(DEV).get("last_seq", 0)
        wait_for(lambda: backend.stats(DEV).get("last_seq", 0) >= seq + 2, timeout=20,
                 what="batches delivered after the intrusions")
        st = wait_for(lambda: (s := status(gw))["daemon"]["updated"] > attacked + 1 and s,
                      what="a status written after the intrusions")
        assert (st["daemon"]["connects"], st["daemon"]["last_error"]) == (1, "")

        # the same CN is the same client: this one does take the session over
        crt, key = Path(gw / "tls.crt"), Path(gw / "tls.key")
        same = Client(tls_broker.tls_port, "whatever", ca_file=tls_broker.ca_dir / "ca.pem",
                      cert=(crt, key))
        try:
            wait_for(lambda: status(gw)["daemon"]["connects"] >= 2, timeout=30,
                     what="the gateway to be taken over and reconnect")
        finally:
            same.close()
    finally:
        gateway.stop()
        backend.proc.stop()
