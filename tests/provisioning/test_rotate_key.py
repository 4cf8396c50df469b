"""Key rotation: a new key, enrolled beside the old, then the gateway switches at an exact seq.

The end-to-end test watches every batch on the wire: each one below the switch seq is signed
with the old kid, each one from it on with the new kid, and the receiver refuses none, before
or after operations retire the old key at that seq.
"""

from __future__ import annotations

import json
import os
import stat
import time

import cbor2
import paho.mqtt.client as mqtt
import pytest
from conftest import DEV
from provkit import Backend, Cli, cimedge, wait_for


def kid_and_seq(payload: bytes) -> tuple[str, int]:
    tag = cbor2.loads(payload)
    assert tag.tag == 18
    protected, _, body, _ = tag.value
    return cbor2.loads(protected)[4].hex(), cbor2.loads(body)["seq"]


@pytest.fixture
def running(gw, tmp_path, tls_broker, ingest_key):
    backend = Backend(tmp_path, tls_broker.url, gw / "enrollment.json", ingest_key=ingest_key)
    gateway = Cli(tmp_path / "gateway.log", "run", "--config", gw / "site.toml")
    try:
        yield backend, gateway
    finally:
        gateway.stop()
        backend.proc.stop()


def test_rotation_switches_at_an_exact_seq_and_nothing_is_refused(running, gw, tls_broker):
    backend, gateway = running
    old_kid = json.loads((gw / "enrollment.json").read_text())["kid"]
    wire: list[tuple[str, int]] = []
    tap = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tap", protocol=mqtt.MQTTv5)
    tap.on_message = lambda c, u, m: wire.append(kid_and_seq(m.payload))
    tap.connect("127.0.0.1", tls_broker.mosquitto.port)
    tap.subscribe([(f"cim/v1/{DEV}/batch", 1), (f"cim/v1/{DEV}/event", 1)])
    tap.loop_start()
    try:
        wait_for(lambda: backend.stats(DEV).get("last_seq", 0) >= 2, timeout=30,
                 what="the first batches")

        out = cimedge("rotate-key", "--state-dir", gw, "--json")
        assert out.returncode == 0, out.stderr
        pending = json.loads(out.stdout)
        assert pending["current_kid"] == old_kid
        new_kid = pending["pending_kid"]
        assert stat.S_IMODE((gw / "device.key.next").stat().st_mode) == 0o600

        out = cimedge("rotate-key", "--confirm", "--state-dir", gw, "--registry",
                      backend.registry)
        assert out.returncode == 1
        assert out.stderr == (f"cimedge: the registry {backend.registry} does not list kid "
                              f"{new_kid} as an active key of {DEV} (unknown): enroll it first "
                              "with `cimedge registry add enrollment.next.json`\n")
        assert (gw / "device.key.next").exists()  # nothing changed

        backend.enroll(gw / "enrollment.next.json")  # two valid keys from here on
        out = cimedge("rotate-key", "--confirm", "--state-dir", gw, "--registry",
                      backend.registry, "--json")
        assert out.returncode == 0, out.stderr + gateway.output()
        done = json.loads(out.stdout)
        assert (done["kid"], done["old_kid"], done["gateway"]) == (new_kid, old_kid, "running")
        since = done["since_seq"]
        assert json.loads((gw / "enrollment.json").read_text())["kid"] == new_kid
        assert json.loads((gw / f"enrollment.{old_kid}.json").read_text())["kid"] == old_kid
        assert not (gw / "device.key.next").exists()
        assert json.loads((gw / "signing.json").read_text())["since_seq"] == since
        assert f"signing     kid {new_kid} since seq {since}" in \
            cimedge("status", "--state-dir", gw).stdout.splitlines()

        backend.enroll(gw / "enrollment.json", rotate_after=since - 1)
        wait_for(lambda: backend.stats(DEV).get("last_seq", 0) >= since + 2, timeout=30,
                 what="batches signed with the new key")
    finally:
        tap.loop_stop()
        tap.disconnect()
    assert {kid for kid, seq in wire if seq < since} == {old_kid}
    assert {kid for kid, seq in wire if seq >= since} == {new_kid}
    stats = backend.stats(DEV)
    assert stats["rejects"] == {} and stats["missing"] == 0, stats
    keys = json.loads(cimedge("registry", "list", "--registry", backend.registry,
                              "--json").stdout)
    assert {k["kid"]: (k["status"], k["retired_after_seq"]) for k in keys} == {
        old_kid: ("retired", since - 1), new_kid: ("active", None)}


def test_confirm_with_the_gateway_stopped_takes_the_next_seq_from_the_buffer(gw):
    assert cimedge("rotate-key", "--state-dir", gw).returncode == 0
    out = cimedge("rotate-key", "--confirm", "--state-dir", gw)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.endswith("from its next start, from seq 1; the old key "
                          f"{first.split('the old key ')[1].split(' ')[0]} is deleted")
    assert second == f"operations: cimedge registry rotate {gw}/enrollment.json --after-seq 0"


def test_refusals(gw):
    out = cimedge("rotate-key", "--confirm", "--state-dir", gw)
    assert (out.returncode, out.stderr) == (1, "cimedge: no rotation is pending: run "
                                               "`cimedge rotate-key` first\n")
    assert cimedge("rotate-key", "--state-dir", gw).returncode == 0
    kid = json.loads((gw / "enrollment.next.json").read_text())["kid"]
    out = cimedge("rotate-key", "--state-dir", gw)
    assert (out.returncode, out.stderr) == (1, f"cimedge: a rotation to kid {kid} is pending: "
                                               "finish it with `cimedge rotate-key --confirm`, "
                                               "or start over with --force\n")
    assert cimedge("rotate-key", "--state-dir", gw, "--force").returncode == 0
    # A gateway that runs without the key switch (no signing.json) is never signalled.
    (gw / "status.json").write_text(json.dumps({"pid": os.getpid(), "updated": time.time()}))
    out = cimedge("rotate-key", "--confirm", "--state-dir", gw)
    assert (out.returncode, out.stderr) == (1, f"cimedge: the running gateway (pid {os.getpid()})"
                                               " cannot switch keys while running: stop it, run "
                                               "--confirm, start it\n")
    assert (gw / "device.key.next").exists()


@pytest.fixture
def fake_daemon(gw):
    """This test process plays a running gateway: status.json and signing.json name its pid,
    and its SIGHUP handler answers the way the test asks."""
    import signal

    old_kid = json.loads((gw / "enrollment.json").read_text())["kid"]
    signing = {"pid": os.getpid(), "kid": old_kid, "since_seq": None, "reload": "SIGHUP",
               "error": ""}
    (gw / "status.json").write_text(json.dumps({"pid": os.getpid(), "updated": time.time()}))
    (gw / "signing.json").write_text(json.dumps(signing))
    answer: dict = {}

    def on_hup(*_: object) -> None:
        (gw / "signing.new").write_text(json.dumps({**signing, **answer}))
        os.replace(gw / "signing.new", gw / "signing.json")  # as the daemon writes it
    previous = signal.signal(signal.SIGHUP, on_hup)
    try:
        yield answer
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_confirm_reports_a_gateway_that_cannot_load_the_new_key(gw, fake_daemon):
    fake_daemon["error"] = f"{gw}/device.key is readable by others (mode 644)"
    assert cimedge("rotate-key", "--state-dir", gw).returncode == 0
    out = cimedge("rotate-key", "--confirm", "--state-dir", gw, "--timeout", "5")
    assert (out.returncode, out.stderr) == (
        1, f"cimedge: the gateway could not load the new key: {gw}/device.key is readable by "
           "others (mode 644)\n")


def test_confirm_gives_up_on_a_gateway_that_does_not_switch(gw, fake_daemon):
    assert cimedge("rotate-key", "--state-dir", gw).returncode == 0
    kid = json.loads((gw / "enrollment.next.json").read_text())["kid"]
    out = cimedge("rotate-key", "--confirm", "--state-dir", gw, "--timeout", "1")
    assert (out.returncode, out.stderr) == (
        1, f"cimedge: the gateway (pid {os.getpid()}) did not switch to kid {kid} within 1 s; "
           "it loads the new device.key when restarted\n")
