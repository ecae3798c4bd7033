"""`scripts/X --help` on a newcomer's machine: the help at once, nothing set up.

Each script runs from a copy of scripts/ in a scratch checkout (its path has a space),
with stand-ins that record their calls for every command that would set something up or
take long: apt and dpkg, sudo, the system's Python, and .venv's python, ruff, mypy and uv.
Asking for help may call a tool for its own help (`... --help`), and nothing else.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["demo", "bench", "soak", "test", "lock", "test-bookworm-lock", "setup", "hil",
           "install-pi.sh", "uninstall-pi.sh"]  # fmt: skip
STAND_INS = ["dpkg", "dpkg-query", "apt-get", "sudo", "systemctl", "python3", "pip"]
VENV_TOOLS = ["python", "ruff", "mypy", "uv"]


def _stand_in(path: Path, log: Path) -> None:
    path.write_text(f'#!/bin/bash\necho "{path.name} $*" >> "{log}"\necho "usage: {path.name}"\n')
    path.chmod(0o755)


def run_with_help(
    tmp_path: Path,
    script: str,
    *args: str,
    venv: bool = True,
    from_scripts: bool = False,
    prepare: Callable[[Path], None] = lambda checkout: None,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the copied `scripts/<script> *args` (`from_scripts`: as `./<script>` from inside
    scripts/; `prepare` may change the checkout first); its result and the calls it made."""
    checkout = tmp_path / "a checkout"
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in STAND_INS:
        _stand_in(bin_dir / name, log)
    if venv:
        (checkout / ".venv" / "bin").mkdir(parents=True)
        for name in VENV_TOOLS:
            _stand_in(checkout / ".venv" / "bin" / name, log)
    prepare(checkout)
    where, path = (checkout / "scripts", script) if from_scripts else (
        tmp_path, str(checkout / "scripts" / script))  # fmt: skip
    result = subprocess.run(
        ["bash", path, *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(bin_dir / "python3")},
        cwd=where,
        capture_output=True,
        text=True,
        timeout=30,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_printed_at_once_and_sets_nothing_up(
    tmp_path: Path, script: str, flag: str
) -> None:
    """`scripts/demo --help` ran scripts/setup first (apt, a venv, pip: minutes on a new
    machine, sudo's password) and only then the demo's help; `scripts/test --help` ran
    setup, ruff and mypy before pytest's; `scripts/setup --help` set the machine up."""
    result, calls = run_with_help(tmp_path, script, flag)
    assert result.returncode == 0, result.stderr
    first_line = (ROOT / "scripts" / script).read_text().splitlines()[1].removeprefix("# ")
    assert "usage" in result.stdout.lower() or first_line in result.stdout, result.stdout
    assert all(call.endswith(" --help") or call.endswith(" -h") for call in calls), calls


@pytest.mark.parametrize("script", ["demo", "bench", "soak"])
def test_help_before_setup_made_the_venv_still_says_how_to_call_it(
    tmp_path: Path, script: str
) -> None:
    result, calls = run_with_help(tmp_path, script, "--help", venv=False)
    assert result.returncode == 0, result.stderr
    assert f"scripts/{script}" in result.stdout and calls == []


def test_help_asked_from_inside_scripts_is_the_scripts_header(tmp_path: Path) -> None:
    """`cd scripts && ./demo --help`: the help is the demo's header, as from the checkout."""
    result, calls = run_with_help(tmp_path, "demo", "--help", from_scripts=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Show the appliance working on this machine"), result.stdout
    assert calls == ["python -m rig.demo --help"], calls


def test_help_is_the_header_alone_and_the_modules_options(tmp_path: Path) -> None:
    """The header ends at its first line that is no comment: the script's own comments
    further down are no help; and the module's fuller help follows it."""
    result, calls = run_with_help(tmp_path, "demo", "--help")
    assert result.returncode == 0, result.stderr
    assert "Run where it was typed" not in result.stdout, result.stdout
    assert result.stdout.rstrip().endswith("usage: python"), result.stdout  # the stand-in's
    assert calls == ["python -m rig.demo --help"], calls


def test_help_after_a_double_dash_is_the_tools_not_the_scripts(tmp_path: Path) -> None:
    """`scripts/lock --upgrade-package x -- --help`: what follows `--` goes to the tool
    (uv pip compile here), the script's help is not printed instead."""

    def uv_that_says_its_version(checkout: Path) -> None:
        log = tmp_path / "calls.log"
        uv = checkout / ".venv" / "bin" / "uv"
        uv.write_text(f'#!/bin/bash\necho "uv $*" >> "{log}"\necho "uv 0.13.9"\n')

    result, calls = run_with_help(
        tmp_path, "lock", "--", "--help", prepare=uv_that_says_its_version
    )
    assert result.returncode == 0, result.stderr
    assert "Make the Pi installer's lock files" not in result.stdout, result.stdout
    assert any(call.startswith("uv pip compile") and call.endswith("-- --help") for call in calls)
