"""The install layout: one top-level name, `cimedge`, over the design card's folders."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("cloud_sync", "drivers", "edge", "provisioning", "tools")
BARE = {*FOLDERS, "firmware", "hil_tests"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_sub_package_folder_is_listed_under_cimedge() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"cimedge"} | {
        "cimedge." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts}
    assert listed == found


def test_the_folders_install_under_cimedge_and_nothing_else() -> None:
    dirs = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert dirs == {"cimedge": "cimedge", **{f"cimedge.{f}": f for f in FOLDERS}}


def test_no_module_imports_a_folder_by_its_bare_name() -> None:
    """`import edge` would load a second copy of a module that `cimedge.edge` also loads."""
    offenders = []
    for folder in (*FOLDERS, "cimedge", "tests", "bench", "hil_tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" in path.parts or "__pycache__" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] in BARE - {"hil_tests"}]
    assert offenders == []
