"""Signed updates under real MicroPython: only a newer image signed by the firmware key installs.

The image is staged as ``update.bin`` while the node is off (as ``cimedge node flash --image``
does over USB) and the loader deals with it at the next boot.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from cimedge.tools.sim.node import SimNode, sim_board


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory, fw: Any) -> Any:  # noqa: ANN401
    """A small LMS key (height 5: 32 signatures) for this module's images."""
    return fw.LmsKey.generate(tmp_path_factory.mktemp("key") / "fw.key", height=5, w=4)


def files_at(fw: Any, version: tuple[int, int, int], **replace: bytes) -> dict[str, bytes]:  # noqa: ANN401
    files = fw.app_files()
    text = files["version.py"].decode()
    for name, v in zip(("MAJOR", "MINOR", "PATCH"), version, strict=True):
        text = re.sub(rf"^{name} = const\(\d+\)", f"{name} = const({v})", text, flags=re.M)
    files["version.py"] = text.encode()
    return files | replace


def image(fw: Any, key: Any, version: tuple[int, int, int], **replace: bytes) -> bytes:  # noqa: ANN401
    return fw.build_image(files_at(fw, version, **replace), version, key)


def stage(node: SimNode, data: bytes) -> None:
    node.power_off()
    (node.flash / "update.bin").write_bytes(data)


def text(node: SimNode, name: str) -> str:
    path = node.flash / name
    return path.read_text().strip() if path.exists() else ""


def version(rtu: Any) -> tuple[int, int, int]:  # noqa: ANN401
    major, minor_patch = rtu.read(4, 0, 2)
    return major, minor_patch >> 8, minor_patch & 0xFF


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.fixture
def node(sim: Any, key: Any) -> SimNode:  # noqa: ANN401
    return sim(pub=key.public())


def test_a_signed_newer_image_installs_runs_and_is_confirmed(node: SimNode, rtu, fw, key) -> None:  # noqa: ANN001
    bus = rtu(node)
    assert version(bus) == (1, 0, 0)
    stage(node, image(fw, key, (1, 1, 0)))
    node.power_on()
    assert version(bus) == (1, 1, 0)
    assert text(node, "update.log") == "installed 1.1.0 in slot b"
    assert not (node.flash / "update.bin").exists()
    assert text(node, "slot") == "b a 1"  # on trial, first boot
    wait_for(lambda: text(node, "slot") == "b", timeout=6)  # healthy for confirm_s
    assert text(node, "fwfloor") == "1.1.0"
    node.power_cycle()
    assert version(bus) == (1, 1, 0)


@pytest.mark.parametrize(("make", "why"), [
    (lambda fw, key: fw.build_image(files_at(fw, (1, 1, 0)), (1, 1, 0), None), "unsigned image"),
    (lambda fw, key: _flip(image(fw, key, (1, 1, 0)), "sig"), "bad signature"),
    (lambda fw, key: _flip(image(fw, key, (1, 1, 0)), "manifest"), "bad signature"),
    (lambda fw, key: image(fw, key, (0, 9, 0)), "version 0.9.0 is not newer than 1.0.0"),
    (lambda fw, key: image(fw, key, (1, 0, 0)), "version 1.0.0 is not newer than 1.0.0"),
    (lambda fw, key: _flip(image(fw, key, (1, 1, 0)), "payload"), "app.py does not match its hash"),
    (lambda fw, key: image(fw, key, (1, 1, 0))[:-10], "truncated image"),
    (lambda fw, key: b"MZ\x90\x00" + bytes(100), "not a CIM Edge firmware image"),
])
def test_bad_images_are_refused_and_the_old_firmware_runs(node: SimNode, rtu, fw, key,  # noqa: ANN001
                                                          make, why: str) -> None:
    bus = rtu(node)
    before = snapshot(node.flash / "a")
    stage(node, make(fw, key))
    node.power_on()
    assert text(node, "update.log") == "refused: " + why
    assert version(bus) == (1, 0, 0)
    assert text(node, "slot") == "a"
    assert snapshot(node.flash / "a") == before
    assert not (node.flash / "update.bin").exists()


def test_an_image_signed_by_another_key_is_refused(node: SimNode, rtu, fw, tmp_path) -> None:  # noqa: ANN001
    other = fw.LmsKey.generate(tmp_path / "other.key", height=5, w=4)
    stage(node, image(fw, other, (1, 1, 0)))
    node.power_on()
    assert text(node, "update.log") == "refused: bad signature"
    assert version(rtu(node)) == (1, 0, 0)


def _flip(img: bytes, where: str) -> bytes:
    size = int.from_bytes(img[6:8], "big")
    sig_at = 8 + size + 2
    sig_len = int.from_bytes(img[8 + size:sig_at], "big")
    at = {"manifest": 8 + size // 2, "sig": sig_at + sig_len // 2, "payload": sig_at + sig_len + 5}
    b = bytearray(img)
    b[at[where]] ^= 0x01
    return bytes(b)


def test_no_rollback_below_a_confirmed_version(node: SimNode, rtu, fw, key) -> None:  # noqa: ANN001
    bus = rtu(node)
    stage(node, image(fw, key, (1, 2, 0)))
    node.power_on()
    wait_for(lambda: text(node, "slot") == "b", timeout=6)
    stage(node, image(fw, key, (1, 1, 5)))  # newer than slot a's 1.0.0, older than the floor
    node.power_on()
    assert text(node, "update.log") == "refused: version 1.1.5 is not newer than 1.2.0"
    assert version(bus) == (1, 2, 0)


CUTS = [
    {"path": "b/app.py", "after": 100},
    {"path": "b/version.py", "after": 3},
    {"path": "b/manifest.json.new", "op": "rename"},
    {"path": "slot.new", "op": "rename"},  # the switch itself
]


@pytest.mark.parametrize("cut", CUTS, ids=lambda c: f"{c['path']}:{c.get('op', 'write')}")
def test_power_cut_during_an_update_leaves_the_old_firmware(node: SimNode, rtu, fw, key,  # noqa: ANN001
                                                            cut: dict[str, Any]) -> None:
    bus = rtu(node)
    before = snapshot(node.flash / "a")
    stage(node, image(fw, key, (1, 1, 0)))
    node.power_on(cut=cut, reboot=False)
    node.wait_off()
    assert text(node, "slot") == "a"
    assert snapshot(node.flash / "a") == before
    assert (node.flash / "update.bin").exists()  # staged still: the next boot tries again
    (node.flash / "update.bin").unlink()
    node.power_on()
    assert version(bus) == (1, 0, 0)


def test_an_update_cut_short_is_finished_at_the_next_boot(node: SimNode, rtu, fw, key) -> None:  # noqa: ANN001
    stage(node, image(fw, key, (1, 1, 0)))
    node.power_on(cut={"path": "b/regs.py", "after": 500}, reboot=True)
    node.wait_boot(3)  # first boot, the cut; the power comes back
    node.wait_ready()
    assert version(rtu(node)) == (1, 1, 0)
    assert text(node, "update.log") == "installed 1.1.0 in slot b"


def test_a_new_image_that_fails_to_load_is_reverted(node: SimNode, rtu, fw, key) -> None:  # noqa: ANN001
    stage(node, image(fw, key, (1, 1, 0), **{"app.py": b"import no_such_module\n"}))
    node.power_on()
    assert version(rtu(node)) == (1, 0, 0)
    assert text(node, "slot") == "a"
    assert text(node, "update.log") == "reverted to slot a: slot b failed to load"
    assert node.boots == ["power", "power", "soft"]


def test_a_new_image_that_never_gets_healthy_is_reverted(sim, rtu, fw, key) -> None:  # noqa: ANN001
    node = sim(pub=key.public(), board=sim_board(2, wdt_ms=800, confirm_s=30))
    app = fw.app_files()["app.py"].replace(b"wdt.feed()", b"pass")
    assert app != fw.app_files()["app.py"]
    stage(node, image(fw, key, (1, 1, 0), **{"app.py": app}))
    node.power_on()  # 1.1.0 serves, but never feeds its watchdog
    node.wait_boot(5, timeout=20)  # trial boots 1-3 end in watchdog resets; the 4th reverts
    node.wait_ready()
    assert node.boots[2:5] == ["wdt", "wdt", "wdt"]
    assert version(rtu(node)) == (1, 0, 0)
    assert text(node, "update.log") == "reverted to slot a: slot b was not confirmed in 3 boots"
