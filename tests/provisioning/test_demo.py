"""`cimedge demo` as a user runs it: it stops cleanly after --duration and data flows end to end."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cimedge.tools.broker import mosquitto_binary

ROOT = Path(__file__).parents[2]


def demo(state: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cimedge.provisioning.cli", "demo", "--duration", "6",
                           "--speed", "8", "--no-view", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def stored_messages(state: Path) -> int:
    con = sqlite3.connect(f"file:{state / 'receiver.sqlite'}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        con.close()


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_demo_runs_end_to_end_and_stops_cleanly(tmp_path):
    out = demo(tmp_path, {})
    assert out.returncode == 0, out.stderr
    assert "demo stopped." in out.stdout
    assert stored_messages(tmp_path) >= 2
    assert (tmp_path / "enrollment.json").exists() and (tmp_path / "device.key").exists()
    again = demo(tmp_path, {})  # a second start reuses the identity and the seq goes on
    assert again.returncode == 0, again.stderr


@pytest.mark.skipif(importlib.util.find_spec("amqtt") is None, reason="amqtt is not installed")
def test_demo_without_mosquitto_uses_the_in_process_broker(tmp_path):
    out = demo(tmp_path, {"CIMEDGE_MOSQUITTO": ""})
    assert out.returncode == 0, out.stderr
    assert "using the in-process amqtt broker" in out.stdout
    assert stored_messages(tmp_path) >= 2
