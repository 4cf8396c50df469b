"""The gateway's node-exporter textfile: valid exposition text (read back by prometheus_client's
parser), written by rename, and a full or read-only disk never raises."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cimedge.edge.promfile import Textfile, render

STATUS = {
    "device_id": "ps-0042", "pid": 1, "updated": 1_750_000_100.5, "started": 1_750_000_000.0,
    "sqlite_version": "3.40.1", "connected": True, "broker": "mqtt://broker.invalid",
    "buffer": {"readings": 1200, "events": 2, "batches_unacked": 3, "oldest_ts": 1_750_000_050.25,
               "next_seq": 81, "used_bytes": 65536, "quota_bytes": 1 << 30, "evicted": 7,
               "live_lane": False, "error": "", "moved_aside": None, "uncommitted_readings": 0},
    "clock": {"steps": 1, "invalid": False},
    "sync": {"sent": 80, "resent": 2, "acked": 77, "nacked": 1, "bad_acks": 0, "live": 5,
             "inflight": 3, "last_nack": "bad_field", "last_ack": 1_750_000_099.0},
    "alarms": [{"point": "level", "rule": "high"}],
    "devices": {"pump1": {"state": "ok", "reason": "", "timeouts": 4, "last_success": 1_750_000_100.0},
                'we"ird\\': {"state": "offline", "reason": "timeout", "timeouts": 9,
                             "last_success": None}},
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_textfile_parses_with_the_figures_of_status() -> None:
    text = render(STATUS)
    got = _samples(text)
    assert got[("cimedge_gateway_buffer_readings", ())] == 1200
    assert got[("cimedge_gateway_buffer_oldest_timestamp_seconds", ())] == 1_750_000_050.25
    assert got[("cimedge_gateway_evicted_readings_total", ())] == 7
    assert got[("cimedge_gateway_uplink_total", (("counter", "acked"),))] == 77
    assert got[("cimedge_gateway_inflight_batches", ())] == 3
    assert got[("cimedge_gateway_connected", ())] == 1
    assert got[("cimedge_gateway_alarms_active", ())] == 1
    assert got[("cimedge_gateway_device_up", (("device", "pump1"),))] == 1
    assert got[("cimedge_gateway_device_up", (("device", 'we"ird\\'),))] == 0
    assert got[("cimedge_gateway_device_timeouts_total", (("device", 'we"ird\\'),))] == 9
    assert ("cimedge_gateway_device_last_success_timestamp_seconds",
            (("device", 'we"ird\\'),)) not in got  # never answered: no sample, not 0
    assert got[("cimedge_gateway_info", (("device_id", "ps-0042"),
                                         ("sqlite_version", "3.40.1")))] == 1
    assert "# TYPE cimedge_gateway_uplink_total counter" in text
    stopped = render({**STATUS, "buffer": None, "sync": None, "devices": {}, "connected": False})
    assert _samples(stopped)[("cimedge_gateway_connected", ())] == 0


def test_written_by_rename_and_only_every_interval(tmp_path: Path) -> None:
    tf = Textfile(tmp_path, every_s=10)
    assert tf.write(STATUS, now=100.0)
    assert tf.path == tmp_path / "metrics" / "cimedge.prom"
    assert tf.path.read_text() == render(STATUS)
    assert oct(tf.dir.stat().st_mode & 0o777) == "0o755"
    assert not tf.write({**STATUS, "connected": False}, now=105.0)  # not due yet
    assert _samples(tf.path.read_text())[("cimedge_gateway_connected", ())] == 1
    assert tf.write({**STATUS, "connected": False}, now=110.0)
    assert _samples(tf.path.read_text())[("cimedge_gateway_connected", ())] == 0
    assert sorted(p.name for p in tf.dir.iterdir()) == ["cimedge.prom"]


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                                reason="mounting a small tmpfs needs root")


@needs_root
def test_full_then_read_only_disk_never_raises(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", f"cim-{uuid.uuid4().hex[:6]}",
                    str(mnt)], check=True)
    try:
        tf = Textfile(mnt, every_s=0)
        assert tf.write(STATUS, now=1.0)
        good = tf.path.read_text()
        with open(mnt / "fill", "wb", buffering=0) as f:  # the disk fills up
            with pytest.raises(OSError, match="No space left"):  # noqa: PT012
                while True:
                    f.write(b"\0" * 4096)
        for now in (2.0, 3.0):
            assert not tf.write({**STATUS, "connected": False}, now=now)
        assert tf.failures == 2 and "No space left on device" in tf.last_error
        assert tf.path.read_text() == good  # the last good figures stay whole
        assert not (tf.dir / ".cimedge.prom.tmp").exists()
        assert caplog.text.count("cannot write the metrics textfile") == 1  # logged once
        (mnt / "fill").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        assert not tf.write(STATUS, now=4.0)
        assert "Read-only file system" in tf.last_error
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        assert tf.write({**STATUS, "connected": False}, now=5.0)
        assert tf.last_error == ""
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
