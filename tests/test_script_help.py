"""`scripts/X --help` on a newcomer's machine: the help at once, nothing set up.

Each script runs from a copy of scripts/ in a scratch checkout (its path has a space),
with stand-ins that record their calls for every command that would set something up or
take long: apt and dpkg, sudo, the system's Python, and .venv's python, ruff, mypy and uv.
Asking for help may call a tool for its own help (`... --help`), and nothing else.
"""

from __future__ import annotations

import shutil
import subprocess
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
    tmp_path: Path, script: str, *args: str, venv: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the copied `scripts/<script> *args`; its result and the calls it made."""
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
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / script), *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(bin_dir / "python3")},
        cwd=tmp_path,
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
