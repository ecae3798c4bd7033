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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports when it is imported (not under
    TYPE_CHECKING, not inside a function)."""
    found = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                break
            names: list[str] = []
            if isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                names = [inner.module] + [f"{inner.module}.{a.name}" for a in inner.names]
            found.update(name for name in names if name in modules)
    return found


def test_no_import_cycles() -> None:
    paths = [*(ROOT / "device").rglob("*.py"), *(ROOT / "rig").rglob("*.py")]
    modules = {_module_name(path) for path in paths}
    graph = {_module_name(path): _runtime_imports(path, modules) for path in paths}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in trail:
                cycles.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            elif imported not in done:
                visit(imported, [*trail, imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []
