"""The CLI as a user runs it: exit codes and the exact first lines, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def cimedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cimedge.provisioning.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_keygen_writes_a_private_key_and_an_enrollment_record(tmp_path):
    out = cimedge("keygen", "--state-dir", str(tmp_path), "--device-id", "ps-0042")
    assert out.returncode == 0, out.stderr
    key = tmp_path / "device.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    record = json.loads((tmp_path / "enrollment.json").read_text())
    assert set(record) == {"v", "device_id", "site_type", "kid", "public_key", "created"}
    assert (record["v"], record["device_id"], record["site_type"]) == (1, "ps-0042", "pump_station")
    assert len(bytes.fromhex(record["kid"])) == 8
    assert out.stdout.startswith(f"key {key} (kid {record['kid']})")


def test_keygen_never_overwrites_without_force(tmp_path):
    assert cimedge("keygen", "--state-dir", str(tmp_path), "--device-id", "ps-0042").returncode == 0
    before = (tmp_path / "device.key").read_bytes()
    out = cimedge("keygen", "--state-dir", str(tmp_path), "--device-id", "ps-0042")
    assert out.returncode == 1
    assert out.stderr == f"cimedge: {tmp_path / 'device.key'} already holds a key; " \
                         "pass --force to replace it\n"
    assert (tmp_path / "device.key").read_bytes() == before
    assert cimedge("keygen", "--state-dir", str(tmp_path), "--device-id", "ps-0042",
                   "--force").returncode == 0
    assert (tmp_path / "device.key").read_bytes() != before


def test_keygen_refuses_a_bad_device_id(tmp_path):
    out = cimedge("keygen", "--state-dir", str(tmp_path), "--device-id", "PS 42")
    assert out.returncode == 1
    assert out.stderr.startswith("cimedge: device id 'PS 42' ")
    assert not (tmp_path / "device.key").exists()


def test_run_refuses_a_key_others_can_read(tmp_path):
    from cimedge.provisioning.demo import site_toml
    assert cimedge("keygen", "--state-dir", str(tmp_path), "--device-id", "ps-demo-01").returncode == 0
    (tmp_path / "device.key").chmod(0o644)
    (tmp_path / "site.toml").write_text(site_toml("mqtt://127.0.0.1:1", 5020))
    out = cimedge("run", "--config", str(tmp_path / "site.toml"))
    assert out.returncode == 1
    assert out.stderr == f"cimedge: {tmp_path / 'device.key'} is readable by others (mode 644); " \
                         f"run: chmod 600 {tmp_path / 'device.key'}\n"


def test_status_of_an_empty_dir_and_a_missing_one(tmp_path):
    out = cimedge("status", "--state-dir", str(tmp_path), "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["running"] is False
    out = cimedge("status", "--state-dir", str(tmp_path / "nope"))
    assert (out.returncode, out.stderr) == (1, f"cimedge: {tmp_path / 'nope'} is not a directory\n")


@pytest.mark.parametrize("command", [["demo"], ["run"], ["keygen"], ["status"],
                                     ["receiver", "run"], ["registry", "add"]])
def test_every_command_has_help_with_an_example(command):
    out = cimedge(*command, "--help")
    assert out.returncode == 0
    assert "example: cimedge " + " ".join(command) in out.stdout


def test_status_while_the_buffer_file_is_being_created(tmp_path):
    """The daemon creates the file a moment before its tables: status must not fail then."""
    import sqlite3
    sqlite3.connect(tmp_path / "buffer.sqlite").close()  # a file with no tables yet
    out = cimedge("status", "--state-dir", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["buffer"]["readings"] == 0
