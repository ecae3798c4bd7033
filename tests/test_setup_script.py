"""`scripts/setup` on a newcomer's machine: what it asks apt for, and when it stops first.

The script runs from a copy in a scratch checkout (its path has a space, as a home
folder's may), with stand-ins for the commands that ask about or change the system:
`dpkg-query` answers from a set of installed packages, `apt-get` and `sudo` record their
calls (`sudo` drops the environment, as Debian's does), and the Python it would make a
venv with refuses, so nothing reaches the real system or the network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from rig import demo

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup"
#: The packages setup wants, as its APT_PACKAGES lists them.
_LISTED = re.search(r"APT_PACKAGES=\((.*?)\n\)", SETUP.read_text(), re.S)
assert _LISTED is not None
WANTED = set(re.sub(r"#.*", "", _LISTED[1]).split())


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def run_setup(
    tmp_path: Path, installed: set[str], *, uid: int = 0, sudo: bool = True, arch: str = "amd64"
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the copied setup on a system of `arch`; its result and the calls of apt-get and
    sudo, in order."""
    checkout = tmp_path / "a checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, checkout / "scripts" / "setup")
    shutil.copytree(ROOT / "scripts" / "lib", checkout / "scripts" / "lib")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("bash", "dirname", "grep", "env", "sha256sum", "cut"):
        real = shutil.which(name)
        assert real is not None
        (bin_dir / name).symlink_to(real)
    _tool(
        bin_dir,
        "dpkg-query",
        f'case " {" ".join(sorted(installed))} " in *" ${{@: -1}} "*)'
        ' printf "install ok installed";; *) exit 1;; esac',
    )
    _tool(bin_dir, "id", f'[ "$1" = -u ] && echo {uid}')
    _tool(bin_dir, "dpkg", f'[ "$1" = --print-architecture ] && echo {arch}')
    _tool(bin_dir, "apt-get", f'echo "apt-get $* [DEBIAN_FRONTEND=$DEBIAN_FRONTEND]" >> "{log}"')
    if sudo:
        _tool(bin_dir, "sudo", f'echo "sudo $*" >> "{log}"; exec env -i PATH="$PATH" "$@"')
    _tool(bin_dir, "no-python", "exit 1")
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "setup")],
        env={"PATH": str(bin_dir), "PYTHON": str(bin_dir / "no-python")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_on_a_pipewire_desktop_it_stops_before_apt_and_says_why(tmp_path: Path) -> None:
    """apt installs pulseaudio only by removing pipewire-alsa/pipewire-audio (and a GNOME
    desktop's gnome-core with them): the newcomer's sound would be gone, silently."""
    desktop = (WANTED - {"pulseaudio"}) | {"pipewire-alsa", "pipewire-audio", "pipewire-pulse"}
    result, calls = run_setup(tmp_path, desktop)
    assert result.returncode == 1
    assert calls == [], "apt was asked to change a PipeWire desktop"
    assert "PipeWire" in result.stderr and "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr


def test_apt_never_removes_a_package_and_runs_noninteractive_through_sudo(
    tmp_path: Path,
) -> None:
    result, calls = run_setup(tmp_path, WANTED - {"sox"}, uid=1000)
    installs = [call for call in calls if call.startswith("apt-get install")]
    assert len(installs) == 1, calls
    assert "--no-remove" in installs[0].split()
    assert installs[0].endswith("sox [DEBIAN_FRONTEND=noninteractive]")
    assert result.returncode == 1  # then the stand-in Python refuses
    assert "Python 3.11 or newer is needed" in result.stderr


def test_without_sudo_it_says_what_to_install_as_root(tmp_path: Path) -> None:
    result, calls = run_setup(tmp_path, WANTED - {"sox", "espeak-ng"}, uid=1000, sudo=False)
    assert result.returncode == 1
    assert calls == []
    assert "espeak-ng sox" in result.stderr and "as root" in result.stderr
    assert "command not found" not in result.stderr


@pytest.mark.parametrize("arch", ["armhf", "i386"])
def test_a_32_bit_system_is_told_before_anything_is_installed(tmp_path: Path, arch: str) -> None:
    """32-bit Raspberry Pi OS (on a Pi 4's 64-bit kernel pip takes it for aarch64): the
    wheels are 64-bit, and pip would build them from source for an hour, then fail."""
    result, calls = run_setup(tmp_path, WANTED - {"sox"}, uid=1000, arch=arch)
    assert result.returncode == 1 and calls == []
    assert f"this system is {arch} (32-bit)" in result.stderr


def test_with_every_package_there_apt_is_not_run(tmp_path: Path) -> None:
    """A second run only checks: nothing asked of apt, nor of sudo."""
    result, calls = run_setup(tmp_path, WANTED, uid=1000, sudo=False)
    assert calls == []
    assert "setup: installing Debian packages" not in result.stdout


def test_without_pulseaudio_the_demo_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m rig.demo` on a machine setup has not prepared (or one where it stopped
    on PipeWire): one line, no traceback, no sound server's directory left behind."""
    tools = tmp_path / "bin"
    tools.mkdir()
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    (tools / "espeak-ng").symlink_to(espeak)
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert demo.main(["--out", str(tmp_path / "out"), "--question", "Hi"]) == 1
    assert "demo: failed: pulseaudio is missing; run scripts/setup" in capsys.readouterr().err
    assert not list(tmp_path.glob("appliance-*"))


README = ROOT / "README.md"


def run_scripts_test(tmp_path: Path, pytest_status: int) -> subprocess.CompletedProcess[str]:
    """A copy of scripts/test in a scratch checkout whose setup, ruff and mypy pass and
    whose pytest ends with `pytest_status`: nothing of the real suite runs."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "test", checkout / "scripts" / "test")
    shutil.copytree(ROOT / "scripts" / "lib", checkout / "scripts" / "lib")
    bin_dir = checkout / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    stand_ins = {
        checkout / "scripts" / "setup": "exit 0",
        bin_dir / "ruff": "exit 0",
        bin_dir / "mypy": "exit 0",
        bin_dir / "python": f"exit {pytest_status}",
    }
    for path, body in stand_ins.items():
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return subprocess.run(["bash", str(checkout / "scripts" / "test")], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip


@pytest.mark.parametrize(("pytest_status", "failed"), [(0, False), (1, True), (5, True)])
def test_scripts_test_fails_when_pytest_collected_no_tests(
    tmp_path: Path, pytest_status: int, failed: bool
) -> None:
    result = run_scripts_test(tmp_path, pytest_status)
    assert (result.returncode != 0) is failed, (pytest_status, result.returncode, result.stderr)


def test_ci_runs_the_readmes_test_command() -> None:
    (command,) = re.findall(r"^(scripts/test)\s+# the whole test suite", README.read_text(), re.M)
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci, "CI does not run the README's test command"


