"""What an installed box gets: the product package alone, with no test rig in it, and
every package it imports declared, at releases that work on the box's hardware."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
#: Only the checkout has these: the rig, and the test extras it needs.
NOT_ON_A_BOX = {"rig", "trustme", "pytest", "hypothesis"}


def _imported_modules(path: Path) -> set[str]:
    """Every absolute import of `path` at any depth, dotted with what it takes from its
    module (`from google import genai`: google.genai, a package of its own)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _imported_roots(path: Path) -> set[str]:
    return {module.split(".")[0] for module in _imported_modules(path)}


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


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution_of_module() -> dict[str, str]:
    """The installed distribution (canonical name) that ships each package or top-level
    module, by its dotted name: `google.auth` is google-auth's, `google.genai` the SDK's."""
    owners = {}
    for dist in metadata.distributions():
        for file in dist.files or ():
            if file.name == "__init__.py":
                owners[".".join(file.parts[:-1])] = _canonical(dist.metadata["Name"])
            elif file.suffix == ".py" and len(file.parts) == 1:
                owners[file.stem] = _canonical(dist.metadata["Name"])
    return owners


def _owner(module: str, owners: dict[str, str]) -> str:
    """The distribution of `module`: the one shipping its longest package; one not installed
    here (the Pi's picamera2) goes by its top-level name."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        if ".".join(parts[:depth]) in owners:
            return owners[".".join(parts[:depth])]
    return _canonical(parts[0])


def _pinned_by(declared: set[str]) -> set[str]:
    """What the declared packages pin to one version of their own (pydantic: pydantic-core):
    their release decides it, a bound of ours could only disagree."""
    pinned = set()
    for name in declared:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in map(Requirement, requires):
            if not spec.marker and any(s.operator == "==" for s in spec.specifier):
                pinned.add(_canonical(spec.name))
    return pinned


def test_every_package_the_product_imports_is_declared() -> None:
    """A package the daemon imports that only arrives with another (websockets, with the
    SDK) gets whatever version that one accepts. The SDK takes websockets 13: with 13 and
    14 `live-appliance run` and `doctor` stopped at their imports, with 15 every connect
    that failed was "ModuleNotFoundError: No module named 'websockets.proxy'" (16's).
    Each is declared, with the bounds of what the product uses of it; the Pi's extras
    (picamera2, lgpio, spidev) are not installed here and go by their own names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["pi"]]
    declared = {_canonical(Requirement(spec).name) for spec in specs}
    owners = _distribution_of_module()
    undeclared = {}
    for path in (ROOT / "device").rglob("*.py"):
        for module in _imported_modules(path):
            if module.split(".")[0] in {*sys.stdlib_module_names, "device"}:
                continue
            owner = _owner(module, owners)
            if owner not in declared | _pinned_by(declared):
                undeclared[owner] = str(path.relative_to(ROOT))
    assert undeclared == {}


#: lgpio, as far as opening and closing a chip goes: the chips opened, in order.
FAKE_LGPIO = '''
opened = []


def gpiochip_open(chip):
    opened.append(chip)
    return 1


def gpiochip_close(handle):
    pass


def __getattr__(name):  # the constants gpiozero reads at import
    return 0
'''
#: The revision code of a Raspberry Pi 5 (8 GB): its processor is type 0x17.
PI_5 = 0xD04170
OPEN_ON_A_PI_5 = f"""
import lgpio
from gpiozero.pins.lgpio import LGPIOFactory

LGPIOFactory._get_revision = lambda self: {PI_5:#x}
LGPIOFactory().close()
print(lgpio.opened)
"""


@pytest.mark.skipif(os.path.exists("/dev/gpiochip4"), reason="this kernel has a gpiochip4")
def test_a_pi_5_opens_its_header_on_the_chip_its_kernel_names(tmp_path: Path) -> None:
    """Raspberry Pi's kernel names a Pi 5's header gpiochip0 since 6.6.45 (August 2024), and
    has no gpiochip4 any more. gpiozero 2.0 and 2.0.1, which pyproject accepted, open
    chip 4 on any Pi 5: "can not open gpiochip", and the button and LEDs had no pin
    driver; 2.0.1.post1 and post2 look for gpiochip4 without importing os (NameError)."""
    (tmp_path / "lgpio.py").write_text(FAKE_LGPIO)
    result = subprocess.run(
        [sys.executable, "-c", OPEN_ON_A_PI_5], env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.split() == ["[0]"]
