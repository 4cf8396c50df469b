"""provisioning/README.md's mutual-TLS commands, run as written against the real Mosquitto.

`mosquitto -c` on the config `cimedge ca mosquitto` wrote used to fail as root ("Unable to
load server key file": Mosquitto drops to its own user before it reads the 0600 key). Here
the README's block runs line by line, in a fresh folder, on a free port instead of 8883,
and the receiver must end up subscribed through the broker with its own certificate.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqttkit import Client
from provkit import ROOT, wait_for

from cimedge.tools.broker import free_port, mosquitto_binary

SECTION = "## A test CA, and mutual TLS on one machine"


def documented_commands() -> list[str]:
    text = (ROOT / "provisioning" / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text[text.index(SECTION):], re.S)
    assert block is not None
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder the broker's user can enter (pytest's tmp_path is 0700 under root's)."""
    d = Path(tempfile.mkdtemp(prefix="cimedge-tls-docs-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_documented_mutual_tls_commands_work(folder: Path) -> None:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (.ci/run installs it with apt-get)")
    commands = documented_commands()
    assert [c.split()[:3] for c in commands] == [
        ["cimedge", "ca", "init"], ["cimedge", "ca", "mosquitto"], ["mosquitto", "-c",
                                                                    "broker/mosquitto-tls.conf"],
        ["cimedge", "ca", "client"], ["cimedge", "backend", "keygen"],
        ["cimedge", "provision", "--site-type"], ["cimedge", "registry", "add"],
        ["cimedge", "receiver", "run"]]
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    running: list[subprocess.Popen[bytes]] = []
    try:
        for line in commands:
            argv = [a.replace("8883", port) for a in shlex.split(line)]
            if argv[0] == "cimedge":
                argv = [sys.executable, "-m", "cimedge", *argv[1:]]
            else:
                argv[0] = binary
            log = open(folder / f"{len(running)}-{argv[1] if argv[0] == binary else argv[3]}.log",
                       "wb")
            if argv[0] == binary or argv[3:5] == ["receiver", "run"]:  # long-running
                proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                running.append(proc)
                if argv[0] == binary:
                    wait_for(lambda: b" running" in Path(log.name).read_bytes()
                             or proc.poll() is not None, what="mosquitto to start")
                    assert proc.poll() is None, Path(log.name).read_text()
                else:
                    wait_for(lambda: b" ready: " in Path(log.name).read_bytes()
                             or proc.poll() is not None, timeout=30,
                             what="the receiver to subscribe through mutual TLS")
                    out = Path(log.name).read_text()
                    assert proc.poll() is None and "v2 acks signed by ingest key" in out, out
            else:
                done = subprocess.run(argv, cwd=folder, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, check=False, timeout=60)
                assert done.returncode == 0, Path(log.name).read_text()
            log.close()
        # the gateway's certificate: its own status goes through, an ack of its own does not
        gw = folder / "gw"
        device = Client(int(port), "gw-ps-0042", ca_file=gw / "ca.pem",
                        cert=(gw / "tls.crt", gw / "tls.key"))
        try:
            assert device.connack == "Success"
            assert device.publish("cim/v1/ps-0042/status", b"\xa0") in ("Success",
                                                                        "No matching subscribers")
            assert device.publish("cim/v1/ps-0042/ack", b"\xa0") == "Not authorized"
        finally:
            device.close()
        key = folder / "broker" / "server.key"
        assert (key.stat().st_mode & 0o777) == 0o600
        if os.geteuid() == 0:  # the case that failed: the broker dropped to its own user
            import pwd

            assert pwd.getpwuid(key.stat().st_uid).pw_name == "mosquitto"
    finally:
        for proc in reversed(running):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
