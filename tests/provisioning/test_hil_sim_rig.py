"""CI runs the hardware-in-the-loop scenarios on the simulated rig (hil_tests/, --rig sim)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_hil_suite_on_the_simulated_rig(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "hil_tests", "--rig", "sim", "-q", "-p",
         "no:cacheprovider", "--hil-report", str(tmp_path), "--timeout", "240"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# HIL run on rig `sim` (sim)")
    for scenario in ("test_provision_a_fresh_gateway_and_doctor_passes",
                     "test_every_device_is_polled_and_every_point_arrives",
                     "test_node_off_the_bus_and_back", "test_pump_cycle",
                     "test_uplink_outage_and_backlog_drain", "test_node_firmware_update"):
        assert f"| {scenario} | passed | " in summary, summary
    junit = (tmp_path / "junit.xml").read_text()
    assert 'failures="0"' in junit and 'errors="0"' in junit
