"""Scenario 1: provisioning a fresh gateway, then checking the installation."""

from __future__ import annotations

import json
import stat

import pytest

from hil_tests.gateway import Gateway, cimedge


@pytest.mark.rig_needs("ca")
def test_provision_a_fresh_gateway_and_doctor_passes(provisioned: Gateway) -> None:
    """`cimedge provision` from the site template, then `cimedge doctor` passes every check."""
    out = provisioned.provisioning
    assert out is not None and out.returncode == 0, out and out.stderr
    state = provisioned.state
    assert out.stdout.startswith(f"provisioned {provisioned.dev} ")
    for secret in ("device.key", "tls.key"):
        assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600
    assert json.loads((state / "enrollment.json").read_text())["device_id"] == provisioned.dev

    doctor = cimedge("doctor", "--state-dir", state, "--json", "--timeout", "1")
    report = json.loads(doctor.stdout)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert doctor.returncode == 0 and not failed, json.dumps(failed, indent=1)
    passed = {c["check"] for c in report["checks"] if c["status"] == "pass"}
    spec = provisioned.rig.spec
    assert {f"device {d}" for d in [*spec.meters, *spec.nodes]} <= passed
    assert {"config", "key", "tls", "broker", "clock", "disk", "buffer"} <= passed
    for bus in spec.buses:
        assert f"serial {provisioned.rig.bus_path(bus)}" in passed
