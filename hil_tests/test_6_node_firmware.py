"""Scenario 6: a signed firmware update of a sensor node, applied at its next boot."""

from __future__ import annotations

import re
import time

import pytest

from hil_tests.gateway import Gateway, until
from hil_tests.test_2_polling import latest
from cimedge.tools.sim.node import fwimage


def image_at(version: tuple[int, int, int], key: object) -> bytes:
    """The application in firmware/app, as version ``version``, signed with ``key``."""
    fw = fwimage()
    files = fw.app_files()
    text = files["version.py"].decode()
    for name, v in zip(("MAJOR", "MINOR", "PATCH"), version, strict=True):
        text = re.sub(rf"^{name} = const\(\d+\)", f"{name} = const({v})", text, flags=re.M)
    files["version.py"] = text.encode()
    return fw.build_image(files, version, key)


@pytest.mark.rig_needs("firmware")
def test_node_firmware_update(gateway: Gateway) -> None:
    """A signed newer image is staged, the node boots into it, the gateway reads its version."""
    rig = gateway.rig
    node = next(iter(rig.spec.nodes))
    t0 = time.time()

    def version() -> tuple[dict[str, str], dict[str, str]] | None:
        # Both registers' newest readings, and only good ones: under load a poll can time
        # out, and its comm reading carries no value.
        rows = latest(gateway, t0 - 30)
        pair = rows.get(f"{node}.fw_major", {}), rows.get(f"{node}.fw_minor_patch", {})
        return pair if all(r.get("quality") == "good" for r in pair) else None
    major_row, now = until(version, 20, f"{node}'s firmware version (both registers good)")
    major = int(float(major_row["value"]))
    minor = int(float(now["value"])) >> 8
    new = (major, minor + 1, 0)
    image = image_at(new, rig.firmware_key())
    rig.power(node, False)
    try:
        rig.stage_firmware(node, image)
    finally:
        rig.power(node, True)
    after = time.time()
    want = float(new[1] << 8 | new[2])

    def updated() -> bool:
        row = latest(gateway, after).get(f"{node}.fw_minor_patch", {})
        return row.get("quality") == "good" and float(row["value"]) == want
    until(updated, 40, f"{node} to report firmware {'.'.join(map(str, new))}")
    # health reaches status.json once a second: wait for it rather than race it
    until(lambda: gateway.devices()[node] == "ok", 10, f"{node} to be healthy again")
