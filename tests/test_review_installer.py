"""The installer and uninstaller as an owner meets them: what a dry run's status says, what
a step that fails says, what the steps name, and whose files they replace."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from system_view import SystemView
from test_install_script import (
    FRESH,
    INSTALL,
    INSTALLED,
    ROOT,
    UNINSTALL,
    StandIns,
    in_apt,
    installed,
    steps,
    succeeding_systemctl,
)

#: Each test runs the installer, as tests/test_install_script.py does.
pytestmark = pytest.mark.rig

PI_PACKAGES = ("python3-picamera2", "python3-lgpio")
AGAIN = "fix that and run this script again"


def test_a_dry_run_that_says_a_real_run_would_stop_does_not_exit_0(tmp_path: Path) -> None:
    """On a system whose apt lacks a Pi package the dry run says "a real run would stop
    here", goes on to show the rest, and exited 0: `install-pi.sh --dry-run && sudo
    install-pi.sh` went on to the real run, which stopped there."""
    if all(installed(p) or in_apt(p) for p in PI_PACKAGES):
        pytest.skip("apt here has the Pi packages")
    view, stand_ins = SystemView(tmp_path / "view"), StandIns(tmp_path)
    view.setup(FRESH)
    before = view.snapshot()
    result = view.run(["bash", str(INSTALL), "--dry-run"], env=stand_ins.env())
    assert "a real run would stop here" in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    assert "a real run would stop" in result.stderr, result.stderr
    assert stand_ins.calls() == [] and view.snapshot() == before
