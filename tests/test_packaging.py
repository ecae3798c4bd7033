"""What an installed box gets: the product package alone, with no test rig in it."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Only the checkout has these: the rig, and the test extras it needs.
NOT_ON_A_BOX = {"rig", "trustme", "pytest", "hypothesis"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_product_never_imports_the_rig_or_test_tools() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & NOT_ON_A_BOX)
        for path in (ROOT / "device").rglob("*.py")
        if _imported_roots(path) & NOT_ON_A_BOX
    }
    assert offenders == {}


def test_only_the_product_package_is_installed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["device*"]
    assert (ROOT / "rig" / "__init__.py").is_file()
