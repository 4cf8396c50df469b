"""`cimedge doctor` on a real installation, then with one thing broken at a time.

Every failure path gets its own test: the FAIL line, its fix, the closing "cimedge: N of M
checks failed" sentence and exit code 1. Devices are the real simulators (Modbus TCP and
an RTU line on a pseudo-terminal), the broker a real Mosquitto with mutual TLS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEV
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from provkit import NOBODY, TEMPLATE, cimedge, rtu_bus

from cimedge.edge.wallclock import FLOOR_NS
from cimedge.provisioning import ca, certs, tomledit
from cimedge.tools.broker import Mosquitto, free_port

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, setpriv)")


def doctor(gw: Path, *extra: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return cimedge("doctor", "--state-dir", gw, "--timeout", "0.5", *extra, **kw)  # type: ignore[arg-type]


def lines(out: subprocess.CompletedProcess[str], check: str) -> list[str]:
    """The result line(s) of ``check`` and their fix lines."""
    got, rows = [], out.stdout.splitlines()
    for i, line in enumerate(rows):
        if line[6:].startswith(check + " ") or line[6:] == check:
            got.append(line)
            if i + 1 < len(rows) and rows[i + 1].startswith("      fix: "):
                got.append(rows[i + 1])
    return got


def failed(out: subprocess.CompletedProcess[str], *checks: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    total = len({ln[6:23].strip() for ln in out.stdout.splitlines()[:-1]
                 if ln[:4] in ("PASS", "FAIL", "WARN", "SKIP")})
    assert out.stderr == f"cimedge: {len(checks)} of {total} checks failed: " \
                         f"{', '.join(checks)}\n", out.stdout + out.stderr
    for c in checks:
        assert any(ln.startswith(f"FAIL  {c}") for ln in out.stdout.splitlines()), out.stdout


def edit(gw: Path, table: str, key: str, value: object) -> None:
    site = gw / "site.toml"
    site.write_text(tomledit.set_key(site.read_text(), table, key, value))


def test_a_good_installation_passes_every_check(gw):
    out = doctor(gw)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""
    rows = out.stdout.splitlines()
    assert [r[:22] for r in rows if r[:4] == "PASS"] == [
        "PASS  config          ", "PASS  key             ", "PASS  tls             ",
        "PASS  backend         ",
        "PASS  device ps1      ", "PASS  device m1       ", "PASS  device m2       ",
        f"PASS  serial {rows[7][13:22]}", "PASS  broker          ", "PASS  clock           ",
        "PASS  disk            ", "PASS  buffer          "]
    assert "/dev/pts/" in rows[7]
    assert "accepts this gateway (mutual TLS" in out.stdout
    assert rows[-1].startswith("0 failed, ")


def test_json_output_for_scripts_and_a_progress_line_on_a_terminal(gw):
    out = doctor(gw, "--json", env={"CIMEDGE_PROGRESS": "1"})  # as if stderr were a terminal
    assert out.returncode == 0, out.stdout
    # (text mode reads each carriage return as a newline)
    assert "\ndoctor [########............] 4/9 " in out.stderr
    assert "\ndoctor [####################] 9/9 " in out.stderr
    assert out.stderr.endswith("\n" + " " * 100 + "\n")  # cleared before the report
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert {c["check"] for c in report["checks"]} >= {"config", "key", "tls", "broker", "clock",
                                                      "disk", "buffer", "device ps1"}
    assert set(report["checks"][0]) == {"check", "status", "detail", "fix"}


# -- config -----------------------------------------------------------------------------------
def test_missing_config(tmp_path):
    out = doctor(tmp_path / "nothing-here")
    failed(out, "config", "key")
    assert lines(out, "config")[0] == (f"FAIL  config           {tmp_path}/nothing-here/site.toml: "
                                       "cannot read: No such file or directory")
    assert lines(out, "config")[1].startswith("      fix: run: cimedge provision --site-type")
    assert "SKIP  broker           needs a valid config" in out.stdout


def test_invalid_config_names_file_key_and_line(gw):
    text = (gw / "site.toml").read_text().replace('unit = 2\n', 'unit = 2\nspeed = 9600\n')
    (gw / "site.toml").write_text(text)
    line = text.splitlines().index("speed = 9600") + 1
    out = doctor(gw)
    failed(out, "config")
    assert lines(out, "config")[0] == (f"FAIL  config           {gw}/site.toml:{line}: "
                                       "devices.m2.speed: unknown key")


# -- key --------------------------------------------------------------------------------------
def test_missing_key(gw):
    (gw / "device.key").unlink()
    out = doctor(gw)
    failed(out, "key")
    assert lines(out, "key") == [f"FAIL  key              no device key at {gw}/device.key",
                                 f"      fix: run: cimedge provision ... --state-dir {gw} (a new "
                                 "gateway), or restore device.key from its backup"]


def test_key_readable_by_others(gw):
    (gw / "device.key").chmod(0o644)
    out = doctor(gw)
    failed(out, "key")
    assert lines(out, "key") == [f"FAIL  key              {gw}/device.key is readable by others "
                                 "(mode 644)", f"      fix: run: chmod 600 {gw}/device.key"]


def test_key_that_is_not_an_ed25519_key(gw):
    (gw / "device.key").write_bytes((gw / "tls.key").read_bytes())  # an EC key, mode 600
    out = doctor(gw)
    failed(out, "key")
    assert lines(out, "key")[0] == f"FAIL  key              {gw}/device.key is not an Ed25519 key"


def test_key_that_does_not_match_the_enrollment_record(gw):
    record = json.loads((gw / "enrollment.json").read_text())
    record["kid"] = "00" * 8
    (gw / "enrollment.json").write_text(json.dumps(record))
    out = doctor(gw)
    failed(out, "key")
    assert "does not match enrollment.json (kid 0000000000000000): the registry would refuse " \
           "its batches" in lines(out, "key")[0]


# -- tls --------------------------------------------------------------------------------------
def test_certificate_not_yet_signed(gw):
    (gw / "tls.crt").unlink()
    out = doctor(gw)
    failed(out, "tls", "broker")
    assert lines(out, "tls") == [
        f"FAIL  tls              [sync] cert_file {gw}/tls.crt does not exist",
        f"      fix: have tls.csr signed by the city CA and save it here (test CA: cimedge ca "
        f"sign {gw}/tls.csr --ca-dir DIR)"]


def test_tls_key_readable_by_others(gw):
    (gw / "tls.key").chmod(0o640)
    out = doctor(gw)
    failed(out, "tls")  # the broker still takes it: the key's mode is ours to keep
    assert lines(out, "tls")[1] == f"      fix: run: chmod 600 {gw}/tls.key"


def test_certificate_of_another_device(gw, ca_dir):
    key = certs.new_key()
    csr = gw / "other.csr"
    csr.write_bytes(certs.csr_for(key, "ps-9999", "pump_station"))
    ca.sign_csr(ca_dir, csr, gw / "tls.crt")
    certs.write_private(gw / "tls.key", certs.key_pem(key))
    out = doctor(gw)
    failed(out, "tls")
    assert lines(out, "tls")[0] == ("FAIL  tls              tls.crt is for 'ps-9999', not "
                                    f"'{DEV}': the broker's ACL would refuse cim/v1/{DEV}/")


def test_certificate_and_key_that_do_not_belong_together(gw):
    certs.write_private(gw / "tls.key", certs.key_pem(certs.new_key()))
    out = doctor(gw)
    failed(out, "tls", "broker")
    assert lines(out, "tls")[0] == ("FAIL  tls              tls.crt is not the certificate of "
                                    "tls.key")


def test_expired_certificate(gw, ca_dir):
    ca_key, ca_cert = ca.load(ca_dir)
    old = x509.load_pem_x509_certificate((gw / "tls.crt").read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca_cert.subject)
            .public_key(old.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now - dt.timedelta(days=35)).sign(ca_key, hashes.SHA256()))
    (gw / "tls.crt").write_bytes(certs.cert_pem(cert))
    out = doctor(gw)
    failed(out, "tls", "broker")
    expired = (now - dt.timedelta(days=35)).strftime("%Y-%m-%d")
    assert lines(out, "tls") == [f"FAIL  tls              tls.crt expired on {expired}",
                                 "      fix: renew it: have tls.csr signed again (and check the "
                                 "clock)"]
    assert lines(out, "broker")[0].startswith("FAIL  broker           the broker refused this "
                                              "gateway's certificate (")


# -- serial ports and devices -----------------------------------------------------------------
def test_serial_port_that_does_not_exist(gw):
    text = (gw / "site.toml").read_text()
    port = tomledit.get(text, "devices.m1.port")
    (gw / "site.toml").write_text(text.replace(port, "/dev/ttyUSB-gone"))
    out = doctor(gw)
    failed(out, "device m1", "device m2", "serial /dev/ttyUSB-gone")
    assert lines(out, "serial /dev/ttyUSB-gone") == [
        "FAIL  serial /dev/ttyUSB-gone no such serial port /dev/ttyUSB-gone",
        "      fix: plug in the USB-RS-485 adapter; `ls /dev/serial/by-id/` names it; then set "
        "that path as the devices' port in the site config"]


def test_serial_port_where_nothing_answers(gw):
    bus, path = rtu_bus("7")  # a line with one unit, at an address nobody configured
    try:
        text = (gw / "site.toml").read_text()
        (gw / "site.toml").write_text(text.replace(tomledit.get(text, "devices.m1.port"), path))
        out = doctor(gw)
    finally:
        bus.stop()
    failed(out, "device m1", "device m2", f"serial {path}")
    assert lines(out, "device m1")[0].startswith(f"FAIL  device m1        no answer: m1 on {path} "
                                                 "unit 1: read input 3+1: ")
    assert lines(out, "device m1")[1] == (f"      fix: check that the device is powered and wired "
                                          f"to {path}, that its address is 1 and that it talks "
                                          "9600 baud N")
    assert lines(out, f"serial {path}") == [
        f"FAIL  serial {path} nothing answers on {path} (m1, m2 configured)",
        "      fix: check the A/B wiring and polarity, termination, that the devices are "
        "powered, and the baud rate and parity in the site config"]


@pytest.fixture
def as_nobody_gw(sims, tls_broker) -> Iterator[Path]:
    """A gateway provisioned by the unprivileged user nobody, in a dir nobody owns."""
    if os.geteuid() != 0:
        pytest.skip("switching to the user nobody needs root")
    home = Path(f"/tmp/cimedge-nobody-{uuid.uuid4().hex[:8]}")
    home.mkdir(mode=0o755)
    try:
        os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
        (home / "template.toml").write_text(TEMPLATE)
        out = cimedge("provision", "--site-type", "pump_station", "--device-id", DEV,
                      "--state-dir", home / "gw", "--broker", tls_broker.tls_url,
                      "--template", home / "template.toml", "--set", f"ps1_port={sims.pump_port}",
                      "--set", f"rtu_port={sims.rtu_port}", as_nobody=True)
        assert out.returncode == 0, out.stderr
        assert (home / "gw" / "device.key").stat().st_uid == NOBODY.pw_uid
        yield home / "gw"
    finally:
        shutil.rmtree(home)


def test_serial_port_this_user_may_not_open(as_nobody_gw, sims):
    # A technician's user that is not in the port's group (dialout, or tty for a PTY).
    out = doctor(as_nobody_gw, as_nobody=True)
    assert out.returncode == 1
    assert lines(out, f"serial {sims.rtu_port}") == [
        f"FAIL  serial {sims.rtu_port} this user may not open {sims.rtu_port}",
        "      fix: add the user to the port's group: sudo usermod -aG dialout $USER, then log "
        "in again"]
    assert lines(out, "config")[0].startswith("PASS  config")  # runs fine without root


def test_state_dir_this_user_cannot_write(as_nobody_gw, tmp_path):
    ro = Path(str(as_nobody_gw) + "-ro")
    ro.mkdir(mode=0o755)  # root's
    edit(as_nobody_gw, "store", "path", f"{ro}/buffer.sqlite")
    out = doctor(as_nobody_gw, as_nobody=True)
    assert out.returncode == 1
    assert lines(out, "disk") == [f"FAIL  disk             this user cannot write {ro}",
                                  f"      fix: run the gateway as the owner of {ro}, or: chown -R "
                                  f"$USER {ro}"]


def test_tcp_device_that_does_not_answer(gw):
    edit(gw, "devices.ps1", "port", free_port())
    out = doctor(gw)
    failed(out, "device ps1")
    assert lines(out, "device ps1")[0].startswith("FAIL  device ps1       no answer: ps1 at "
                                                  "127.0.0.1:")
    assert lines(out, "device ps1")[1].endswith("is reachable from the gateway (cable, IP "
                                                "settings) and that the unit id is 1")


def test_device_that_refuses_some_points(gw):
    with (gw / "site.toml").open("a") as f:  # a point beyond the unit's register map
        f.write('\n[devices.m1.points.bad]\ntable = "input"\naddress = 500\ndtype = "uint16"\n')
    out = doctor(gw)
    failed(out, "device m1")
    first, fix = lines(out, "device m1")
    assert first.startswith("FAIL  device m1        1 of 2 points failed (m1.bad): ")
    assert fix == ("      fix: check those points' addresses and types against the device's "
                   "register map")


# -- broker -----------------------------------------------------------------------------------
def test_broker_that_is_not_running(gw):
    edit(gw, "sync", "broker", f"mqtts://127.0.0.1:{free_port()}")
    out = doctor(gw)
    failed(out, "broker")
    port = tomledit.get((gw / "site.toml").read_text(), "sync.broker").rsplit(":", 1)[1]
    assert lines(out, "broker") == [
        f"FAIL  broker           127.0.0.1:{port} refused the connection",
        f"      fix: check the host and port in [sync] broker (mqtts://127.0.0.1:{port}) and "
        "that the broker runs"]


def test_broker_certificate_from_an_unknown_ca(gw, tmp_path):
    ca.init(tmp_path / "other-ca")
    shutil.copy(tmp_path / "other-ca" / "ca.pem", gw / "ca.pem")
    out = doctor(gw)
    failed(out, "broker")
    assert lines(out, "broker")[0] == ("FAIL  broker           the broker's certificate does not "
                                       "verify: self-signed certificate in certificate chain")
    assert lines(out, "broker")[1].startswith("      fix: set [sync] ca_file to the CA that "
                                              "signed the broker's certificate")


def test_client_certificate_the_broker_does_not_trust(gw, tmp_path):
    ca.init(tmp_path / "rogue-ca")
    ca.sign_csr(tmp_path / "rogue-ca", gw / "tls.csr", gw / "tls.crt")
    out = doctor(gw)
    failed(out, "broker")
    assert lines(out, "broker")[0].startswith("FAIL  broker           the broker refused this "
                                              "gateway's certificate (")
    assert lines(out, "broker")[1] == ("      fix: have tls.csr signed by the CA the broker trusts "
                                       "for clients and save it as [sync] cert_file")


def test_broker_that_refuses_the_credentials(gw, tmp_path, ca_dir):
    # The broker also wants a password; this gateway's password file holds a wrong one.
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), DEV, "right"], check=True,
                   capture_output=True)
    port = free_port()
    conf = ca.mosquitto_conf(ca_dir, tmp_path / "tls", port=port).replace(
        "use_identity_as_username true\n", "") + f"password_file {pw}\n"
    (tmp_path / "mosq").mkdir()
    with Mosquitto(workdir=tmp_path / "mosq", extra_conf=conf.replace(
            f"listener {port}", f"per_listener_settings false\nlistener {port}")):
        certs.write_private(gw / "password", b"wrong\n")
        edit(gw, "sync", "broker", f"mqtts://127.0.0.1:{port}")
        edit(gw, "sync", "username", DEV)
        edit(gw, "sync", "password_file", "password")
        out = doctor(gw)
    failed(out, "broker")
    assert lines(out, "broker")[0] in (
        "FAIL  broker           the broker refused the connection: not authorized",
        "FAIL  broker           the broker refused the connection: bad user name or password")


# -- clock, disk, buffer ------------------------------------------------------------------------
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (apt faketime)")
def test_clock_reset_to_2000(gw):
    out = doctor(gw, env={"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "@2000-01-01 00:00:00",
                          "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    assert out.returncode == 1
    assert lines(out, "clock") == [
        "FAIL  clock            the clock reads 2000-01-01 00:00 UTC, before 2025: the real-time "
        "clock was reset",
        "      fix: set the time: sudo timedatectl set-ntp true (or date -s); readings are "
        "stamped with it and TLS certificates are checked against it"]
    assert FLOOR_NS > 946684800 * 10**9


def test_clock_that_went_back(gw):
    later = time.time() + 3600
    os.utime(gw / "enrollment.json", (later, later))
    out = doctor(gw)
    failed(out, "clock")
    assert lines(out, "clock")[0].startswith("FAIL  clock            the clock went back: "
                                             "enrollment.json was written 3")


@root_only
def test_disk_nearly_full(gw, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", f"cim-{uuid.uuid4().hex[:6]}",
                    str(mnt)], check=True)
    try:
        edit(gw, "store", "path", f"{mnt}/buffer.sqlite")
        out = doctor(gw)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    failed(out, "disk")
    assert lines(out, "disk") == [
        f"FAIL  disk             only 4 MiB free on the file system of {mnt}",
        "      fix: free space there (old logs, a moved-aside buffer), or move the state dir to "
        "a bigger partition"]


def test_no_quota_is_a_warning_not_a_failure(gw):
    edit(gw, "store", "quota_bytes", 0)
    out = doctor(gw)
    assert out.returncode == 0, out.stdout
    assert lines(out, "disk")[1] == "WARN  disk             no [store] quota_bytes: a long " \
                                    "outage can fill the disk"


def test_damaged_buffer(gw):
    (gw / "buffer.sqlite").write_bytes(b"this is not a database" * 100)
    out = doctor(gw)
    failed(out, "buffer")
    assert lines(out, "buffer") == [
        f"FAIL  buffer           cannot read the buffer {gw}/buffer.sqlite: file is not a "
        "database",
        "      fix: restart the gateway: it moves a damaged buffer aside (kept for support) and "
        "starts a new one; unsent readings in it are lost"]


# -- backend ----------------------------------------------------------------------------------
def test_a_v2_gateway_needs_ingest_keys_and_commands_operations_keys(gw, tmp_path):
    from cryptography.hazmat.primitives import serialization

    from cimedge.cloud_sync import backend_keys as bk

    (gw / "backend.json").unlink()  # provisioned with one: take it away
    site = gw / "site.toml"
    text = site.read_text()
    site.write_text(tomledit.set_key(text, "sync", "contract", 2))  # a v2 gateway
    out = doctor(gw)
    failed(out, "backend")
    assert lines(out, "backend")[0] == (
        f"FAIL  backend          no {gw}/backend.json (ingest keys needed): acks cannot be "
        "believed, so the buffer is never emptied")
    site.write_text(text + "\n[commands]\n")
    out = doctor(gw)
    failed(out, "backend")
    assert lines(out, "backend") == [
        f"FAIL  backend          no {gw}/backend.json: every command is refused",
        f"      fix: get backend.json from operations, then: cimedge backend install "
        f"backend.json --state-dir {gw}"]
    key = bk.write_private_key(tmp_path / "op.key")
    bk.write(gw / "backend.json", bk.BackendKeys((
        bk.entry_for(key, "operations", not_after=time.time() + 10 * 86400),)))
    out = doctor(gw)
    assert out.returncode == 0, out.stdout
    end = bk.rfc3339(bk.load(gw / "backend.json").keys[0].not_after or 0)
    assert lines(out, "backend")[:2] == [
        f"WARN  backend          every operations key ends by {end}",
        "      fix: get a backend.json with the next key from operations"]
    # the old setting: still trusted, so no failure without backend.json, but a warning
    (gw / "backend.json").unlink()
    (gw / "backend.pub").write_text("not a key")
    site.write_text(site.read_text() + 'backend_key_file = "backend.pub"\n')
    out = doctor(gw)
    failed(out, "backend")
    assert lines(out, "backend")[0] == (f"FAIL  backend          {gw}/backend.pub: not a PEM "
                                        "public key nor base64 of 32 raw bytes")
    (gw / "backend.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    out = doctor(gw)
    assert out.returncode == 0, out.stdout
    assert lines(out, "backend")[:2] == [
        "WARN  backend          [commands] backend_key_file is deprecated (still trusted)",
        f"      fix: run: cimedge backend add {gw}/backend.pub --role operations --backend "
        f"{gw}/backend.json, then remove the setting"]
